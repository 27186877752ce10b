// The runtimes the shared suite runs on, and a sandbox fixture for any of them, built as the server builds them
// (createRuntimes). Docker-based runtimes get a Docker engine from useDockerDaemon (started here when none runs, and
// stopped again). Each runtime says why it is skipped where it cannot run, and what it runs less of:
//   - microvm runs under QEMU TCG here (no usable KVM): the guest is about 14x slower, so it skips the GUI desktop
//     (Xvfb, openbox and x11vnc take minutes to start emulated) and gets longer timeouts.
//   - gvisor runs its desktop without a window manager: under Debian's runsc (2022, ptrace platform) openbox never
//     finishes starting (no --startup command run, no _NET_SUPPORTING_WM_CHECK after 45 s); Xvfb, xdotool and
//     screenshots work (xterm loops on "open ttydev: Input/output error", so nothing here types into one).
import { chmod, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig, type Config, type RuntimeName } from '../../../src/config.ts';
import { attachWorkspaceDisk, releaseWorkspaceDisk, workspaceDiskUnavailable } from '../../../src/jobs/workspace-disk.ts';
import { createRuntimes, type RegisteredRuntime, type Runtimes } from '../../../src/runtimes/index.ts';
import { findExecutable } from '../../../src/runtimes/probe.ts';
import type { NetworkPolicy } from '../../../src/runtimes/network/sandbox-egress.ts';
import type { Sandbox, SandboxLimits } from '../../../src/runtimes/types.ts';
import type { RouteResponse } from '../../../src/sandboxd/protocol.ts';
import { dockerUnavailableReason, useDockerDaemon, type DockerDaemon } from '../../helpers/docker-daemon.ts';

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

export interface RuntimeSandbox {
  sandbox: Sandbox;
  workspace: string;
  sh: (command: string, timeoutMs?: number) => Promise<RouteResponse<'shellExec'>>;
  dispose: () => Promise<void>;
}

export async function createRuntimeSandbox(
  runtime: RegisteredRuntime,
  options: { limits?: Partial<SandboxLimits>; network?: NetworkPolicy; workspaceDiskMb?: number; jobId?: string } = {},
): Promise<RuntimeSandbox> {
  const root = await mkdtemp(join(tmpdir(), 'workcell-rt-'));
  await chmod(root, 0o711);
  const workspace = join(root, 'workspace');
  await mkdir(workspace);
  const diskPaths = { workspace, workspaceImage: join(root, 'workspace.ext4') };
  const config = loadConfig();
  const limits: SandboxLimits = { cpus: config.cpus, memoryMb: 1024, pids: config.pids, diskMb: 256, ...options.limits };
  let sandbox: Sandbox;
  try {
    if (options.workspaceDiskMb !== undefined && workspaceDiskUnavailable() === undefined) await attachWorkspaceDisk(diskPaths, options.workspaceDiskMb);
    sandbox = await runtime.create({ jobId: options.jobId ?? 'job_runtime_test', workspaceDir: workspace, logDir: join(root, 'logs'), limits, ...(options.network === undefined ? {} : { network: options.network }) });
  } catch (error) {
    await releaseWorkspaceDisk(diskPaths).catch(() => undefined);
    await rm(root, { recursive: true, force: true });
    throw error;
  }
  let disposed: Promise<void> | undefined;
  return {
    sandbox,
    workspace,
    sh: (command, timeoutMs = 60_000) => sandbox.client.call('shellExec', { command, timeout_ms: timeoutMs }),
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
