// The run directory is used only when no one but the server's user can change it (issue 9: the non-root default under
// /tmp can be created first by another user). Real directories under a private temporary one; the cases that need
// another user's directory chown it, which needs root.
import { chmod, chown, mkdir, mkdtemp, rm, stat, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ensureRunDir, runDirProblem, runDirToReap } from './run-dir.ts';

const uid = process.getuid!();
const isRoot = uid === 0;
const otherUid = 4242;

describe('the run directory', () => {
  let root: string;
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'workcell-run-dir-'));
  });
  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('is created when missing, with its parents, writable by its owner only', async () => {
    const runDir = join(root, 'workcell-1000', 'workcell');
    await ensureRunDir(runDir);
    for (const dir of [runDir, join(root, 'workcell-1000')]) {
      const info = await stat(dir);
      expect(info.uid).toBe(uid);
      expect(info.mode & 0o022).toBe(0);
    }
    await ensureRunDir(runDir); // and accepted again as it is
  });

  it('is accepted below a sticky world-writable directory, as /tmp is', async () => {
    const shared = join(root, 'tmp');
    await mkdir(shared);
    await chmod(shared, 0o1777);
    await ensureRunDir(join(shared, `workcell-${uid}`, 'workcell'));
  });

  it('is refused when it is a symlink', async () => {
    const target = join(root, 'elsewhere');
    await mkdir(target, { mode: 0o700 });
    const runDir = join(root, 'run');
    await symlink(target, runDir);
    await expect(ensureRunDir(runDir)).rejects.toMatchObject({ code: 'runtime_unavailable', message: expect.stringMatching(/is a symlink: remove it, or set WORKCELL_RUN_DIR/) });
  });

  it('is refused when its group or others can write it', async () => {
    const runDir = join(root, 'run');
    await mkdir(runDir);
    for (const mode of [0o777, 0o775, 0o1777]) {
      await chmod(runDir, mode);
      await expect(ensureRunDir(runDir), mode.toString(8)).rejects.toMatchObject({ code: 'runtime_unavailable', message: expect.stringMatching(/writable by its group or others/) });
    }
    await chmod(runDir, 0o755);
    expect(await runDirProblem(runDir)).toBeUndefined();
  });

  it('is refused below a directory others can write that is not sticky', async () => {
    const open = join(root, 'open');
    await mkdir(open);
    await chmod(open, 0o777);
    const runDir = join(open, 'workcell');
    await expect(ensureRunDir(runDir)).rejects.toMatchObject({ message: expect.stringContaining(`${open}, above the run directory, is writable by its group or others and not sticky (mode 0777)`) });
  });

  it('is refused when the directories it is reached through (a symlink above it) are not safe', async () => {
    const open = join(root, 'open');
    await mkdir(join(open, 'workcell'), { recursive: true });
    await chmod(open, 0o777);
    const link = join(root, 'link');
    await symlink(open, link);
    expect(await runDirProblem(join(link, 'workcell'))).toMatch(/above the run directory, is writable by its group or others and not sticky/);
  });

  it('is reaped in only when it exists and is safe; an unsafe one is logged', async () => {
    const warnings: unknown[] = [];
    const logger = { warn: (fields: unknown) => warnings.push(fields) };
    const runDir = join(root, 'run');
    expect(await runDirToReap(runDir, logger)).toBe(false);
    await ensureRunDir(runDir);
    expect(await runDirToReap(runDir, logger)).toBe(true);
    await chmod(runDir, 0o777);
    expect(await runDirToReap(runDir, logger)).toBe(false);
    expect(warnings).toEqual([{ runDir, problem: expect.stringMatching(/writable by its group or others/) }]);
  });

  it.runIf(isRoot)("is refused when another user created it, or a directory above it, first (the /tmp/workcell-<uid> case)", async () => {
    const shared = join(root, 'tmp');
    await mkdir(shared);
    await chmod(shared, 0o1777);
    // Another user made the per-uid directory before the server started, open to everyone.
    const perUid = join(shared, 'workcell-1000');
    await mkdir(perUid);
    await chown(perUid, otherUid, otherUid);
    await chmod(perUid, 0o777);
    const runDir = join(perUid, 'workcell');
    await expect(ensureRunDir(runDir, 1000)).rejects.toMatchObject({
      code: 'runtime_unavailable',
      message: expect.stringContaining(`${perUid}, above the run directory, belongs to uid ${otherUid}, neither root nor this server's uid 1000`),
    });
    // The run directory itself made by another user.
    const theirs = join(shared, 'theirs');
    await mkdir(theirs, { mode: 0o755 });
    await chown(theirs, otherUid, otherUid);
    await expect(ensureRunDir(theirs, 1000)).rejects.toMatchObject({ message: expect.stringMatching(/belongs to uid 4242, not to this server's uid 1000 \(another user may have made it.*\): remove it, or set WORKCELL_RUN_DIR/) });
    // Its owner is fine.
    await chown(theirs, 1000, 1000);
    expect(await runDirProblem(theirs, 1000)).toBeUndefined();
  });
});
