// vitest globalSetup for the integration project: the tests run real sandboxes, so the rootfs must be built (fail
// fast with the fix instead of letting every test time out); and the docker and gvisor runtimes need a Docker engine:
// when none runs, one is started here for the whole run (test files run in parallel and share it) and stopped at the
// end. Where Docker is not installed or this is not root, the Docker tests skip themselves, saying why.
import { loadConfig } from '../src/config.ts';
import { errorMessage } from '../src/errors.ts';
import { ensureRootfs } from '../src/runtimes/image.ts';
import { dockerUnavailableReason, useDockerDaemon } from './helpers/docker-daemon.ts';

export default async function setup(): Promise<() => Promise<void>> {
  try {
    ensureRootfs(loadConfig());
  } catch (error) {
    throw new Error(`integration tests need the sandbox rootfs (${errorMessage(error)}): run scripts/setup.sh`, { cause: error });
  }
  if (dockerUnavailableReason() !== undefined) return async () => undefined;
  const daemon = await useDockerDaemon();
  return () => daemon.release();
}
