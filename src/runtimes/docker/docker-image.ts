// The sandbox image for the docker and gvisor runtimes. Where the operator built one from image/Dockerfile
// (image/build-docker-image.ts, which needs a registry for its base) and named it in WORKCELL_DOCKER_IMAGE, that one;
// otherwise the debootstrap rootfs that bwrap uses, imported once (`tar | docker import`, 20-50 s) and tagged with its
// recipe hash, so it is kept between runs and a changed recipe imports a new one. Both have the same packages; the
// runtime binds the current sandboxd and guest agent into every container, so neither needs rebuilding when they
// change.
import { spawn } from 'node:child_process';
import type Docker from 'dockerode';
import type { Config } from '../../config.ts';
import { WorkcellError, errorMessage } from '../../errors.ts';
import { ensureRootfs, rootfsRecipeHash } from '../image.ts';

export const importedImageRepository = 'workcell-sandbox';

/** The tag of the imported rootfs for the current recipe. */
export function importedImageTag(): string {
  return `${importedImageRepository}:rootfs-${rootfsRecipeHash().slice(0, 16)}`;
}

const imports = new Map<string, Promise<string>>();

async function imageExists(docker: Docker, name: string): Promise<boolean> {
  try {
    await docker.getImage(name).inspect();
    return true;
  } catch {
    return false;
  }
}

/** The image to run; imports the rootfs on first use (once per process, however many sandboxes ask at once). */
export async function ensureSandboxImage(docker: Docker, config: Pick<Config, 'imageDir' | 'dockerImage'>, log?: (message: string) => void): Promise<string> {
  if (config.dockerImage !== undefined) {
    if (!(await imageExists(docker, config.dockerImage))) {
      throw new WorkcellError('runtime_unavailable', `the Docker image ${config.dockerImage} (WORKCELL_DOCKER_IMAGE) does not exist: build it with \`node image/build-docker-image.ts -t ${config.dockerImage}\`, or unset WORKCELL_DOCKER_IMAGE to import the rootfs`);
    }
    return config.dockerImage;
  }
  const tag = importedImageTag();
  if (await imageExists(docker, tag)) return tag;
  let pending = imports.get(tag);
  if (pending === undefined) {
    pending = importRootfs(docker, ensureRootfs(config), tag, log);
    imports.set(tag, pending);
    pending.catch(() => imports.delete(tag));
  }
  return pending;
}

async function importRootfs(docker: Docker, rootfs: string, tag: string, log?: (message: string) => void): Promise<string> {
  const started = Date.now();
  log?.(`importing the sandbox rootfs ${rootfs} into Docker as ${tag} (once; about half a minute)`);
  const tar = spawn('tar', ['-C', rootfs, '--numeric-owner', '-c', '.'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let tarError = '';
  tar.stderr.on('data', (chunk: Buffer) => (tarError += chunk.toString('utf8')));
  const tarExit = new Promise<number | null>((resolve) => tar.on('close', (code) => resolve(code)));
  const [repo, imageTag] = tag.split(':') as [string, string];
  try {
    const progress = await docker.importImage(tar.stdout, { repo, tag: imageTag });
    await new Promise<void>((resolve, reject) => {
      docker.modem.followProgress(progress, (error: Error | null) => (error ? reject(error) : resolve()));
    });
  } catch (error) {
    tar.kill('SIGKILL');
    throw new WorkcellError('runtime_unavailable', `importing the sandbox rootfs into Docker failed: ${errorMessage(error)}`, { cause: error });
  }
  const code = await tarExit;
  if (code !== 0) throw new WorkcellError('runtime_unavailable', `tar of the sandbox rootfs failed (exit ${code}): ${tarError.trim()}`);
  log?.(`imported ${tag} in ${Math.round((Date.now() - started) / 1000)} s`);
  return tag;
}
