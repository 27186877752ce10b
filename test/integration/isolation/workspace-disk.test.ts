// The workspace's own disk (as root): made from what the workspace already holds, mounted over it, full at its size,
// and copied back as a plain directory afterwards, links kept as links and never followed; the same for the tmpfs
// fallback. Whether loop devices work is found out by mounting one, here (they do) and on a host without them (a
// mount namespace whose /dev has none, test/helpers/no-loop-devices.ts), where the check says what it costs.
import { chmod, chown, lstat, mkdir, mkdtemp, open, readdir, readFile, readlink, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { attachWorkspaceDisk, isMountPoint, loopDeviceProblem, mountType, releaseWorkspaceDisk, workspaceDiskCheck, workspaceFreeBytes } from '../../../src/jobs/workspace-disk.ts';
import { noLoopDevicesUnavailable, runWithoutLoopDevices } from '../../helpers/no-loop-devices.ts';

const run = async (command: string, args: string[]) => void execFileSync(command, args, { stdio: 'pipe' });

describe.runIf(process.getuid?.() === 0)('the workspace disk', () => {
  let root: string;
  let paths: { workspace: string; workspaceImage: string };
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'workcell-disk-'));
    paths = { workspace: join(root, 'workspace'), workspaceImage: join(root, 'workspace.ext4') };
    await mkdir(paths.workspace, { mode: 0o700 });
  });
  afterEach(async () => {
    await releaseWorkspaceDisk(paths).catch(() => undefined);
    await rm(root, { recursive: true, force: true });
  });

  it('starts with what the workspace held, is full at its size, and goes back to a plain directory with the final content', async () => {
    await mkdir(join(paths.workspace, 'input'));
    await writeFile(join(paths.workspace, 'input', 'data.csv'), 'a,b\n');
    await attachWorkspaceDisk(paths, 16);
    await attachWorkspaceDisk(paths, 16); // again: already mounted, nothing to do
    expect(await isMountPoint(paths.workspace)).toBe(true);
    expect(await readFile(join(paths.workspace, 'input', 'data.csv'), 'utf8')).toBe('a,b\n');
    await expect(stat(join(paths.workspace, 'lost+found'))).rejects.toThrow(/ENOENT/);
    const free = await workspaceFreeBytes(paths.workspace);
    expect(free).toBeGreaterThan(12 * 1024 * 1024);
    expect(free).toBeLessThanOrEqual(16 * 1024 * 1024);
    // The image is sparse: it holds about what was written, not its size.
    expect((await stat(paths.workspaceImage)).blocks * 512).toBeLessThan(4 * 1024 * 1024);

    await writeFile(join(paths.workspace, 'result.txt'), 'done\n');
    await symlink('/etc/shadow', join(paths.workspace, 'link-out'));
    await chmod(join(paths.workspace, 'result.txt'), 0o640);
    await releaseWorkspaceDisk(paths);
    expect(await isMountPoint(paths.workspace)).toBe(false);
    await expect(stat(paths.workspaceImage)).rejects.toThrow(/ENOENT/);
    expect(await readFile(join(paths.workspace, 'result.txt'), 'utf8')).toBe('done\n');
    expect((await stat(join(paths.workspace, 'result.txt'))).mode & 0o777).toBe(0o640);
    expect(await readFile(join(paths.workspace, 'input', 'data.csv'), 'utf8')).toBe('a,b\n');
    expect((await lstat(join(paths.workspace, 'link-out'))).isSymbolicLink()).toBe(true);
    expect(await readlink(join(paths.workspace, 'link-out'))).toBe('/etc/shadow');
    await releaseWorkspaceDisk(paths); // again: no image, nothing to do
  });

  it('is attached again whole after a release cut short (its worker killed while it copied the content out)', async () => {
    await attachWorkspaceDisk(paths, 16);
    await writeFile(join(paths.workspace, 'kept.txt'), 'in the image\n');
    // What release does up to the copy: the workspace unmounted, the image mounted read-only beside it, the directory
    // emptied. Then the worker died.
    const staging = `${paths.workspaceImage}.mnt`;
    await run('umount', [paths.workspace]);
    await mkdir(staging, { mode: 0o700 });
    await run('mount', ['-t', 'ext4', '-o', 'loop,ro,noexec', paths.workspaceImage, staging]);
    await rm(paths.workspace, { recursive: true, force: true });
    await mkdir(paths.workspace, { mode: 0o700 });
    await writeFile(join(paths.workspace, 'half-copied.txt'), 'x');

    await attachWorkspaceDisk(paths, 16);
    expect(await isMountPoint(staging)).toBe(false);
    expect(await readdir(paths.workspace)).toEqual(['kept.txt']);
    await writeFile(join(paths.workspace, 'after.txt'), 'writable\n');
    await releaseWorkspaceDisk(paths);
    expect((await readdir(paths.workspace)).sort()).toEqual(['after.txt', 'kept.txt']);
  });

  it.each(['loop', 'tmpfs'] as const)('%s: is released once a file the worker still had open there closes (a busy mount is waited for)', async (kind) => {
    await attachWorkspaceDisk(paths, 16, kind);
    await writeFile(join(paths.workspace, 'last.txt'), 'the zip read me last');
    // The zip's last file, its descriptor closed a moment after the read (the thread pool is busy on a loaded host).
    const handle = await open(join(paths.workspace, 'last.txt'), 'r');
    const closing = new Promise<void>((resolve) => setTimeout(() => void handle.close().then(resolve), 1000));
    await releaseWorkspaceDisk(paths);
    await closing;
    expect(await isMountPoint(paths.workspace)).toBe(false);
    expect(await readFile(join(paths.workspace, 'last.txt'), 'utf8')).toBe('the zip read me last');
  });

  it('tmpfs fallback: starts with what the workspace held, keeps its owner and mode, is full at its size, and goes back to a plain directory', async () => {
    await mkdir(join(paths.workspace, 'input'));
    await writeFile(join(paths.workspace, 'input', 'data.csv'), 'a,b\n');
    await chown(paths.workspace, 1000, 1000);
    await chmod(paths.workspace, 0o750);
    await attachWorkspaceDisk(paths, 16, 'tmpfs');
    await attachWorkspaceDisk(paths, 16, 'tmpfs'); // again: already mounted, nothing to do
    expect(await mountType(paths.workspace)).toBe('tmpfs');
    const root = await stat(paths.workspace);
    expect([root.uid, root.gid, root.mode & 0o7777]).toEqual([1000, 1000, 0o750]);
    expect(await readFile(join(paths.workspace, 'input', 'data.csv'), 'utf8')).toBe('a,b\n');
    // Full at 16 MB: a write past it fails with ENOSPC, and the host's disk is not touched (no image file).
    await expect(writeFile(join(paths.workspace, 'big'), Buffer.alloc(20 * 1024 * 1024))).rejects.toThrow(/ENOSPC/);
    expect(await workspaceFreeBytes(paths.workspace)).toBeLessThan(1024 * 1024);
    await expect(stat(paths.workspaceImage)).rejects.toThrow(/ENOENT/);
    await rm(join(paths.workspace, 'big'));

    await writeFile(join(paths.workspace, 'result.txt'), 'done\n');
    await symlink('/etc/shadow', join(paths.workspace, 'link-out'));
    await releaseWorkspaceDisk(paths);
    expect(await isMountPoint(paths.workspace)).toBe(false);
    expect(await readFile(join(paths.workspace, 'result.txt'), 'utf8')).toBe('done\n');
    expect(await readFile(join(paths.workspace, 'input', 'data.csv'), 'utf8')).toBe('a,b\n');
    expect(await readlink(join(paths.workspace, 'link-out'))).toBe('/etc/shadow');
    const after = await stat(paths.workspace);
    expect([after.uid, after.mode & 0o7777]).toEqual([1000, 0o750]);
    await releaseWorkspaceDisk(paths); // again: nothing mounted, nothing to do
  });

  it('refuses a disk the host could not hold', async () => {
    await expect(attachWorkspaceDisk(paths, 1 << 30)).rejects.toThrow(/not enough free disk for the job's workspace.*lower disk_mb/);
    expect(await isMountPoint(paths.workspace)).toBe(false);
    await expect(stat(paths.workspaceImage)).rejects.toThrow(/ENOENT/);
  });
});

describe.runIf(noLoopDevicesUnavailable() === undefined)('a host without loop devices', () => {
  const script = (body: string) => `import * as disk from ${JSON.stringify(join(import.meta.dirname, '../../../src/jobs/workspace-disk.ts'))};\n${body}`;
  let root: string;
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'workcell-loop-probe-'));
  });
  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('the probe mounts a real loop device where there are some (here), and says why not where there are none', async () => {
    expect(await loopDeviceProblem(root)).toBeUndefined();
    expect(await workspaceDiskCheck({ diskLimit: 'loop', unsafeNoLimits: false }, root)).toEqual({ ok: true, detail: expect.stringMatching(/^loop devices work/) });

    const checks = script(`
      const dir = ${JSON.stringify(root)};
      console.log(JSON.stringify({
        problem: await disk.loopDeviceProblem(dir),
        loop: await disk.workspaceDiskCheck({ diskLimit: 'loop', unsafeNoLimits: false }, dir),
        tmpfs: await disk.workspaceDiskCheck({ diskLimit: 'tmpfs', unsafeNoLimits: false }, dir),
        unsafe: await disk.workspaceDiskCheck({ diskLimit: 'loop', unsafeNoLimits: true }, dir),
      }));`);
    const result = await runWithoutLoopDevices([process.execPath, '--input-type=module', '-e', checks]);
    expect(result.code, result.stderr).toBe(0);
    type Check = { ok: boolean; detail: string };
    const seen = JSON.parse(result.stdout) as { problem: string; loop: Check; tmpfs: Check; unsafe: Check };
    expect(seen.problem).toMatch(/^mount -o loop failed: /);
    expect(seen.loop.ok).toBe(false);
    expect(seen.loop.detail).toMatch(/^no working loop devices \(mount -o loop failed: .*\): jobs cannot get their workspace disk limit/);
    expect(seen.loop.detail).toContain('set WORKCELL_DISK_LIMIT=tmpfs');
    expect(seen.loop.detail).toContain('WORKCELL_UNSAFE_NO_LIMITS=1');
    expect(seen.tmpfs).toEqual({ ok: true, detail: expect.stringMatching(/^WORKCELL_DISK_LIMIT=tmpfs: each job's workspace is a tmpfs of its disk_mb \(in memory, counted against the sandbox's memory limit.*; no working loop devices/) });
    expect(seen.unsafe).toEqual({ ok: true, detail: expect.stringMatching(/workspace disks NOT limited \(WORKCELL_UNSAFE_NO_LIMITS\)$/) });
    // The probes leave nothing behind.
    expect(await readdir(root)).toEqual([]);
  });
});
