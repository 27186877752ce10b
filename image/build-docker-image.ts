// Builds the sandbox's Docker image (image/Dockerfile): bundles sandboxd into image/dist/ (named by its content, so
// several versions can sit side by side), puts this host's CA bundle beside it for the build's downloads (see
// post-install.sh), then runs `docker build` on the image/ context with that bundle. Every argument goes to docker
// build as it is:
//   node image/build-docker-image.ts -t workcell-sandbox [--build-arg BASE=debian:bookworm-slim] ...
// docker's output is passed through; the exit code is docker's.
import { spawn } from 'node:child_process';
import { copyFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { errorMessage } from '../src/errors.ts';
import { buildCaBundle } from '../src/runtimes/image.ts';
import { sandboxdBundle } from '../src/runtimes/sandboxd-bundle.ts';

const context = fileURLToPath(new URL('.', import.meta.url));

try {
  const bundle = await sandboxdBundle(join(context, 'dist'));
  const caBundle = buildCaBundle();
  if (caBundle !== undefined) await copyFile(caBundle, join(context, 'dist', 'build-ca.crt'));
  // The Node of this host, as the rootfs builder copies it in, and its npm registry (the arguments given here win).
  const registry = process.env.npm_config_registry;
  const args = [
    'build',
    '--build-arg', `SANDBOXD_BUNDLE=dist/${basename(bundle)}`,
    '--build-arg', `NODE_VERSION=${process.versions.node}`,
    ...(registry === undefined || registry === '' ? [] : ['--build-arg', `NPM_REGISTRY=${registry}`]),
    ...process.argv.slice(2),
    context,
  ];
  process.stderr.write(`docker ${args.join(' ')}\n`);
  const child = spawn('docker', args, { stdio: 'inherit' });
  child.on('error', (error) => {
    process.stderr.write(`cannot run docker: ${error.message} (install Docker, e.g. apt-get install docker.io)\n`);
    process.exitCode = 1;
  });
  child.on('exit', (code, signal) => {
    process.exitCode = code ?? (signal === null ? 1 : 128);
  });
} catch (error) {
  process.stderr.write(`building the sandboxd bundle failed: ${errorMessage(error)}\n`);
  process.exitCode = 1;
}
