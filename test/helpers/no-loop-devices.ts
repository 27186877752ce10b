// A host without loop devices, for real: a command run in a mount namespace of its own (unshare -m, as root) whose
// /dev is a fresh tmpfs holding only the character devices a container gets (null, zero, full, random, urandom, tty):
// no /dev/loop-control and no /dev/loop*, so `mount -o loop` fails there exactly as in a container without them,
// while everything else (the data directory, cgroups, bwrap, the network) is the host's. Its mounts stay in that
// namespace and are gone with its last process.
import { spawn, type ChildProcess } from 'node:child_process';
import { findExecutable } from '../../src/runtimes/probe.ts';

/** What a container's /dev holds that bwrap's --dev and the server use: name, major, minor. */
const containerDevices: Array<[string, number, number]> = [
  ['null', 1, 3],
  ['zero', 1, 5],
  ['full', 1, 7],
  ['random', 1, 8],
  ['urandom', 1, 9],
  ['tty', 5, 0],
];

const makeDev = [
  'set -e',
  'mount -t tmpfs -o mode=0755,size=1m,nosuid workcell-test-dev /dev',
  ...containerDevices.map(([name, major, minor]) => `mknod -m 0666 /dev/${name} c ${major} ${minor}`),
  'mkdir /dev/pts /dev/shm',
  'mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts',
  'ln -s pts/ptmx /dev/ptmx',
  'mount -t tmpfs -o mode=1777,nosuid,nodev shm /dev/shm',
  'exec "$@"',
].join('\n');

/** Why this host cannot simulate one without loop devices (not root, no unshare), or undefined. */
export function noLoopDevicesUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'making a mount namespace with another /dev needs root';
  if (findExecutable('unshare') === undefined) return 'unshare not found (util-linux)';
  return undefined;
}

/** The argv that runs `command` on a simulated host without loop devices. */
export function withoutLoopDevices(command: string[]): string[] {
  return [findExecutable('unshare')!, '--mount', '--propagation', 'private', '--', 'sh', '-c', makeDev, 'sh', ...command];
}

/** Spawns `command` there (stdout and stderr piped). */
export function spawnWithoutLoopDevices(command: string[], options: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): ChildProcess {
  const [file, ...args] = withoutLoopDevices(command);
  return spawn(file!, args, { stdio: ['ignore', 'pipe', 'pipe'], env: options.env ?? process.env, cwd: options.cwd });
}

/** Runs `command` there to completion: its exit code and output. */
export function runWithoutLoopDevices(command: string[], options: { env?: NodeJS.ProcessEnv; cwd?: string; timeoutMs?: number } = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawnWithoutLoopDevices(command, options);
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 60_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}
