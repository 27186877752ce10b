// Builds the sandbox rootfs without the CLI: `node image/build-rootfs.ts [--force]` (as root). The same as
// `workcell image build`; the build itself is src/runtimes/image.ts. Progress goes to stderr, the path to stdout.
import { loadConfig } from '../src/config.ts';
import { errorMessage } from '../src/errors.ts';
import { buildRootfs } from '../src/runtimes/image.ts';

const started = Date.now();
try {
  const path = await buildRootfs(loadConfig(), {
    log: (line) => process.stderr.write(`[${((Date.now() - started) / 1000).toFixed(1)}s] ${line}\n`),
    force: process.argv.includes('--force'),
  });
  process.stdout.write(`${path}\n`);
} catch (error) {
  process.stderr.write(`rootfs build failed: ${errorMessage(error)}\n`);
  process.exitCode = 1;
}
