// Host probing for `workcell doctor` and the runtimes: what isolation this machine can offer (bubblewrap and user
// namespaces, cgroups, Docker, KVM, QEMU, gVisor, Firecracker) and whether the sandbox rootfs is built. Every probe
// is bounded in time and reports instead of throwing: a doctor that crashes on a broken host is no doctor.
import { execFile } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { open, readFile } from 'node:fs/promises';
import { request } from 'node:http';
import { delimiter, join } from 'node:path';
import type { Config } from '../config.ts';
import { errorMessage } from '../errors.ts';
import { ensureRootfs } from './image.ts';
import type { RuntimeProbe } from './types.ts';

export interface HostProbe {
  name: string;
  available: boolean;
  detail: string;
}

/**
 * How long a probe's command (bwrap --version, getent, a user-namespace check) or the Docker engine may take: a bound
 * for one that hangs, not an expectation of speed. On a busy host starting even `bwrap --version` can take a second
 * or more, and a probe that gave up then would report a working runtime as missing (and fail the sandbox it was for).
 */
const commandTimeoutMs = 15_000;

/** The absolute path of a command on PATH (or in the sbin directories, which many users' PATH lacks). */
export function findExecutable(name: string): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/local/sbin', '/usr/sbin', '/sbin'];
  for (const dir of dirs) {
    if (dir === '') continue;
    const path = join(dir, name);
    try {
      accessSync(path, constants.X_OK);
      return path;
    } catch {
      // not here
    }
  }
  return undefined;
}

export interface CommandResult {
  ok: boolean;
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion with a time limit; never rejects (a failure is in the result). */
export function runCommand(file: string, args: string[], options: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<CommandResult> {
  return new Promise((resolve) => {
    execFile(
      file,
      args,
      { timeout: options.timeoutMs ?? commandTimeoutMs, killSignal: 'SIGKILL', maxBuffer: 1 << 20, encoding: 'utf8', env: options.env ?? process.env },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof error.code === 'number' ? error.code : null;
        resolve({ ok: error === null, code, stdout, stderr: stderr || (error === null ? '' : error.message) });
      },
    );
  });
}

export interface HostUser {
  name: string;
  uid: number;
  gid: number;
}

/** A host user by name, through NSS (so LDAP or systemd-userdb users count too); undefined when there is none. */
export async function lookupUser(name: string): Promise<HostUser | undefined> {
  const getent = findExecutable('getent');
  let line: string | undefined;
  if (getent !== undefined) {
    const result = await runCommand(getent, ['passwd', name]);
    line = result.ok ? result.stdout.split('\n')[0] : undefined;
  } else {
    const passwd = await readFile('/etc/passwd', 'utf8').catch(() => '');
    line = passwd.split('\n').find((entry) => entry.startsWith(`${name}:`));
  }
  const fields = line?.split(':');
  if (fields === undefined || fields[0] !== name) return undefined;
  const uid = Number(fields[2]);
  const gid = Number(fields[3]);
  return Number.isInteger(uid) && Number.isInteger(gid) ? { name, uid, gid } : undefined;
}

export interface BwrapHost {
  bwrap: string;
  /** e.g. "0.8.0" */
  version: string;
  /** Set when the server runs as root: bwrap is started through setpriv as this unprivileged user. */
  sandboxUser: HostUser | undefined;
  setpriv: string | undefined;
}

/** Compares dotted versions: negative when a < b. */
export function compareVersions(a: string, b: string): number {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const diff = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (diff !== 0) return diff;
  }
  return 0;
}

/** The command prefix that runs bwrap as the sandbox's host user: setpriv as root, bwrap itself otherwise. */
export function bwrapCommand(host: BwrapHost): string[] {
  if (host.sandboxUser === undefined) return [host.bwrap];
  const { uid, gid } = host.sandboxUser;
  // As root, bwrap's --uid 1000 would map to host uid 0 (DESIGN §9): become the unprivileged user first, with no
  // supplementary groups and no capabilities to inherit or regain.
  return [host.setpriv!, `--reuid=${uid}`, `--regid=${gid}`, '--clear-groups', '--inh-caps=-all', '--bounding-set=-all', '--', host.bwrap];
}

const bwrapNotFound = 'bwrap not found on PATH: run scripts/setup.sh (or apt-get install bubblewrap)';
const setprivNotFound = 'setpriv not found (running as root, sandboxes must drop to an unprivileged user): apt-get install util-linux';

/** What the bwrap runtime lacks, checked without starting a process (bwrap, setpriv as root, the rootfs); or undefined. */
export function bwrapQuickCheck(config: Pick<Config, 'imageDir'>): string | undefined {
  if (findExecutable('bwrap') === undefined) return bwrapNotFound;
  if (process.getuid?.() === 0 && findExecutable('setpriv') === undefined) return setprivNotFound;
  try {
    ensureRootfs(config);
  } catch (error) {
    return errorMessage(error);
  }
  return undefined;
}

/**
 * Finds bwrap, its version, and (as root) the sandbox user and setpriv. Returns what is missing and how to fix it
 * instead of a host when something is.
 */
export async function findBwrapHost(config: Pick<Config, 'sandboxUser'>): Promise<BwrapHost | { missing: string }> {
  const bwrap = findExecutable('bwrap');
  if (bwrap === undefined) return { missing: bwrapNotFound };
  const versionResult = await runCommand(bwrap, ['--version']);
  const version = /(\d+\.\d+(?:\.\d+)?)/.exec(versionResult.stdout)?.[1];
  if (!versionResult.ok || version === undefined) return { missing: `bwrap --version failed: ${versionResult.stderr.trim() || versionResult.stdout.trim()}` };
  if (process.getuid?.() !== 0) return { bwrap, version, sandboxUser: undefined, setpriv: undefined };
  const setpriv = findExecutable('setpriv');
  if (setpriv === undefined) return { missing: setprivNotFound };
  const sandboxUser = await lookupUser(config.sandboxUser);
  if (sandboxUser === undefined) {
    return { missing: `the sandbox user ${config.sandboxUser} does not exist (running as root, sandboxes run as that unprivileged user): run scripts/setup.sh, or set WORKCELL_SANDBOX_USER` };
  }
  if (sandboxUser.uid === 0) return { missing: `the sandbox user ${config.sandboxUser} has uid 0; it must be an unprivileged user (WORKCELL_SANDBOX_USER)` };
  return { bwrap, version, sandboxUser, setpriv };
}

/** bwrap runs an empty command in every namespace as the sandbox user: user namespaces are usable. */
async function checkUserNamespaces(host: BwrapHost): Promise<string | undefined> {
  const [file, ...prefix] = bwrapCommand(host) as [string, ...string[]];
  const result = await runCommand(
    file,
    [...prefix, '--unshare-all', '--uid', '1000', '--gid', '1000', '--ro-bind', '/', '/', '--proc', '/proc', '--dev', '/dev', '--cap-drop', 'ALL', '--', 'true'],
    { env: { PATH: '/usr/bin:/bin' } },
  );
  if (result.ok) return undefined;
  const hints = [
    'check that unprivileged user namespaces are enabled (sysctl kernel.unprivileged_userns_clone=1 where it exists, user.max_user_namespaces > 0)',
    'on Ubuntu 23.10+ AppArmor must allow them for bwrap: scripts/setup.sh installs a profile',
  ];
  return `bwrap cannot create namespaces here (${result.stderr.trim() || `exit ${result.code}`}): ${hints.join('; ')}`;
}

/** The bwrap runtime's readiness: bwrap and its version, user namespaces, the sandbox user when root, the rootfs. */
export async function probeBwrap(config: Pick<Config, 'sandboxUser' | 'imageDir'>): Promise<RuntimeProbe> {
  try {
    const host = await findBwrapHost(config);
    if ('missing' in host) return { available: false, detail: host.missing };
    const userNamespaceProblem = await checkUserNamespaces(host);
    if (userNamespaceProblem !== undefined) return { available: false, detail: userNamespaceProblem };
    let rootfs: string;
    try {
      rootfs = ensureRootfs(config);
    } catch (error) {
      return { available: false, detail: errorMessage(error) };
    }
    const user = host.sandboxUser === undefined ? `runs as uid ${process.getuid?.()}` : `runs as ${host.sandboxUser.name} (uid ${host.sandboxUser.uid})`;
    return { available: true, detail: `bubblewrap ${host.version}, user namespaces usable, ${user}, rootfs ${rootfs}` };
  } catch (error) {
    return { available: false, detail: `bwrap probe failed: ${errorMessage(error)}` };
  }
}

async function probeCgroups(): Promise<HostProbe> {
  const wanted = ['memory', 'cpu', 'pids'];
  const mounts = (await readFile('/proc/self/mounts', 'utf8').catch(() => '')).split('\n').map((line) => line.split(' '));
  const v1 = new Set<string>();
  let v2Path: string | undefined;
  for (const [, mountPoint, type, options] of mounts) {
    if (type === 'cgroup' && options !== undefined) for (const option of options.split(',')) if (wanted.includes(option)) v1.add(option);
    if (type === 'cgroup2' && mountPoint !== undefined) v2Path ??= mountPoint;
  }
  const v2Controllers = v2Path === undefined ? [] : (await readFile(join(v2Path, 'cgroup.controllers'), 'utf8').catch(() => '')).trim().split(/\s+/).filter(Boolean);
  const have = new Set([...v1, ...v2Controllers.filter((controller) => wanted.includes(controller))]);
  const missing = wanted.filter((controller) => !have.has(controller));
  const parts = [
    v1.size > 0 ? `v1: ${[...v1].sort().join(', ')}` : 'v1: none of memory/cpu/pids',
    v2Path === undefined ? 'v2: not mounted' : `v2 at ${v2Path}: ${v2Controllers.length > 0 ? v2Controllers.join(', ') : 'no controllers'}`,
  ];
  if (missing.length > 0) parts.push(`missing ${missing.join(', ')}: sandbox limits for them cannot be enforced`);
  return { name: 'cgroups', available: missing.length === 0, detail: parts.join('; ') };
}

function dockerPing(socketPath: string): Promise<string | undefined> {
  return new Promise((resolve) => {
    const req = request({ socketPath, path: '/version', method: 'GET', timeout: commandTimeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => {
        try {
          const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { Version?: string; ApiVersion?: string };
          resolve(res.statusCode === 200 ? `engine ${body.Version ?? '?'} (API ${body.ApiVersion ?? '?'})` : undefined);
        } catch {
          resolve(undefined);
        }
      });
      res.on('error', () => resolve(undefined));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(undefined));
    req.end();
  });
}

async function probeDocker(): Promise<HostProbe> {
  const cli = findExecutable('docker');
  // DOCKER_HOST is Docker's own convention for where the engine is, not a workcell setting.
  const dockerHost = process.env.DOCKER_HOST;
  const socketPath = dockerHost?.startsWith('unix://') ? dockerHost.slice('unix://'.length) : '/var/run/docker.sock';
  const engine = await dockerPing(socketPath);
  const cliText = cli === undefined ? 'docker CLI not on PATH' : `CLI ${cli}`;
  if (engine === undefined) {
    return { name: 'docker', available: false, detail: `${cliText}; no engine answering on ${socketPath} (start dockerd, or apt-get install docker.io)` };
  }
  return { name: 'docker', available: true, detail: `${engine} on ${socketPath}; ${cliText}` };
}

async function probeKvm(): Promise<HostProbe> {
  try {
    const handle = await open('/dev/kvm', 'r+');
    await handle.close();
    return { name: 'kvm', available: true, detail: '/dev/kvm is present and openable' };
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const detail =
      code === 'ENOENT'
        ? '/dev/kvm does not exist (no hardware virtualization exposed to this host; microVMs fall back to QEMU TCG)'
        : `/dev/kvm cannot be opened (${code ?? errorMessage(error)}): add the user to the kvm group or run as root`;
    return { name: 'kvm', available: false, detail };
  }
}

async function probeTool(name: string, command: string, versionArgs: string[], install: string): Promise<HostProbe> {
  const path = findExecutable(command);
  if (path === undefined) return { name, available: false, detail: `${command} not on PATH (${install})` };
  const result = await runCommand(path, versionArgs);
  const version = `${result.stdout}\n${result.stderr}`.split('\n').find((line) => /\d+\.\d+/.test(line))?.trim();
  return { name, available: true, detail: `${path}${version === undefined ? '' : `: ${version}`}` };
}

async function probeRootfs(config: Pick<Config, 'imageDir'>): Promise<HostProbe> {
  try {
    return { name: 'rootfs', available: true, detail: ensureRootfs(config) };
  } catch (error) {
    return { name: 'rootfs', available: false, detail: errorMessage(error) };
  }
}

/** Everything `workcell doctor` reports, in a fixed order. Probes run in parallel; none throws. */
export async function probeHost(config: Pick<Config, 'sandboxUser' | 'imageDir'>): Promise<HostProbe[]> {
  const guard = (name: string, probe: Promise<HostProbe>) => probe.catch((error: unknown) => ({ name, available: false, detail: `probe failed: ${errorMessage(error)}` }));
  return Promise.all([
    guard('bwrap', probeBwrap(config).then((probe) => ({ name: 'bwrap', ...probe }))),
    guard('cgroups', probeCgroups()),
    guard('docker', probeDocker()),
    guard('kvm', probeKvm()),
    guard('qemu', probeTool('qemu', 'qemu-system-x86_64', ['--version'], 'apt-get install qemu-system-x86')),
    guard('runsc', probeTool('runsc', 'runsc', ['--version'], 'gVisor: apt-get install runsc')),
    guard('firecracker', probeTool('firecracker', 'firecracker', ['--version'], 'not packaged: download a release binary from github.com/firecracker-microvm/firecracker')),
    guard('rootfs', probeRootfs(config)),
  ]);
}
