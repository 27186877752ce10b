// A real sandbox for integration tests (bwrap unless another runtime is given): the real rootfs and sandboxd, on a
// fresh temporary workspace, always destroyed (withSandbox's finally, or useSandbox's afterAll) so no test leaves a sandbox running.
import { readFileSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll } from 'vitest';
import { loadConfig, type Config } from '../../src/config.ts';
import { attachWorkspaceDisk, releaseWorkspaceDisk } from '../../src/jobs/workspace-disk.ts';
import { BwrapRuntime, pidNamespaceMembers, type BwrapSandbox } from '../../src/runtimes/bwrap/bwrap-runtime.ts';
import type { NetworkPolicy } from '../../src/runtimes/network/sandbox-egress.ts';
import type { SandboxLogLimit } from '../../src/runtimes/sandbox-log.ts';
import { sandboxdBundle } from '../../src/runtimes/sandboxd-bundle.ts';
import type { Sandbox, SandboxLimits, SandboxSpec } from '../../src/runtimes/types.ts';
import type { RouteResponse } from '../../src/sandboxd/protocol.ts';

export interface SandboxFixture<S extends Sandbox = BwrapSandbox> {
  sandbox: S;
  /** Host directory mounted at /workspace. */
  workspace: string;
  /** Host directory with sandbox.log. */
  logDir: string;
  /** Runs a command in the sandbox's persistent shell session. */
  sh: (command: string, timeoutMs?: number) => Promise<RouteResponse<'shellExec'>>;
  /** Destroys the sandbox and deletes its directories. Idempotent. */
  dispose: () => Promise<void>;
}

/** The runtime as the server builds it, from the environment's configuration. */
export function testRuntime(config: Config = loadConfig()): BwrapRuntime {
  return new BwrapRuntime({ config, sandboxdBundlePath: () => sandboxdBundle(join(config.imageDir, 'sandboxd')) });
}

/** Sandboxes as a warm pool hands them out: each started with the spec's limits and no workspace, then given it. */
export function pooledTestRuntime(config: Config = loadConfig()): { create(spec: SandboxSpec): Promise<BwrapSandbox> } {
  const runtime = testRuntime(config);
  return {
    async create(spec) {
      const warm = await runtime.prepare({ limits: spec.limits! });
      try {
        return await warm.attach(spec);
      } catch (error) {
        await warm.destroy();
        throw error;
      }
    },
  };
}

export interface SandboxFixtureOptions<S extends Sandbox = BwrapSandbox> {
  /** Default: the bwrap runtime as the server builds it (testRuntime). */
  runtime?: { create(spec: SandboxSpec): Promise<S> };
  jobId?: string;
  network?: NetworkPolicy;
  /** Resource limits over the configuration's defaults (limits are always on, as in a job). */
  limits?: Partial<SandboxLimits>;
  /** Put the workspace on a disk of this many MB, as a job does (needs root). */
  workspaceDiskMb?: number;
  /** The cap on sandbox.log (default: the runtime's). */
  log?: SandboxLogLimit;
  /** Start the sandbox ahead, as the warm pool does, and hand it the workspace afterwards (bwrap; needs root). */
  pooled?: boolean;
}

export async function createSandboxFixture<S extends Sandbox = BwrapSandbox>(options: SandboxFixtureOptions<S> = {}): Promise<SandboxFixture<S>> {
  const root = await mkdtemp(join(tmpdir(), 'workcell-test-'));
  // The sandbox user must be able to reach the workspace through the temporary directory.
  await chmod(root, 0o711);
  const workspace = join(root, 'workspace');
  const diskPaths = { workspace, workspaceImage: join(root, 'workspace.ext4') };
  const logDir = join(root, 'logs');
  await mkdir(workspace);
  const config = loadConfig();
  const limits: SandboxLimits = { cpus: config.cpus, memoryMb: config.memoryMb, pids: config.pids, diskMb: config.diskMb, ...options.limits };
  let sandbox: S;
  try {
    if (options.workspaceDiskMb !== undefined) await attachWorkspaceDisk(diskPaths, options.workspaceDiskMb);
    const runtime = options.runtime ?? ((options.pooled === true ? pooledTestRuntime() : testRuntime()) as unknown as { create(spec: SandboxSpec): Promise<S> });
    sandbox = await runtime.create({
      jobId: options.jobId ?? 'job_test',
      workspaceDir: workspace,
      logDir,
      limits,
      ...(options.network === undefined ? {} : { network: options.network }),
      ...(options.log === undefined ? {} : { log: options.log }),
    });
  } catch (error) {
    await releaseWorkspaceDisk(diskPaths).catch(() => undefined);
    await rm(root, { recursive: true, force: true });
    throw error;
  }
  let disposed: Promise<void> | undefined;
  return {
    sandbox,
    workspace,
    logDir,
    sh: (command, timeoutMs = 30_000) => sandbox.client.call('shellExec', { command, timeout_ms: timeoutMs }),
    dispose: () =>
      (disposed ??= (async () => {
        try {
          await sandbox.destroy();
        } finally {
          await releaseWorkspaceDisk(diskPaths).catch(() => undefined);
          await rm(root, { recursive: true, force: true });
        }
      })()),
  };
}

/** A fork bomb that holds its pids: children sleep until killed, the parent forks until the kernel refuses, then says so. */
export const forkHolderCommand = `python3 -c "
import os, time
n = 0
try:
    while True:
        if os.fork() == 0:
            time.sleep(1000)
            os._exit(0)
        n += 1
except OSError as error:
    print('fork refused after', n, 'children:', error.strerror)
"`;

/** Runs `test` with a fresh sandbox and destroys it afterwards, whatever happens. */
export async function withSandbox<T>(test: (fixture: SandboxFixture) => Promise<T>, options?: SandboxFixtureOptions): Promise<T> {
  const fixture = await createSandboxFixture(options);
  try {
    return await test(fixture);
  } finally {
    await fixture.dispose();
  }
}

/** One sandbox shared by the tests of a file: created in beforeAll, destroyed in afterAll. */
export function useSandbox(options?: SandboxFixtureOptions): () => SandboxFixture {
  let fixture: SandboxFixture | undefined;
  beforeAll(async () => {
    fixture = await createSandboxFixture(options);
  });
  afterAll(async () => {
    await fixture?.dispose();
  });
  return () => {
    if (fixture === undefined) throw new Error('the sandbox fixture is not set up (useSandbox() must be called at the top of a describe block or file)');
    return fixture;
  };
}

/** Mount points of a bwrap sandbox on the host (its run directory, a warm one's workspace slot): none may outlive it. */
export function sandboxMounts(runDir: string, sandboxId: string): number {
  return readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((line) => line.split(' ')[4]?.startsWith(join(runDir, sandboxId))).length;
}

/** Host pids of the sandbox's live processes (its pid namespace); empty once it is fully gone. */
export function sandboxProcesses(sandbox: BwrapSandbox): Promise<number[]> {
  if (sandbox.pidNamespace === undefined) throw new Error('the sandbox pid namespace is unknown');
  return pidNamespaceMembers(sandbox.pidNamespace);
}

/**
 * Polls `condition` until it holds or `timeoutMs` passes; for conditions the host observes with no event to wait on.
 * The bound is for a condition that never comes, so it is generous: on a busy machine what takes a second idle can
 * take tens.
 */
export async function waitUntil(condition: () => Promise<boolean>, timeoutMs = 60_000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
