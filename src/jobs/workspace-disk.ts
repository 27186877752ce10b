// A hard size limit for a job's workspace: the workspace lives on its own ext4 file system, in a sparse image file
// (jobs/<id>/workspace.ext4) of the job's disk_mb, loop-mounted over jobs/<id>/workspace before the sandbox starts.
// A sandbox that fills it gets ENOSPC at the limit and the host's disk loses at most disk_mb; everything on the host
// side (runtime, zipper, file API) keeps using the same path. When the job has ended (sandbox destroyed, zip made) the
// content is copied back into the plain directory and the image is unmounted and deleted.
// Where loop devices do not work (a container, a Kubernetes pod) the operator may choose a size-limited tmpfs instead
// (WORKCELL_DISK_LIMIT=tmpfs): the same ENOSPC at disk_mb, but the content is in memory, charged to the memory limit of
// the sandbox that writes it (and the host's RAM), and gone if the host restarts before it is copied back.
// Mounting needs root. Without it there is no hard limit: attach() refuses (fail closed) unless the operator opted
// out of limits; the server checks at start-up that the chosen kind works (workspaceDiskCheck). This module never
// follows a link planted by the sandbox: cp -a copies links as links into a fresh, empty directory, and the file
// systems are mounted nosuid,nodev.
import { mkdir, mkdtemp, rename, rm, rmdir, stat, statfs } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import type { Config } from '../config.ts';
import { WorkcellError } from '../errors.ts';
import { findExecutable, runCommand } from '../runtimes/probe.ts';
import { isMountPoint, mountType } from '../util/mounts.ts';

export { isMountPoint, mountType };

/** How a workspace gets its size limit (WORKCELL_DISK_LIMIT). */
export type WorkspaceDiskKind = Config['diskLimit'];

/** The workspace's limit as a job's isolation report says it. */
export function describeWorkspaceDisk(kind: WorkspaceDiskKind, sizeMb: number): string {
  return kind === 'loop'
    ? `workspace disk ${sizeMb} MB (ext4 on a loop device)`
    : `workspace disk ${sizeMb} MB (tmpfs: in memory, counted against the memory limit)`;
}

export interface WorkspaceDiskPaths {
  workspace: string;
  /** The image file, beside the workspace. */
  workspaceImage: string;
}

const commandTimeoutMs = 120_000;
/** How long a busy workspace mount is waited for at its release. */
const busyUnmountMs = 10_000;
const mountOptions = 'loop,nosuid,nodev,noinit_itable';

export const noDiskLimitHint = 'set WORKCELL_UNSAFE_NO_LIMITS=1 to run without disk limits (not safe: a sandbox can fill the host disk)';
const noLoopHint =
  'Give the server loop devices (a host or VM has them; a container needs /dev/loop-control and /dev/loop* devices, e.g. docker run --device /dev/loop-control --device /dev/loop0 ..., or a privileged pod), ' +
  'or set WORKCELL_DISK_LIMIT=tmpfs to put each workspace on a size-limited tmpfs (its content in memory, counted against the sandbox\'s memory limit)';

/** Why hard disk limits cannot be had here, or undefined when they can (root and the tools; not whether mounts work). */
export function workspaceDiskUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'per-job disk limits mount a file system over each workspace (an ext4 image on a loop device, or a tmpfs), which needs root: run the server as root';
  for (const tool of ['mke2fs', 'mount', 'umount', 'cp']) if (findExecutable(tool) === undefined) return `${tool} not found (apt-get install e2fsprogs mount coreutils)`;
  return undefined;
}

/**
 * Do loop devices work here? Mounts a 1 MB ext4 image with `-o loop` in a scratch directory under `dir`, exactly as a
 * job's workspace is mounted, and takes it down again. Returns why not (mount's own words), or undefined.
 */
export async function loopDeviceProblem(dir: string): Promise<string | undefined> {
  const unavailable = workspaceDiskUnavailable();
  if (unavailable !== undefined) return unavailable;
  await mkdir(dir, { recursive: true });
  const scratch = await mkdtemp(join(dir, '.loop-probe-'));
  const image = join(scratch, 'probe.ext4');
  const mountPoint = join(scratch, 'mnt');
  try {
    await mkdir(mountPoint);
    const made = await runCommand(findExecutable('mke2fs')!, ['-q', '-t', 'ext4', '-O', '^has_journal', '-F', image, '1M'], { timeoutMs: commandTimeoutMs });
    if (!made.ok) return `mke2fs failed: ${made.stderr.trim()}`;
    const mounted = await runCommand(findExecutable('mount')!, ['-t', 'ext4', '-o', `${mountOptions},ro,noexec`, image, mountPoint], { timeoutMs: commandTimeoutMs });
    if (!mounted.ok) return `mount -o loop failed: ${mounted.stderr.trim() || `exit ${mounted.code}`}`;
    await run('umount', [mountPoint]);
    return undefined;
  } finally {
    if (await isMountPoint(mountPoint)) await runCommand(findExecutable('umount')!, ['-l', mountPoint]);
    await rm(scratch, { recursive: true, force: true });
  }
}

/** Does a size-limited tmpfs mount here (the fallback where loop devices do not)? Why not, or undefined. */
export async function tmpfsProblem(dir: string): Promise<string | undefined> {
  const unavailable = workspaceDiskUnavailable();
  if (unavailable !== undefined) return unavailable;
  await mkdir(dir, { recursive: true });
  const scratch = await mkdtemp(join(dir, '.tmpfs-probe-'));
  try {
    const mounted = await runCommand(findExecutable('mount')!, ['-t', 'tmpfs', '-o', 'size=1m,nosuid,nodev,noexec', 'workcell-probe', scratch], { timeoutMs: commandTimeoutMs });
    if (!mounted.ok) return `mount -t tmpfs failed: ${mounted.stderr.trim() || `exit ${mounted.code}`}`;
    await run('umount', [scratch]);
    return undefined;
  } finally {
    if (await isMountPoint(scratch)) await runCommand(findExecutable('umount')!, ['-l', scratch]);
    await rm(scratch, { recursive: true, force: true });
  }
}

export interface WorkspaceDiskCheck {
  /** What jobs get, for the start-up log and doctor; or why they cannot get it and what to do. */
  ok: boolean;
  detail: string;
}

/**
 * Can jobs get the workspace disk limit the configuration asks for? Tries it (a real mount under `dir`). Where loop
 * devices are missing, says what that costs and the ways out; with WORKCELL_DISK_LIMIT=tmpfs, what the fallback costs.
 */
export async function workspaceDiskCheck(config: { diskLimit: WorkspaceDiskKind; unsafeNoLimits: boolean }, dir: string): Promise<WorkspaceDiskCheck> {
  const unavailable = workspaceDiskUnavailable();
  if (unavailable !== undefined) {
    return config.unsafeNoLimits
      ? { ok: true, detail: `workspace disks NOT limited (WORKCELL_UNSAFE_NO_LIMITS): ${unavailable}` }
      : { ok: false, detail: `${unavailable}; or ${noDiskLimitHint}` };
  }
  const loop = await loopDeviceProblem(dir);
  if (config.diskLimit === 'loop') {
    if (loop === undefined) return { ok: true, detail: 'loop devices work: each job\'s workspace is an ext4 image of its disk_mb on a loop device' };
    const cost = `no working loop devices (${loop}): jobs cannot get their workspace disk limit (an ext4 image on a loop device)`;
    return config.unsafeNoLimits
      ? { ok: true, detail: `${cost}; workspace disks NOT limited (WORKCELL_UNSAFE_NO_LIMITS)` }
      : { ok: false, detail: `${cost}. ${noLoopHint}; or ${noDiskLimitHint}` };
  }
  const tmpfs = await tmpfsProblem(dir);
  const loopNote = loop === undefined ? 'loop devices work too (WORKCELL_DISK_LIMIT=loop keeps workspaces out of memory)' : `no working loop devices (${loop})`;
  if (tmpfs !== undefined) return { ok: config.unsafeNoLimits, detail: `WORKCELL_DISK_LIMIT=tmpfs, but a tmpfs cannot be mounted (${tmpfs}); ${loopNote}${config.unsafeNoLimits ? '; workspace disks NOT limited (WORKCELL_UNSAFE_NO_LIMITS)' : `; or ${noDiskLimitHint}`}` };
  return { ok: true, detail: `WORKCELL_DISK_LIMIT=tmpfs: each job's workspace is a tmpfs of its disk_mb (in memory, counted against the sandbox's memory limit and the host's RAM; lost if the host restarts while a job runs); ${loopNote}` };
}

async function run(tool: string, args: string[]): Promise<void> {
  const file = findExecutable(tool);
  if (file === undefined) throw new WorkcellError('sandbox_failed', `${tool} not found`);
  const result = await runCommand(file, args, { timeoutMs: commandTimeoutMs });
  if (!result.ok) throw new WorkcellError('sandbox_failed', `${tool} ${args.join(' ')} failed: ${result.stderr.trim() || `exit ${result.code}`}`);
}

/**
 * umount, tried again while the mount is busy: a descriptor the worker itself just used there (the zip's last file,
 * whose close the thread pool may still be running on a busy host) is closed a moment later. Seen: the release failing
 * with "target is busy" under load, the job ending with its workspace still mounted.
 */
async function unmount(target: string): Promise<void> {
  const deadline = Date.now() + busyUnmountMs;
  for (;;) {
    const result = await runCommand(findExecutable('umount')!, [target], { timeoutMs: commandTimeoutMs });
    if (result.ok) return;
    if (!/busy/i.test(result.stderr) || Date.now() > deadline) throw new WorkcellError('sandbox_failed', `umount ${target} failed: ${result.stderr.trim() || `exit ${result.code}`}`);
    await delay(100);
  }
}

/**
 * Puts the workspace on a disk of `sizeMb` (creating the image from what the workspace holds, e.g. uploaded inputs),
 * or re-mounts an image left by an earlier attempt of the job. Idempotent: an already mounted workspace is left as it
 * is. The file system's root keeps the directory's owner and mode; the runtime hands it to the sandbox user.
 */
export async function attachWorkspaceDisk(paths: WorkspaceDiskPaths, sizeMb: number, kind: WorkspaceDiskKind = 'loop'): Promise<void> {
  const problem = workspaceDiskUnavailable();
  if (problem !== undefined) throw new WorkcellError('runtime_unavailable', `cannot limit the workspace's disk: ${problem}; or ${noDiskLimitHint}`);
  // A release cut short (its worker died while it copied the final content out): the image, still there, holds the
  // workspace; its read-only staging mount goes first, or the image would be mounted again on the same loop device,
  // read-only.
  const staging = stagingPath(paths);
  if (await isMountPoint(staging)) await run('umount', [staging]);
  await rmdir(staging).catch(() => undefined);
  if (await isMountPoint(paths.workspace)) return;
  if (kind === 'tmpfs') return attachWorkspaceTmpfs(paths.workspace, sizeMb);
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
  const mounted = await runCommand(findExecutable('mount')!, ['-t', 'ext4', '-o', mountOptions, paths.workspaceImage, paths.workspace], { timeoutMs: commandTimeoutMs });
  if (!mounted.ok) {
    throw new WorkcellError('sandbox_failed', `cannot mount the workspace's disk: mount -o loop failed: ${mounted.stderr.trim() || `exit ${mounted.code}`}. ${noLoopHint}; or ${noDiskLimitHint}`);
  }
  await rmdir(join(paths.workspace, 'lost+found')).catch(() => undefined);
}

/**
 * The tmpfs fallback: a tmpfs of `sizeMb` (and inodes in proportion, as ext4 has) over the workspace, with its
 * owner and mode, holding what the directory held (moved aside first, then copied in: a mount would hide it).
 */
async function attachWorkspaceTmpfs(workspace: string, sizeMb: number): Promise<void> {
  const info = await stat(workspace);
  const before = join(dirname(workspace), `.${basename(workspace)}-before-tmpfs`);
  await rm(before, { recursive: true, force: true });
  await rename(workspace, before);
  await mkdir(workspace, { mode: 0o700 });
  const options = [`size=${sizeMb}m`, `nr_inodes=${Math.max(1024, sizeMb * 64)}`, `mode=${(info.mode & 0o7777).toString(8)}`, `uid=${info.uid}`, `gid=${info.gid}`, 'nosuid', 'nodev'];
  try {
    await run('mount', ['-t', 'tmpfs', '-o', options.join(','), 'workcell-workspace', workspace]);
    try {
      await run('cp', ['-a', '--no-dereference', '--', `${before}/.`, workspace]);
    } catch (error) {
      await run('umount', [workspace]);
      throw error;
    }
  } catch (error) {
    await rmdir(workspace).catch(() => undefined);
    await rename(before, workspace);
    throw error;
  }
  await rm(before, { recursive: true, force: true });
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
/** Where release mounts the image read-only to copy the final content out. */
const stagingPath = (paths: WorkspaceDiskPaths) => `${paths.workspaceImage}.mnt`;

export async function releaseWorkspaceDisk(paths: WorkspaceDiskPaths): Promise<void> {
  if ((await mountType(paths.workspace)) === 'tmpfs') return releaseWorkspaceTmpfs(paths.workspace);
  if ((await stat(paths.workspaceImage).catch(() => undefined)) === undefined) return;
  if (await isMountPoint(paths.workspace)) await unmount(paths.workspace);
  const staging = stagingPath(paths);
  await mkdir(staging, { recursive: true, mode: 0o700 });
  if (!(await isMountPoint(staging))) {
    try {
      await run('mount', ['-t', 'ext4', '-o', `${mountOptions},ro,noexec`, paths.workspaceImage, staging]);
    } catch (error) {
      // No loop device free (or another failure): the image goes back over the workspace, so readers (zip, diff, file
      // routes) never see what the directory held before the job; the next release tries again.
      await run('mount', ['-t', 'ext4', '-o', mountOptions, paths.workspaceImage, paths.workspace]).catch(() => undefined);
      await rmdir(staging).catch(() => undefined);
      throw error;
    }
  }
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

/** The tmpfs fallback's end: its content copied into a fresh directory beside it (on the data disk), then it goes. */
async function releaseWorkspaceTmpfs(workspace: string): Promise<void> {
  const staging = join(dirname(workspace), `.${basename(workspace)}-from-tmpfs`);
  await rm(staging, { recursive: true, force: true });
  await mkdir(staging, { mode: 0o700 });
  try {
    await run('cp', ['-a', '--no-dereference', '--', `${workspace}/.`, staging]);
    await unmount(workspace);
  } catch (error) {
    await rm(staging, { recursive: true, force: true });
    throw error;
  }
  await rm(workspace, { recursive: true, force: true });
  await rename(staging, workspace);
}
