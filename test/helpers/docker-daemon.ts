// Docker for integration tests: uses the running daemon, or starts dockerd (as root) and stops it again afterwards,
// so a host where Docker is installed but not running (scripts/setup.sh installs docker.io without starting it)
// still runs the Docker tests, and nothing the tests started outlives them.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { closeSync, openSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { findExecutable, runCommand } from '../../src/runtimes/probe.ts';

// dockerd's start includes cleaning up what a killed daemon left behind (stale containers, network endpoints), which
// took over 30 s once on a busy machine; it is given long, and a dockerd that exits is reported at once.
const readyTimeoutMs = 180_000;
const stopTimeoutMs = 15_000;

export interface DockerDaemon {
  /** The docker CLI. */
  docker: string;
  /** Stops dockerd if this fixture started it; otherwise does nothing. */
  release: () => Promise<void>;
}

/** Why the Docker tests cannot run here, or undefined when they can. */
export function dockerUnavailableReason(): string | undefined {
  if (process.getuid?.() !== 0) return 'the Docker tests run as root (they may start dockerd, and give containers files owned by uid 1000)';
  if (findExecutable('docker') === undefined) return 'the docker CLI is not installed (scripts/setup.sh installs docker.io)';
  if (findExecutable('dockerd') === undefined) return 'dockerd is not installed (scripts/setup.sh installs docker.io)';
  return undefined;
}

async function daemonAnswers(docker: string): Promise<boolean> {
  const result = await runCommand(docker, ['version', '--format', '{{.Server.Version}}'], { timeoutMs: 10_000 });
  return result.ok;
}

/** The Docker daemon, started here (and stopped by release()) when none answers. */
export async function useDockerDaemon(): Promise<DockerDaemon> {
  const docker = findExecutable('docker');
  if (docker === undefined) throw new Error('the docker CLI is not installed');
  if (await daemonAnswers(docker)) return { docker, release: async () => undefined };
  const dockerd = findExecutable('dockerd');
  if (dockerd === undefined) throw new Error('no Docker daemon answers, and dockerd is not installed');

  const logPath = join(tmpdir(), `workcell-test-dockerd-${process.pid}.log`);
  const logFd = openSync(logPath, 'a');
  let child: ChildProcess;
  try {
    child = spawn(dockerd, [], { stdio: ['ignore', logFd, logFd], detached: true });
  } finally {
    closeSync(logFd);
  }
  // once() rejects on 'error' (dockerd could not be run): that also means it is not running.
  const exited = once(child, 'exit').catch(() => undefined);
  const deadline = Date.now() + readyTimeoutMs;
  while (!(await daemonAnswers(docker))) {
    if (child.exitCode !== null) throw new Error(`dockerd exited (${child.exitCode}) before it was ready; see ${logPath}`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`dockerd was not ready within ${readyTimeoutMs / 1000} s; see ${logPath}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return {
    docker,
    release: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), stopTimeoutMs);
      await exited;
      clearTimeout(timer);
      // Kept only when something went wrong (the errors above point at it).
      rmSync(logPath, { force: true });
    },
  };
}
