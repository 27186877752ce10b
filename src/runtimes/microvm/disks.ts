// The microVM's disks. The rootfs: the same debootstrap tree as bwrap's, as an ext4 image (mke2fs -d, no journal),
// made once per rootfs hash and attached read-only to every VM (the guest puts a tmpfs overlay on it). The workspace:
// a fresh ext4 image of the job's disk limit per sandbox, filled from the host's workspace directory, attached
// read-write; when the VM is gone its content is copied back into the directory for the zip. There is no file share:
// this QEMU has no virtiofsd and the cloud kernel no 9p, and Firecracker has neither.
// The copy back never mounts the image in the host's kernel (the guest wrote it and may have crafted it to attack
// the host's ext4 driver): debugfs (user space) reads it, jailed in bwrap as the unprivileged sandbox user with only
// the staging directory writable, so even a debugfs bug can write nowhere else.
import { existsSync } from 'node:fs';
import { chown, mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { WorkcellError } from '../../errors.ts';
import { bwrapCommand, findExecutable, runCommand, type BwrapHost } from '../probe.ts';

const mke2fsTimeoutMs = 300_000;

function mke2fs(): string {
  const path = findExecutable('mke2fs');
  if (path === undefined) throw new WorkcellError('runtime_unavailable', 'mke2fs not found: apt-get install e2fsprogs');
  return path;
}

const rootfsImages = new Map<string, Promise<string>>();

/** The rootfs as an ext4 image, made once per rootfs directory (whose name carries the recipe hash). */
export function ensureRootfsImage(rootfs: string, cacheDir: string): Promise<string> {
  const path = join(cacheDir, `${rootfs.split('/').at(-1)}.ext4`);
  let pending = rootfsImages.get(path);
  if (pending === undefined) {
    pending = makeRootfsImage(rootfs, path);
    rootfsImages.set(path, pending);
    pending.catch(() => rootfsImages.delete(path));
  }
  return pending;
}

async function makeRootfsImage(rootfs: string, path: string): Promise<string> {
  if (existsSync(path)) return path;
  await mkdir(join(path, '..'), { recursive: true, mode: 0o755 });
  const du = await runCommand('du', ['-s', '--block-size=1M', rootfs], { timeoutMs: 120_000 });
  const usedMb = Number(du.stdout.split(/\s/)[0]);
  if (!du.ok || !(usedMb > 0)) throw new WorkcellError('runtime_unavailable', `cannot size the rootfs ${rootfs}: ${du.stderr.trim()}`);
  const sizeMb = Math.ceil(usedMb * 1.3) + 256;
  const temporary = `${path}.${process.pid}.tmp`;
  // No journal (read-only in every VM), one inode per 4 KiB (node_modules are many small files).
  const result = await runCommand(mke2fs(), ['-q', '-t', 'ext4', '-L', 'workcell-root', '-O', '^has_journal', '-m', '0', '-i', '4096', '-E', 'lazy_itable_init=1,nodiscard', '-d', rootfs, '-F', temporary, `${sizeMb}M`], { timeoutMs: mke2fsTimeoutMs });
  if (!result.ok) {
    await rm(temporary, { force: true });
    throw new WorkcellError('runtime_unavailable', `cannot make the microVM rootfs disk: ${result.stderr.trim()}`);
  }
  await rename(temporary, path);
  return path;
}

/** A sparse ext4 image of `sizeMb` holding what the workspace directory holds, owned by the VMM's user. */
export async function createWorkspaceImage(options: { workspace: string; image: string; sizeMb: number; owner: { uid: number; gid: number } | undefined }): Promise<void> {
  const result = await runCommand(
    mke2fs(),
    ['-q', '-t', 'ext4', '-L', 'workcell-ws', '-O', '^has_journal', '-m', '0', '-E', 'lazy_itable_init=1,nodiscard,root_owner=1000:1000', '-d', options.workspace, '-F', options.image, `${options.sizeMb}M`],
    { timeoutMs: mke2fsTimeoutMs },
  );
  if (!result.ok) throw new WorkcellError('sandbox_failed', `cannot make the microVM's workspace disk: ${result.stderr.trim()}`);
  if (options.owner !== undefined) await chown(options.image, options.owner.uid, options.owner.gid);
}

/**
 * Replaces the workspace directory's content with the workspace image's: debugfs `rdump` in a bwrap jail into a
 * staging directory inside the workspace (same file system, so the entries are renamed into place, not copied).
 */
export async function copyWorkspaceBack(options: { image: string; workspace: string; bwrap: BwrapHost }): Promise<void> {
  const debugfs = findExecutable('debugfs');
  if (debugfs === undefined) throw new WorkcellError('sandbox_failed', 'debugfs not found (apt-get install e2fsprogs): the microVM workspace cannot be copied back');
  const staging = join(options.workspace, `.workcell-restore-${process.pid}-${Date.now()}`);
  await mkdir(staging, { mode: 0o700 });
  const owner = options.bwrap.sandboxUser;
  if (owner !== undefined) await chown(staging, owner.uid, owner.gid);
  try {
    const [file, ...prefix] = bwrapCommand(options.bwrap) as [string, ...string[]];
    const result = await runCommand(
      file,
      [
        ...prefix,
        '--unshare-all', '--die-with-parent', '--new-session', '--cap-drop', 'ALL',
        '--ro-bind', '/', '/', '--dev', '/dev', '--proc', '/proc', '--tmpfs', '/tmp',
        '--ro-bind', options.image, '/tmp/workspace.img', '--bind', staging, '/tmp/out',
        '--', debugfs, '-R', 'rdump / /tmp/out', '/tmp/workspace.img',
      ],
      { timeoutMs: 600_000, env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' } },
    );
    if (!result.ok) throw new WorkcellError('sandbox_failed', `copying the microVM workspace back failed: ${result.stderr.trim().slice(-2000)}`);
    await rm(join(staging, 'lost+found'), { recursive: true, force: true });
    const stagingName = staging.split('/').at(-1);
    for (const entry of await readdir(options.workspace)) if (entry !== stagingName) await rm(join(options.workspace, entry), { recursive: true, force: true });
    for (const entry of await readdir(staging)) await rename(join(staging, entry), join(options.workspace, entry));
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}

/** Size of a file's allocated blocks (the host disk a sparse image takes). */
export async function allocatedBytes(path: string): Promise<number | undefined> {
  const info = await stat(path).catch(() => undefined);
  return info === undefined ? undefined : info.blocks * 512;
}
