// The sandbox runtime interface. Every backend (runtimes/bwrap/, later docker/, microvm/, kubernetes/) implements
// it; nothing outside runtimes/ asks which backend it has. A runtime turns a SandboxSpec into a running sandbox
// whose sandboxd is reachable through a SandboxdClient.
import type { NetworkPolicy } from './network/sandbox-egress.ts';
import type { SandboxLogLimit } from './sandbox-log.ts';
import type { SandboxdClient } from './sandboxd-client.ts';

export interface SandboxSpec {
  /** Job the sandbox belongs to; also its label, so orphans can be found and reaped. */
  jobId: string;
  /** Host directory mounted read-write at /workspace. */
  workspaceDir: string;
  /** Host directory for this sandbox's logs (sandbox.log is written here). */
  logDir: string;
  /** The cap on sandbox.log (runtimes/sandbox-log.ts); default 64 MB. */
  log?: SandboxLogLimit | undefined;
  /**
   * Resource limits. The runtime enforces cpus, memory and pids, and sizes the sandbox's /tmp to diskMb; the
   * workspace's disk limit is the caller's (jobs/workspace-disk.ts mounts it before create). Undefined only when the
   * operator turned limits off (WORKCELL_UNSAFE_NO_LIMITS) and the host cannot enforce them.
   */
  limits?: SandboxLimits | undefined;
  /**
   * Egress. Absent or an empty allow-list: no network at all. Otherwise the sandbox reaches only the listed
   * destinations, through an egress proxy the runtime runs on the host for this sandbox (runtimes/network/).
   */
  network?: NetworkPolicy | undefined;
}

export interface SandboxLimits {
  cpus: number;
  memoryMb: number;
  pids: number;
  diskMb: number;
}

/** Cumulative counts of what the sandbox ran into, read on the host (the sandbox cannot forge them). */
export interface LimitCounters {
  /** Processes killed by the OOM killer at the memory limit. */
  oomKills: number;
  /** fork/clone calls refused at the pids limit. */
  pidsRefused: number;
  /** Processes and threads in the sandbox now. */
  processes?: number | undefined;
  /** Free bytes left to the sandbox in /workspace and /tmp, where known. */
  workspaceFreeBytes?: number | undefined;
  tmpFreeBytes?: number | undefined;
}

export interface SandboxUsage {
  cpuSeconds?: number | undefined;
  peakMemoryBytes?: number | undefined;
}

export interface SandboxInfo {
  id: string;
  jobId: string;
  runtime: string;
}

export interface Sandbox extends SandboxInfo {
  /** What isolation the sandbox actually has, in words (reported in the job's status). */
  isolation: string;
  /** Started ahead of its job in the warm pool (runtimes/pool/), rather than for it. */
  pooled?: boolean;
  client: SandboxdClient;
  /** Resolves when the sandbox has stopped, for whatever reason. */
  exited: Promise<{ code: number | null; signal: string | null }>;
  /** Stops every process of the sandbox and releases what it holds. Idempotent. */
  destroy(): Promise<void>;
  /** The limits in effect (undefined: none could be applied; see SandboxSpec.limits). */
  limits?: SandboxLimits | undefined;
  /** The limit counters now; compare two readings to tell what a tool call ran into. */
  limitCounters?(): Promise<LimitCounters>;
  /** CPU time and peak memory of the sandbox so far (after destroy(): the final figures). */
  usage?(): Promise<SandboxUsage>;
  /**
   * Kills every process the agent's commands started, leaving the sandbox's own machinery (sandboxd) running: how
   * a sandbox stuck at its process limit is given back. Returns how many it killed.
   */
  stopProcesses?(): Promise<number>;
}

/** What a sandbox started ahead of any job is made for: the jobs whose limits are these, with no network. */
export interface SandboxProfile {
  limits: SandboxLimits;
}

/** A sandbox started ahead of any job (runtimes/pool/): nothing of a job is in it until attach. */
export interface WarmSandbox<S extends Sandbox = Sandbox> {
  readonly id: string;
  readonly profile: SandboxProfile;
  /** Resolves when it has stopped, for whatever reason. */
  readonly exited: Promise<unknown>;
  /**
   * Gives it to one job, once: the job's workspace, log and Jupyter prefix. The spec's limits must be the profile's
   * and it may have no network (the pool checks; attach refuses otherwise).
   */
  attach(spec: SandboxSpec): Promise<S>;
  /** Stops one that no job took. Idempotent. */
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
  /** Starts a sandbox ahead of its job, for the warm pool; runtimes that cannot hand one over later lack it. */
  prepare?(profile: SandboxProfile, signal?: AbortSignal): Promise<WarmSandbox>;
  /**
   * Finds what sandboxes of servers that are gone left behind (labelled processes, directories) and removes it,
   * never touching a sandbox that is alive, whichever server runs it. Called at start-up and periodically.
   */
  reapOrphans?(): Promise<{ dirs: string[]; processes: number[] }>;
}
