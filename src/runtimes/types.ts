// The sandbox runtime interface. Every backend (runtimes/bwrap/, later docker/, microvm/, kubernetes/) implements
// it; nothing outside runtimes/ asks which backend it has. A runtime turns a SandboxSpec into a running sandbox
// whose sandboxd is reachable through a SandboxdClient.
import type { SandboxdClient } from './sandboxd-client.ts';

export interface SandboxSpec {
  /** Job the sandbox belongs to; also its label, so orphans can be found and reaped. */
  jobId: string;
  /** Host directory mounted read-write at /workspace. */
  workspaceDir: string;
  /** Host directory for this sandbox's logs (sandbox.log is written here). */
  logDir: string;
}

export interface SandboxInfo {
  id: string;
  jobId: string;
  runtime: string;
}

export interface Sandbox extends SandboxInfo {
  /** What isolation the sandbox actually has, in words (reported in the job's status). */
  isolation: string;
  client: SandboxdClient;
  /** Resolves when the sandbox has stopped, for whatever reason. */
  exited: Promise<{ code: number | null; signal: string | null }>;
  /** Stops every process of the sandbox and releases what it holds. Idempotent. */
  destroy(): Promise<void>;
}

export interface RuntimeProbe {
  available: boolean;
  /** Why it is not available and what would fix it; or the version and details when it is. */
  detail: string;
}

export interface SandboxRuntime {
  readonly name: string;
  probe(): Promise<RuntimeProbe>;
  create(spec: SandboxSpec, signal?: AbortSignal): Promise<Sandbox>;
}
