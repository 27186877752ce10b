// The runtimes the shared suite runs on, and a sandbox fixture for any of them, built as the server builds them
// (createRuntimes). Docker-based runtimes get a Docker engine from useDockerDaemon (started here when none runs, and
// stopped again). Each runtime says why it is skipped where it cannot run, and what it runs less of:
//   - microvm runs under QEMU TCG here (no usable KVM): the guest is about 14x slower, so it skips the GUI desktop
//     (Xvfb, openbox and x11vnc take minutes to start emulated) and gets longer timeouts.
//   - gvisor runs its desktop without a window manager: under Debian's runsc (2022, ptrace platform) openbox never
//     finishes starting (no --startup command run, no _NET_SUPPORTING_WM_CHECK after 45 s); Xvfb, xdotool and
//     screenshots work (xterm loops on "open ttydev: Input/output error", so nothing here types into one).
import { afterAll, beforeAll } from 'vitest';
import { loadConfig, type Config, type RuntimeName } from '../../../src/config.ts';
import { createRuntimes, type RegisteredRuntime, type Runtimes } from '../../../src/runtimes/index.ts';
import { findExecutable } from '../../../src/runtimes/probe.ts';
import type { NetworkPolicy } from '../../../src/runtimes/network/sandbox-egress.ts';
import type { SandboxLogLimit } from '../../../src/runtimes/sandbox-log.ts';
import type { Sandbox, SandboxLimits } from '../../../src/runtimes/types.ts';
import { dockerUnavailableReason, useDockerDaemon, type DockerDaemon } from '../../helpers/docker-daemon.ts';
import { createSandboxFixture, type SandboxFixture } from '../../helpers/sandbox.ts';

export interface RuntimeCase {
  name: RuntimeName;
  /** Runs the GUI desktop test. */
  gui: boolean;
  /** Slow (emulated) runtime: longer timeouts. */
  slow: boolean;
}

export const runtimeCases: RuntimeCase[] = [
  { name: 'bwrap', gui: true, slow: false },
  { name: 'docker', gui: true, slow: false },
  { name: 'gvisor', gui: true, slow: false },
  { name: 'microvm', gui: false, slow: true },
];

let runtimes: Runtimes | undefined;
export function sharedRuntimes(config: Config = loadConfig()): Runtimes {
  return (runtimes ??= createRuntimes(config));
}

/** Why a runtime's tests cannot run on this host (they are skipped, saying so), or undefined. */
export async function skipReason(name: RuntimeName): Promise<string | undefined> {
  // The Docker engine is started by the suite when it is not running; everything else must be installed.
  if (name === 'docker' || name === 'gvisor') {
    const docker = dockerUnavailableReason();
    if (docker !== undefined) return docker;
    if (name === 'gvisor' && findExecutable('runsc') === undefined) return 'runsc (gVisor) is not installed (scripts/setup.sh installs it)';
    return undefined;
  }
  return (await sharedRuntimes().get(name)?.unavailableReason()) ?? undefined;
}

let daemon: Promise<DockerDaemon> | undefined;
let daemonUsers = 0;
/** The Docker engine for docker and gvisor cases; release() when done (stops dockerd if it was started here). */
export async function acquireRuntime(name: RuntimeName): Promise<{ runtime: RegisteredRuntime; release: () => Promise<void> }> {
  const usesDocker = name === 'docker' || name === 'gvisor';
  if (usesDocker) {
    daemonUsers++;
    daemon ??= useDockerDaemon();
    await daemon;
  }
  const runtime = sharedRuntimes().get(name);
  if (runtime === undefined) throw new Error(`no ${name} runtime on this platform`);
  const problem = await runtime.unavailableReason();
  if (problem !== undefined) throw new Error(`the ${name} runtime is not available here: ${problem}`);
  return {
    runtime,
    release: async () => {
      if (!usesDocker) return;
      daemonUsers--;
      if (daemonUsers === 0 && daemon !== undefined) {
        const current = daemon;
        daemon = undefined;
        await (await current).release();
      }
    },
  };
}

export type RuntimeSandbox = SandboxFixture<Sandbox>;

/** A sandbox of `runtime` on a fresh workspace (test/helpers/sandbox.ts), with 1 GB of memory and a 256 MB /tmp. */
export function createRuntimeSandbox(runtime: RegisteredRuntime, options: { limits?: Partial<SandboxLimits>; network?: NetworkPolicy; log?: SandboxLogLimit } = {}): Promise<RuntimeSandbox> {
  return createSandboxFixture<Sandbox>({
    runtime,
    jobId: 'job_runtime_test',
    limits: { memoryMb: 1024, diskMb: 256, ...options.limits },
    ...(options.network === undefined ? {} : { network: options.network }),
    ...(options.log === undefined ? {} : { log: options.log }),
  });
}

/**
 * One sandbox of `name` shared by the tests of a describe block: the runtime acquired and the sandbox created in
 * beforeAll, both released in afterAll. Returns its getter.
 */
export function useRuntimeSandbox(name: RuntimeName, timeoutMs: number, options: Parameters<typeof createRuntimeSandbox>[1] = {}): () => RuntimeSandbox {
  let fixture: RuntimeSandbox | undefined;
  let release: (() => Promise<void>) | undefined;
  beforeAll(async () => {
    const acquired = await acquireRuntime(name);
    release = acquired.release;
    fixture = await createRuntimeSandbox(acquired.runtime, options);
  }, timeoutMs);
  afterAll(async () => {
    try {
      await fixture?.dispose();
    } finally {
      await release?.();
    }
  }, timeoutMs);
  return () => {
    if (fixture === undefined) throw new Error(`the ${name} sandbox is not set up`);
    return fixture;
  };
}
