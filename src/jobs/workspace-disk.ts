// A hard size limit for a job's workspace: the workspace lives on its own ext4 file system, in a sparse image file
// (jobs/<id>/workspace.ext4) of the job's disk_mb, loop-mounted over jobs/<id>/workspace before the sandbox starts.
// A sandbox that fills it gets ENOSPC at the limit and the host's disk loses at most disk_mb; everything on the host
// side (runtime, zipper, file API) keeps using the same path. When the job has ended (sandbox destroyed, zip made) the
// content is copied back into the plain directory and the image is unmounted and deleted.
// Mounting needs root. Without it there is no hard limit: attach() refuses (fail closed) unless the operator opted
// out of limits. This module never follows a link planted by the sandbox: cp -a copies links as links into a fresh,
// empty directory, and the image is mounted nosuid,nodev.
import { mkdir, readFile, realpath, rm, rmdir, stat, statfs } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { WorkcellError } from '../errors.ts';
import { findExecutable, runCommand } from '../runtimes/probe.ts';

export interface WorkspaceDiskPaths {
  workspace: string;
  /** The image file, beside the workspace. */
  workspaceImage: string;
}

const commandTimeoutMs = 120_000;
const mountOptions = 'loop,nosuid,nodev,noinit_itable';

export const noDiskLimitHint = 'set WORKCELL_UNSAFE_NO_LIMITS=1 to run without disk limits (not safe: a sandbox can fill the host disk)';

/** Why hard disk limits cannot be had here, or undefined when they can. */
export function workspaceDiskUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'per-job disk limits mount an ext4 image with a loop device, which needs root: run the server as root';
  for (const tool of ['mke2fs', 'mount', 'umount', 'cp']) if (findExecutable(tool) === undefined) return `${tool} not found (apt-get install e2fsprogs mount coreutils)`;
  return undefined;
}

/** Is `dir` a mount point (as this process's mount namespace sees it)? */
export async function isMountPoint(dir: string): Promise<boolean> {
  const real = await realpath(dir).catch(() => dir);
  const mountinfo = await readFile('/proc/self/mountinfo', 'utf8').catch(() => '');
  return mountinfo.split('\n').some((line) => unescapeMount(line.split(' ')[4] ?? '') === real);
}

function unescapeMount(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(Number.parseInt(octal, 8)));
}

async function run(tool: string, args: string[]): Promise<void> {
  const file = findExecutable(tool);
  if (file === undefined) throw new WorkcellError('sandbox_failed', `${tool} not found`);
  const result = await runCommand(file, args, { timeoutMs: commandTimeoutMs });
  if (!result.ok) throw new WorkcellError('sandbox_failed', `${tool} ${args.join(' ')} failed: ${result.stderr.trim() || `exit ${result.code}`}`);
}

/**
 * Puts the workspace on a disk of `sizeMb` (creating the image from what the workspace holds, e.g. uploaded inputs),
 * or re-mounts an image left by an earlier attempt of the job. Idempotent: an already mounted workspace is left as it
 * is. The file system's root keeps the directory's owner and mode; the runtime hands it to the sandbox user.
 */
export async function attachWorkspaceDisk(paths: WorkspaceDiskPaths, sizeMb: number): Promise<void> {
  const problem = workspaceDiskUnavailable();
  if (problem !== undefined) throw new WorkcellError('runtime_unavailable', `cannot limit the workspace's disk: ${problem}; or ${noDiskLimitHint}`);
  if (await isMountPoint(paths.workspace)) return;
  const existing = await stat(paths.workspaceImage).catch(() => undefined);
  if (existing === undefined) {
    // The image is sparse: it takes host disk only as the workspace fills. If the host could not hold a full one, a
    // sandbox filling its workspace would fill the host's disk first.
    const free = await statfs(dirname(paths.workspaceImage)).then((info) => info.bavail * info.bsize, () => undefined);
    if (free !== undefined && free < sizeMb * 1024 * 1024) {
      throw new WorkcellError('runtime_unavailable', `not enough free disk for the job's workspace: ${Math.floor(free / (1024 * 1024))} MB free where the job's disk is ${sizeMb} MB; free some space, or lower disk_mb (WORKCELL_DISK_MB)`);
    }
    try {
      // No journal (a scratch file system; saves up to 64 MB of the limit), no reserved blocks (all of it is the
      // agent's), inode tables left uninitialized and never zeroed (the sparse image stays small).
      await run('mke2fs', [
        '-q', '-t', 'ext4', '-m', '0', '-O', '^has_journal',
        '-E', 'lazy_itable_init=1,nodiscard',
        '-d', paths.workspace, '-F', paths.workspaceImage, `${sizeMb}M`,
      ]);
    } catch (error) {
      await rm(paths.workspaceImage, { force: true });
      throw error;
    }
  }
  await run('mount', ['-t', 'ext4', '-o', mountOptions, paths.workspaceImage, paths.workspace]);
  await rmdir(join(paths.workspace, 'lost+found')).catch(() => undefined);
}

/** Free bytes left to the sandbox on the workspace's file system. */
export async function workspaceFreeBytes(workspace: string): Promise<number | undefined> {
  const info = await statfs(workspace).catch(() => undefined);
  return info === undefined ? undefined : info.bavail * info.bsize;
}

/**
 * Ends the workspace's disk: copies its content back into the plain directory underneath, unmounts it and deletes the
 * image. Call once the sandbox is gone and the zip is made. A no-op when there is no image.
 */
export async function releaseWorkspaceDisk(paths: WorkspaceDiskPaths): Promise<void> {
  if ((await stat(paths.workspaceImage).catch(() => undefined)) === undefined) return;
  if (await isMountPoint(paths.workspace)) await run('umount', [paths.workspace]);
  const staging = `${paths.workspaceImage}.mnt`;
  await mkdir(staging, { recursive: true, mode: 0o700 });
  if (!(await isMountPoint(staging))) await run('mount', ['-t', 'ext4', '-o', `${mountOptions},ro,noexec`, paths.workspaceImage, staging]);
  try {
    // Replace what the directory held before the job (its inputs, now also in the image) with the final content.
    await rm(paths.workspace, { recursive: true, force: true });
    await mkdir(paths.workspace, { mode: 0o700 });
    await run('cp', ['-a', '--no-dereference', '--', `${staging}/.`, paths.workspace]);
  } finally {
    await run('umount', [staging]);
    await rmdir(staging);
  }
  await rm(paths.workspaceImage, { force: true });
}
