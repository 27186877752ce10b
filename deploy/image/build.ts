// Builds the workcell server image (deploy/image/Dockerfile) without an image registry: its base is the sandbox rootfs
// imported into Docker (workcell-sandbox:rootfs-<hash>, imported here when the docker runtime has not done it yet).
// The build context is a tar made here of the checkout's files (git's list, or what is on disk without .git) that the server needs (bin/, src/ without its
// tests, image/, scripts/install-command.sh, package.json, package-lock.json), read from the work tree: never
// node_modules, tests or build output. The build itself fetches from the npm registry (npm ci --omit=dev) and the
// Debian mirror (bubblewrap).
//   node deploy/image/build.ts [-t workcell-server:<version>] [other docker build arguments]
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, lstatSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Docker from 'dockerode';
import tar from 'tar-stream';
import { loadConfig } from '../../src/config.ts';
import { ensureSandboxImage } from '../../src/runtimes/docker/docker-image.ts';
import { buildCaBundle, ensureRootfs } from '../../src/runtimes/image.ts';

const repositoryRoot = fileURLToPath(new URL('../..', import.meta.url));
const imageDir = fileURLToPath(new URL('.', import.meta.url));
const version = (JSON.parse(readFileSync(join(repositoryRoot, 'package.json'), 'utf8')) as { version: string }).version;
export const defaultServerImageTag = `workcell-server:${version}`;

/** What of the checkout goes into the image, as paths relative to its root (tracked files only). */
export function serverFiles(tracked: string[]): string[] {
  const wanted = (path: string) =>
    ['package.json', 'package-lock.json', 'scripts/install-command.sh'].includes(path) ||
    ((path.startsWith('bin/') || path.startsWith('src/') || path.startsWith('image/')) && !path.endsWith('.test.ts') && !path.startsWith('image/dist/'));
  return tracked.filter(wanted).sort();
}

/**
 * The checkout's files, relative to `root`: git's list in a git checkout; else (a copy without .git, a release
 * tarball: seen on a fresh machine) every regular file on disk under the folders the image takes from.
 */
export function checkoutFiles(root = repositoryRoot): string[] {
  try {
    const output = execFileSync('git', ['ls-files', '-z'], { cwd: root, encoding: 'utf8', maxBuffer: 64 << 20, stdio: ['ignore', 'pipe', 'ignore'] });
    return output.split('\0').filter((path) => path !== '');
  } catch {
    const files: string[] = [];
    for (const top of ['bin', 'src', 'image', 'scripts']) {
      let names: string[];
      try {
        names = readdirSync(join(root, top), { recursive: true, encoding: 'utf8' });
      } catch {
        continue;
      }
      for (const name of names) if (lstatSync(join(root, top, name)).isFile()) files.push(`${top}/${name}`);
    }
    return [...files, ...['package.json', 'package-lock.json'].filter((name) => existsSync(join(root, name)))];
  }
}

/** The build context as a tar: the Dockerfile, the entry point, the CA bundle, and app/ (the checkout's files). */
async function buildContext(): Promise<Buffer> {
  const pack = tar.pack();
  const add = (name: string, content: Buffer, mode: number) => pack.entry({ name, mode, mtime: new Date(0) }, content);
  add('Dockerfile', readFileSync(join(imageDir, 'Dockerfile')), 0o644);
  add('entrypoint.sh', readFileSync(join(imageDir, 'entrypoint.sh')), 0o755);
  const caBundle = buildCaBundle();
  add('build-ca.crt', caBundle === undefined ? Buffer.alloc(0) : readFileSync(caBundle), 0o644);
  for (const path of ['package.json', 'package-lock.json']) add(path, readFileSync(join(repositoryRoot, path)), 0o644);
  for (const path of serverFiles(checkoutFiles())) {
    const file = join(repositoryRoot, path);
    let mode: number;
    try {
      mode = statSync(file).mode & 0o777;
    } catch {
      continue; // tracked, but deleted in the work tree
    }
    add(`app/${path}`, readFileSync(file), mode & 0o111 ? 0o755 : 0o644);
  }
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const chunk of pack) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

export interface BuildOptions {
  tag?: string;
  /** More `docker build` arguments. */
  args?: string[];
  /** Where docker's output goes (default: inherited). */
  output?: 'inherit' | ((chunk: string) => void);
}

/** Builds the image; resolves with its tag, rejects with docker's last output when the build fails. */
export async function buildServerImage(options: BuildOptions = {}): Promise<string> {
  const tag = options.tag ?? defaultServerImageTag;
  const config = loadConfig();
  const rootfsName = basename(ensureRootfs(config));
  const log = (message: string) => (options.output === 'inherit' || options.output === undefined ? process.stderr.write(`${message}\n`) : options.output(`${message}\n`));
  const base = await ensureSandboxImage(new Docker(), config, log);
  const registry = process.env.npm_config_registry;
  const args = [
    'build',
    '--force-rm', // no container left behind by a step that fails
    '--tag', tag,
    '--build-arg', `BASE=${base}`,
    '--build-arg', `ROOTFS_NAME=${rootfsName}`,
    ...(registry === undefined || registry === '' ? [] : ['--build-arg', `NPM_REGISTRY=${registry}`]),
    ...(options.args ?? []),
    '-',
  ];
  log(`docker ${args.join(' ')}`);
  const inherit = options.output === 'inherit' || options.output === undefined;
  const child = spawn('docker', args, { stdio: ['pipe', inherit ? 'inherit' : 'pipe', inherit ? 'inherit' : 'pipe'] });
  let tail = '';
  const collect = (chunk: Buffer) => {
    const text = chunk.toString('utf8');
    tail = (tail + text).slice(-8000);
    if (typeof options.output === 'function') options.output(text);
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  const exited = new Promise<number | null>((resolve, reject) => {
    child.on('error', (error) => reject(new Error(`cannot run docker: ${error.message} (install Docker, e.g. apt-get install docker.io)`)));
    child.on('close', (code) => resolve(code));
  });
  child.stdin?.end(await buildContext());
  const code = await exited;
  if (code !== 0) throw new Error(`docker build failed (exit ${code}):\n${tail}`);
  return tag;
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  const argv = process.argv.slice(2);
  const tagIndex = argv.findIndex((argument) => argument === '-t' || argument === '--tag');
  const tag = tagIndex < 0 ? undefined : argv[tagIndex + 1];
  const rest = tagIndex < 0 ? argv : [...argv.slice(0, tagIndex), ...argv.slice(tagIndex + 2)];
  buildServerImage({ tag, args: rest, output: 'inherit' }).then(
    (built) => process.stderr.write(`built ${built}\n`),
    (error: unknown) => {
      process.stderr.write(`${error instanceof Error ? error.message : String(error)}\n`);
      process.exitCode = 1;
    },
  );
}
