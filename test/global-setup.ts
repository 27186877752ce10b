// vitest globalSetup for the integration project: the tests run real sandboxes, so the rootfs must be built.
// Fail fast with the fix instead of letting every test time out.
import { loadConfig } from '../src/config.ts';
import { errorMessage } from '../src/errors.ts';
import { ensureRootfs } from '../src/runtimes/image.ts';

export default function setup(): void {
  try {
    ensureRootfs(loadConfig());
  } catch (error) {
    throw new Error(`integration tests need the sandbox rootfs (${errorMessage(error)}): run scripts/setup.sh`, { cause: error });
  }
}
