// Bundles sandboxd (src/sandboxd/main.ts and everything it imports, zod included) into one ESM file that any
// Node 24 inside a sandbox can run with no node_modules. The file is named by a hash of its content, so a sandbox
// image or a bind mount can hold several versions side by side and a changed sandboxd is never mistaken for an old
// one. Built once per process and output directory; written atomically, and only when absent.
import { createHash, randomBytes } from 'node:crypto';
import { access, mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { builtinModules } from 'node:module';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build, type Plugin } from 'esbuild';
import { sandboxNativeModulesDir } from './image.ts';

const entryPoint = fileURLToPath(new URL('../sandboxd/main.ts', import.meta.url));
/** The guest agent (runtimes/guest-agent/main.ts): bridges sandboxes reached through one byte stream. */
const guestAgentEntryPoint = fileURLToPath(new URL('./guest-agent/main.ts', import.meta.url));
/** The repository root: esbuild names sources relative to it in comments, so the output is the same from any cwd. */
const repositoryRoot = fileURLToPath(new URL('../..', import.meta.url));

// Bundled CommonJS dependencies call require(); ESM has none, so make one.
const banner = "import { createRequire } from 'module'; const require = createRequire(import.meta.url);";

/**
 * Native addons cannot go into the bundle (and one built on the host would not match the sandbox's glibc): the
 * image builds them at sandboxNativeModulesDir (/usr/local/lib/workcell/node_modules, see image/README.md), and
 * the bundle requires them from there at run time. `import ... from 'node-pty'` in sandboxd's source becomes such a
 * require, evaluated when the importing module first runs; use `await import('node-pty')` to load it lazily.
 */
const nativeModulesPlugin: Plugin = {
  name: 'workcell-native-modules',
  setup(pluginBuild) {
    pluginBuild.onResolve({ filter: /^node-pty$/ }, (args) => ({ path: args.path, namespace: 'workcell-native' }));
    pluginBuild.onLoad({ filter: /.*/, namespace: 'workcell-native' }, (args) => ({
      contents: `module.exports = require('node:module').createRequire(${JSON.stringify(`${sandboxNativeModulesDir}/`)})(${JSON.stringify(args.path)});`,
      loader: 'js',
    }));
  },
};

/**
 * Node's built-in modules through require(), not ESM imports: an ESM import of a built-in evaluates every export of it
 * at once (node:http's include undici's fetch and WebSocket), which was a fifth of sandboxd's start-up. A require()d
 * module's lazy exports stay lazy.
 */
const builtinsPlugin: Plugin = {
  name: 'workcell-builtins',
  setup(pluginBuild) {
    const names = new Set(builtinModules.flatMap((name) => [name, `node:${name}`]));
    pluginBuild.onResolve({ filter: /^[a-z_:/0-9]+$/ }, (args) => {
      if (!names.has(args.path)) return undefined;
      // The stand-in's own require() is Node's.
      return args.namespace === 'workcell-builtin' ? { path: args.path, external: true } : { path: args.path, namespace: 'workcell-builtin' };
    });
    pluginBuild.onLoad({ filter: /.*/, namespace: 'workcell-builtin' }, (args) => ({ contents: `module.exports = require(${JSON.stringify(args.path)});`, loader: 'js' }));
  },
};

/**
 * zod's messages in English only: zod's index bundles every language's (a third of sandboxd's bundle, parsed at each
 * start); sandboxd's errors are in English and never ask for another.
 */
const zodEnglishOnlyPlugin: Plugin = {
  name: 'workcell-zod-english',
  setup(pluginBuild) {
    pluginBuild.onResolve({ filter: /^\.\.\/locales\/index\.js$/ }, (args) =>
      /[/\\]zod[/\\]v4[/\\]classic[/\\]/.test(args.importer) ? { path: join(args.resolveDir, '../locales'), namespace: 'workcell-zod' } : undefined,
    );
    pluginBuild.onLoad({ filter: /.*/, namespace: 'workcell-zod' }, (args) => ({ contents: "export { default as en } from './en.js';", resolveDir: args.path, loader: 'js' }));
  },
};

const builds = new Map<string, Promise<string>>();

/** Builds the sandboxd bundle into `outDir` (unless it is there already) and returns the bundle's path. */
export function sandboxdBundle(outDir: string): Promise<string> {
  return bundleOnce(entryPoint, 'sandboxd', outDir);
}

/** Builds the guest agent's bundle into `outDir` (unless it is there already) and returns its path. */
export function guestAgentBundle(outDir: string): Promise<string> {
  return bundleOnce(guestAgentEntryPoint, 'guest-agent', outDir);
}

function bundleOnce(entry: string, name: string, outDir: string): Promise<string> {
  const key = `${name}\0${resolve(outDir)}`;
  let result = builds.get(key);
  if (result === undefined) {
    result = buildInto(entry, name, resolve(outDir));
    builds.set(key, result);
    // A failed build is not remembered: the next call tries again.
    result.catch(() => builds.delete(key));
  }
  return result;
}

async function buildInto(entry: string, name: string, outDir: string): Promise<string> {
  const output = await build({
    entryPoints: [entry],
    absWorkingDir: repositoryRoot,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node24',
    sourcemap: false,
    write: false,
    logLevel: 'silent',
    banner: { js: banner },
    plugins: [nativeModulesPlugin, builtinsPlugin, zodEnglishOnlyPlugin],
    // Less to parse at every start; names are kept, for stack traces in sandbox.log.
    minifyWhitespace: true,
    minifySyntax: true,
  });
  const file = output.outputFiles[0];
  if (file === undefined) throw new Error(`esbuild produced no output for ${entry}`);
  const hash = createHash('sha256').update(file.contents).digest('hex').slice(0, 12);
  const path = join(outDir, `${name}-${hash}.mjs`);
  try {
    await access(path);
    return path;
  } catch {
    // absent: write it
  }
  await mkdir(outDir, { recursive: true });
  const temporary = join(outDir, `.${name}-${hash}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  try {
    await writeFile(temporary, file.contents, { mode: 0o644 });
    await rename(temporary, path);
  } catch (error) {
    await rm(temporary, { force: true });
    throw error;
  }
  return path;
}
