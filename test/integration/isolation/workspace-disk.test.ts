// The workspace's own disk (as root): made from what the workspace already holds, mounted over it, full at its size,
// and copied back as a plain directory afterwards, links kept as links and never followed.
import { chmod, lstat, mkdir, mkdtemp, readFile, readlink, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { attachWorkspaceDisk, isMountPoint, releaseWorkspaceDisk, workspaceFreeBytes } from '../../../src/jobs/workspace-disk.ts';

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

  it('refuses a disk the host could not hold', async () => {
    await expect(attachWorkspaceDisk(paths, 1 << 30)).rejects.toThrow(/not enough free disk for the job's workspace.*lower disk_mb/);
    expect(await isMountPoint(paths.workspace)).toBe(false);
    await expect(stat(paths.workspaceImage)).rejects.toThrow(/ENOENT/);
  });
});
