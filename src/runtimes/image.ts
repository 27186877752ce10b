// The sandbox rootfs: a Debian directory built from image/packages.txt and image/post-install.sh, plus the host's
// Node binary (sandboxd needs Node 24 inside). It lives at <imageDir>/rootfs-<hash16>, where the hash covers every
// input of the recipe, so a changed recipe builds a new directory beside the old one and running sandboxes keep
// theirs. A directory is only ever renamed into place once complete, so a present path is a usable rootfs.
// Building needs root (debootstrap, chroot); everything the build prints goes to the caller's log, never stdout.
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { accessSync, constants, existsSync, readFileSync } from 'node:fs';
import { chmod, copyFile, mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Config } from '../config.ts';
import { WorkcellError, errorMessage } from '../errors.ts';

/** Bump when the builder's steps change in a way that changes the rootfs. */
export const rootfsRecipeVersion = 1;
export const debianSuite = 'bookworm';

const imageSourceDir = fileURLToPath(new URL('../../image/', import.meta.url));
const packageListPath = join(imageSourceDir, 'packages.txt');
const postInstallPath = join(imageSourceDir, 'post-install.sh');
/** Written last, inside the rootfs; its presence (and hash) is what makes a directory a complete rootfs. */
const completeMarker = 'etc/workcell-rootfs.json';
const debianKeyring = '/usr/share/keyrings/debian-archive-keyring.gpg';
const chrootPath = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** The packages of image/packages.txt, comments and blank lines removed, in file order. */
export function readPackageList(): string[] {
  return readFileSync(packageListPath, 'utf8')
    .split('\n')
    .map((line) => line.replace(/#.*/, '').trim())
    .filter((line) => line !== '');
}

/** A hash of everything that determines the rootfs: package list, post-install script, recipe version, suite, Node. */
export function rootfsRecipeHash(): string {
  const hash = createHash('sha256');
  const part = (name: string, value: string) => hash.update(`${name}\0${value.length}\0${value}\0`);
  part('recipe', String(rootfsRecipeVersion));
  part('suite', debianSuite);
  part('arch', process.arch);
  part('node', process.version);
  // Sorted and without comments: editing a comment or reordering the list does not rebuild.
  part('packages', [...new Set(readPackageList())].sort().join('\n'));
  part('post-install', readFileSync(postInstallPath, 'utf8'));
  return hash.digest('hex');
}

export function rootfsPath(config: Pick<Config, 'imageDir'>): string {
  return join(config.imageDir, `rootfs-${rootfsRecipeHash().slice(0, 16)}`);
}

function isComplete(dir: string, hash: string): boolean {
  try {
    const marker = JSON.parse(readFileSync(join(dir, completeMarker), 'utf8')) as { hash?: unknown };
    return marker.hash === hash;
  } catch {
    return false;
  }
}

/** The built rootfs for the current recipe, or a runtime_unavailable error that says how to build it. */
export function ensureRootfs(config: Pick<Config, 'imageDir'>): string {
  const path = rootfsPath(config);
  if (!isComplete(path, rootfsRecipeHash())) {
    throw new WorkcellError('runtime_unavailable', 'sandbox rootfs not built: run `workcell image build` or scripts/setup.sh', { details: { expected: path } });
  }
  return path;
}

export interface BuildRootfsOptions {
  /** Receives every line the build prints (debootstrap, apt, post-install) and the builder's own progress. */
  log: (line: string) => void;
  /** Rebuild even when a complete rootfs for this recipe exists. */
  force?: boolean;
  signal?: AbortSignal;
}

/**
 * Builds the rootfs for the current recipe unless it already exists; returns its path. Needs root. Removes older
 * rootfs-* directories except the newest other one (a sandbox started just before may still use it).
 */
export async function buildRootfs(config: Pick<Config, 'imageDir' | 'debianMirror'>, options: BuildRootfsOptions): Promise<string> {
  const { log, signal } = options;
  const hash = rootfsRecipeHash();
  const finalDir = rootfsPath(config);
  if (!options.force && isComplete(finalDir, hash)) {
    log(`rootfs up to date: ${finalDir}`);
    return finalDir;
  }
  if (process.getuid?.() !== 0) {
    throw new WorkcellError('runtime_unavailable', 'building the sandbox rootfs needs root (debootstrap, chroot): run scripts/setup.sh, or `sudo workcell image build`');
  }
  const debootstrap = findExecutable('debootstrap');
  const chroot = findExecutable('chroot');
  const unshare = findExecutable('unshare');
  if (debootstrap === undefined) throw new WorkcellError('runtime_unavailable', 'debootstrap not found: run scripts/setup.sh (or apt-get install debootstrap)');
  if (chroot === undefined || unshare === undefined) {
    throw new WorkcellError('runtime_unavailable', 'chroot or unshare not found: run scripts/setup.sh (or apt-get install coreutils util-linux)');
  }
  const run: Runner = (args, runOptions) => runLogged(args, { log, signal, ...runOptions });

  await mkdir(config.imageDir, { recursive: true, mode: 0o755 });
  await removeAbandonedBuilds(config.imageDir, log);
  const buildDir = join(config.imageDir, `.build-${process.pid}-${hash.slice(0, 16)}-${randomBytes(3).toString('hex')}`);
  const started = Date.now();
  log(`building rootfs ${finalDir} (Debian ${debianSuite}, ${readPackageList().length} packages, Node ${process.version})`);
  try {
    await mkdir(buildDir, { mode: 0o755 });
    // Every step runs in a private mount namespace: the /proc and /sys that debootstrap and apt mount inside the
    // tree vanish with the step, even if it is killed, so no host mount is ever left under the build directory.
    const isolated = (command: string[]) => [unshare, '--mount', '--propagation', 'private', '--', ...command];
    const keyring = existsSync(debianKeyring) ? [`--keyring=${debianKeyring}`] : [];
    log('debootstrap (minbase)');
    await run(isolated([debootstrap, '--variant=minbase', ...keyring, debianSuite, buildDir, config.debianMirror]), { what: 'debootstrap' });

    const inChroot = (script: string, what: string) =>
      run(isolated(['/bin/sh', '-c', `mount -t proc proc "$0/proc" && exec "$1" "$0" /bin/sh -c "$2"`, buildDir, chroot, script]), {
        what,
        env: { PATH: chrootPath, HOME: '/root', LANG: 'C.UTF-8', DEBIAN_FRONTEND: 'noninteractive', DEBCONF_NONINTERACTIVE_SEEN: 'true' },
      });

    await writeAptSources(buildDir, config.debianMirror);
    // No service may start inside the chroot while packages install.
    await writeFile(join(buildDir, 'usr/sbin/policy-rc.d'), '#!/bin/sh\nexit 101\n', { mode: 0o755 });
    // Documentation is dead weight for an agent; the copyright files stay.
    await writeFile(
      join(buildDir, 'etc/dpkg/dpkg.cfg.d/01-workcell-nodoc'),
      'path-exclude=/usr/share/doc/*\npath-include=/usr/share/doc/*/copyright\npath-exclude=/usr/share/man/*\npath-exclude=/usr/share/info/*\n',
    );
    const packages = readPackageList();
    log(`apt-get install ${packages.join(' ')}`);
    await inChroot(
      `apt-get update -q && apt-get -o Dpkg::Options::=--force-unsafe-io install -y -q --no-install-recommends ${packages.map(shellQuote).join(' ')}`,
      'apt-get install',
    );

    log(`copying Node ${process.version} from ${process.execPath}`);
    await mkdir(join(buildDir, 'usr/local/bin'), { recursive: true, mode: 0o755 });
    await copyFile(process.execPath, join(buildDir, 'usr/local/bin/node'));
    await chmod(join(buildDir, 'usr/local/bin/node'), 0o755);

    log('post-install.sh');
    await copyFile(postInstallPath, join(buildDir, 'tmp/workcell-post-install.sh'));
    await inChroot('/bin/bash /tmp/workcell-post-install.sh && rm -f /tmp/workcell-post-install.sh', 'post-install.sh');
    await rm(join(buildDir, 'usr/sbin/policy-rc.d'), { force: true });
    await inChroot(`test "$(/usr/local/bin/node -p process.version)" = ${process.version}`, 'node runs in the rootfs');

    await chmod(buildDir, 0o755);
    const durationMs = Date.now() - started;
    await writeFile(
      join(buildDir, completeMarker),
      `${JSON.stringify({ hash, recipeVersion: rootfsRecipeVersion, suite: debianSuite, node: process.version, packages, builtAt: new Date().toISOString(), durationMs }, null, 2)}\n`,
      { mode: 0o644 },
    );
    await moveIntoPlace(buildDir, finalDir);
    log(`rootfs ready: ${finalDir} (${Math.round(durationMs / 1000)} s)`);
  } catch (error) {
    await rm(buildDir, { recursive: true, force: true }).catch(() => undefined);
    if (error instanceof WorkcellError || signal?.aborted) throw error;
    throw new WorkcellError('internal', `building the sandbox rootfs failed: ${errorMessage(error)}`, { cause: error });
  }
  await removeOlderRootfs(config.imageDir, finalDir, log);
  return finalDir;
}

async function writeAptSources(dir: string, mirror: string): Promise<void> {
  const lines = [`deb ${mirror} ${debianSuite} main`, `deb ${mirror} ${debianSuite}-updates main`];
  // Security updates come from a separate archive; only the official mirror is known to carry it alongside.
  if (new URL(mirror).hostname === 'deb.debian.org') lines.push(`deb http://deb.debian.org/debian-security ${debianSuite}-security main`);
  await writeFile(join(dir, 'etc/apt/sources.list'), `${lines.join('\n')}\n`);
}

async function moveIntoPlace(buildDir: string, finalDir: string): Promise<void> {
  if (!existsSync(finalDir)) {
    await rename(buildDir, finalDir);
    return;
  }
  // A forced rebuild or an incomplete leftover: swap, then delete the old tree.
  const stale = `${buildDir}-stale`;
  await rename(finalDir, stale);
  await rename(buildDir, finalDir);
  await rm(stale, { recursive: true, force: true });
}

/** Build directories of builders that are no longer running (killed, crashed). */
async function removeAbandonedBuilds(imageDir: string, log: (line: string) => void): Promise<void> {
  for (const name of await readdir(imageDir)) {
    const match = /^\.build-(\d+)-/.exec(name);
    if (match === null) continue;
    const pid = Number(match[1]);
    if (pid !== process.pid && isAlive(pid)) continue;
    log(`removing abandoned build ${name}`);
    await removeTree(join(imageDir, name));
  }
}

async function removeOlderRootfs(imageDir: string, keep: string, log: (line: string) => void): Promise<void> {
  const others: Array<{ path: string; mtimeMs: number }> = [];
  for (const name of await readdir(imageDir)) {
    const path = join(imageDir, name);
    if (!name.startsWith('rootfs-') || path === keep) continue;
    others.push({ path, mtimeMs: (await stat(path)).mtimeMs });
  }
  others.sort((a, b) => b.mtimeMs - a.mtimeMs);
  for (const { path } of others.slice(1)) {
    log(`removing older rootfs ${path}`);
    await removeTree(path).catch((error: unknown) => log(`could not remove ${path}: ${errorMessage(error)}`));
  }
}

/** rm -rf that refuses to descend into a tree with something mounted in it (it would delete the host's files). */
async function removeTree(path: string): Promise<void> {
  const mountinfo = await readFile('/proc/self/mountinfo', 'utf8');
  const mounted = mountinfo.split('\n').some((line) => {
    const mountPoint = line.split(' ')[4];
    return mountPoint !== undefined && (mountPoint === path || mountPoint.startsWith(`${path}/`));
  });
  if (mounted) throw new Error(`${path} has file systems mounted inside; unmount them, then delete it`);
  await rm(path, { recursive: true, force: true });
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** A command on PATH or in the sbin directories (root's tools, absent from many users' PATH). */
function findExecutable(name: string): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/local/sbin', '/usr/sbin', '/sbin'];
  for (const dir of dirs) {
    if (dir === '') continue;
    try {
      accessSync(join(dir, name), constants.X_OK);
      return join(dir, name);
    } catch {
      // not here
    }
  }
  return undefined;
}

function shellQuote(value: string): string {
  return /^[\w@%+=:,./-]+$/.test(value) ? value : `'${value.replaceAll("'", "'\\''")}'`;
}

type Runner = (args: string[], options: { what: string; env?: NodeJS.ProcessEnv }) => Promise<void>;

/** Runs a build step, every output line to the log; a failure names the step and quotes the end of its output. */
function runLogged(args: string[], options: { what: string; log: (line: string) => void; signal?: AbortSignal; env?: NodeJS.ProcessEnv }): Promise<void> {
  const [command, ...rest] = args as [string, ...string[]];
  return new Promise((resolve, reject) => {
    if (options.signal?.aborted) {
      reject(options.signal.reason instanceof Error ? options.signal.reason : new Error('aborted'));
      return;
    }
    const child = spawn(command, rest, {
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
      env: options.env ?? { PATH: chrootPath, LANG: 'C.UTF-8' },
    });
    const tail: string[] = [];
    const onLine = (line: string) => {
      options.log(line);
      tail.push(line);
      if (tail.length > 20) tail.shift();
    };
    for (const stream of [child.stdout, child.stderr]) {
      let pending = '';
      stream.setEncoding('utf8');
      stream.on('data', (chunk: string) => {
        const lines = (pending + chunk).split(/\r?\n/);
        pending = lines.pop() ?? '';
        for (const line of lines) if (line.trim() !== '') onLine(line);
      });
      stream.on('end', () => {
        if (pending.trim() !== '') onLine(pending);
      });
    }
    const onAbort = () => {
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        // already gone
      }
    };
    options.signal?.addEventListener('abort', onAbort, { once: true });
    child.on('error', (error) => {
      options.signal?.removeEventListener('abort', onAbort);
      reject(new Error(`${options.what}: cannot run ${command}: ${error.message}`));
    });
    child.on('close', (code, signal) => {
      options.signal?.removeEventListener('abort', onAbort);
      if (options.signal?.aborted) reject(options.signal.reason instanceof Error ? options.signal.reason : new Error('aborted'));
      else if (code === 0) resolve();
      else reject(new Error(`${options.what} failed (${signal ?? `exit ${code}`}):\n${tail.join('\n')}`));
    });
  });
}
