// The warm pool with real bwrap sandboxes: a sandbox started ahead of its job is handed the job's workspace (mounted
// into it by propagation), log and Jupyter prefix; it serves one job only; the pool refills, replaces what dies, falls
// back to a cold start for jobs that do not fit, and leaves no sandbox, mount or directory behind. The isolation
// suites (bwrap/*.test.ts, isolation/escape.test.ts, isolation/seccomp.test.ts) run against pooled sandboxes too.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, lstat, mkdir, mkdtemp, readFile, rm, stat, symlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../../src/config.ts';
import type { BwrapSandbox } from '../../../src/runtimes/bwrap/bwrap-runtime.ts';
import { parseAllowList } from '../../../src/runtimes/network/allow-list.ts';
import { WarmPool } from '../../../src/runtimes/pool/warm-pool.ts';
import type { SandboxLimits, SandboxSpec } from '../../../src/runtimes/types.ts';
import { sandboxMounts, sandboxProcesses, testRuntime, waitUntil, withSandbox } from '../../helpers/sandbox.ts';

const config = loadConfig();
const limits: SandboxLimits = { cpus: config.cpus, memoryMb: config.memoryMb, pids: config.pids, diskMb: config.diskMb };
const exists = (path: string) => stat(path).then(() => true, () => false);
const mountsOf = (sandboxId: string) => sandboxMounts(config.runDir, sandboxId);
/** The host pid of a sandbox's bwrap (its command line carries the sandbox's label). */
const bwrapOf = (sandboxId: string) => Number(execFileSync('pgrep', ['-of', `bwrap .*--label ${sandboxId}`], { encoding: 'utf8' }).trim());

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'workcell-warm-pool-'));
  await chmod(root, 0o711);
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

/** A job's directories, as a worker makes them, with `files` in its workspace. */
async function jobSpec(name: string, files: Record<string, string> = {}, overrides: Partial<SandboxSpec> = {}): Promise<SandboxSpec> {
  const dir = join(root, name);
  await mkdir(join(dir, 'workspace'), { recursive: true });
  for (const [path, content] of Object.entries(files)) await writeFile(join(dir, 'workspace', path), content);
  return { jobId: `job_${name}`, workspaceDir: join(dir, 'workspace'), logDir: join(dir, 'logs'), limits, ...overrides };
}

describe.runIf(process.getuid?.() === 0)('a warm bwrap sandbox', () => {
  it("gets the job's workspace, log and Jupyter prefix at handover, and serves that job only", async () => {
    const runtime = testRuntime(config);
    const warm = await runtime.prepare({ limits });
    const spec = await jobSpec('handover', { 'task.txt': 'from the job\n' });
    let sandbox: BwrapSandbox | undefined;
    try {
      sandbox = await warm.attach(spec);
      expect(sandbox.pooled).toBe(true);
      expect(sandbox.jobId).toBe('job_handover');
      expect(sandbox.isolation).toMatch(/warm pool/);
      const shell = await sandbox.client.call('shellExec', { command: 'pwd; cat task.txt; echo made > new.txt; ls -A1 /workspace' });
      expect(shell.output).toBe('/workspace\nfrom the job\nnew.txt\ntask.txt\n');
      expect(await readFile(join(spec.workspaceDir, 'new.txt'), 'utf8')).toBe('made\n');
      // The files written are the sandbox user's, as in a cold sandbox.
      expect((await stat(join(spec.workspaceDir, 'new.txt'))).uid).toBe(sandbox.hostUid);
      // Kernels run in the job's workspace and Jupyter takes the job's prefix.
      const code = await sandbox.client.call('runCode', { language: 'python', code: 'import os; print(os.getcwd(), sorted(os.listdir(".")))' });
      expect(JSON.stringify(code)).toContain("/workspace ['new.txt', 'task.txt']");
      // Handed over once: a second job cannot have it.
      await expect(warm.attach(await jobSpec('second'))).rejects.toThrow(/given to a job already/);
      await expect(sandbox.client.call('attach', {})).rejects.toThrow(/given to a job already/);
    } finally {
      await (sandbox ?? warm).destroy();
    }
    // What sandboxd printed before and after the handover is in the job's log.
    const log = await readFile(join(spec.logDir, 'sandbox.log'), 'utf8');
    expect(log).toMatch(/"msg":"listening"/);
    expect(log).toMatch(/shell session started/);
    expect(mountsOf(warm.id)).toBe(0);
    expect(await exists(join(config.runDir, `${warm.id}-ws`))).toBe(false);
    expect(await readFile(join(spec.workspaceDir, 'task.txt'), 'utf8')).toBe('from the job\n');
  });

  it('keeps the workspace mounted where the sandbox cannot take it off, and the slot beneath empty', async () => {
    const runtime = testRuntime(config);
    const warm = await runtime.prepare({ limits });
    const sandbox = await warm.attach(await jobSpec('locked', { 'a.txt': 'a' }));
    try {
      const attempts = await sandbox.client.call('shellExec', {
        command: 'umount /workspace 2>&1; umount -l /workspace 2>&1; python3 -c "import ctypes; print(ctypes.CDLL(None, use_errno=True).umount2(b\'/workspace\', 2), ctypes.get_errno())"; ls -A /workspace',
      });
      expect(attempts.output).toMatch(/must be superuser|Operation not permitted/);
      expect(attempts.output).toMatch(/^-1 1$/m); // EPERM
      expect(attempts.output.trim().endsWith('a.txt')).toBe(true);
    } finally {
      await sandbox.destroy();
    }
  });

  it('refuses a job whose limits or network are not its own', async () => {
    const runtime = testRuntime(config);
    for (const overrides of [{ limits: { ...limits, memoryMb: limits.memoryMb + 1 } }, { network: { allow: parseAllowList(['example.com']) } }]) {
      const warm = await runtime.prepare({ limits });
      try {
        await expect(warm.attach(await jobSpec(`unfit-${randomBytes(3).toString('hex')}`, {}, overrides))).rejects.toThrow(/limits|network/);
      } finally {
          await warm.destroy();
      }
      expect(mountsOf(warm.id)).toBe(0);
    }
  });

  it("unmounts a job's workspace disk from the slot before the disk is released", async () => {
    let id = '';
    await withSandbox(
      async ({ sandbox, sh, workspace }) => {
        await sh('head -c 1000000 /dev/zero > big.bin');
        expect((await stat(join(workspace, 'big.bin'))).size).toBe(1_000_000);
        expect(sandbox.pooled).toBe(true);
        id = sandbox.id;
      },
      { pooled: true, workspaceDiskMb: 16 },
    );
    // The fixture released the disk (a busy one would have failed): nothing of the sandbox is mounted.
    expect(mountsOf(id)).toBe(0);
  });
});

describe.runIf(process.getuid?.() === 0)('the warm pool', () => {
  it('hands out ready sandboxes, starts cold ones for jobs that do not fit, refills, replaces the dead and drains', async () => {
    const pool = new WarmPool({ runtime: testRuntime(config), size: 2, profile: { limits }, retryBaseMs: 50 });
    const ids: string[] = [];
    try {
      pool.start();
      await waitUntil(async () => pool.stats.ready === 2, 120_000, 'the pool to fill');

      const fits = await pool.create(await jobSpec('pool-a', { 'in.txt': 'a' }));
      expect(fits.pooled).toBe(true);
      const unfit = await pool.create(await jobSpec('pool-b', {}, { limits: { ...limits, pids: limits.pids - 1 } }));
      expect(unfit.pooled).toBeUndefined();
      expect(pool.stats).toMatchObject({ hits: 1, misses: 1 });
      // Two jobs never share one: each has its own workspace and its own processes.
      const other = await pool.create(await jobSpec('pool-c', { 'in.txt': 'c' }));
      expect(other.pooled).toBe(true);
      expect(other.id).not.toBe(fits.id);
      expect((await other.client.call('shellExec', { command: 'cat in.txt; ls /workspace' })).output).toBe('cin.txt\n');
      for (const sandbox of [fits, unfit, other]) await sandbox.destroy();
      await waitUntil(async () => pool.stats.ready === 2, 120_000, 'the pool to refill');

      // One killed while it waits is replaced, and what it held is released.
      const [victim, survivor] = pool.readyIds;
      process.kill(bwrapOf(victim!), 'SIGKILL');
      await waitUntil(async () => pool.stats.ready === 2 && !pool.readyIds.includes(victim!) && mountsOf(victim!) === 0, 120_000, 'the dead one to be replaced');
      expect(pool.readyIds).toContain(survivor);
      ids.push(...pool.readyIds, fits.id, unfit.id, other.id, victim!);
    } finally {
      await pool.close();
    }
    expect(pool.stats.ready).toBe(0);
    for (const id of ids) expect(mountsOf(id), id).toBe(0);
  });

  it('backs off while sandboxes cannot start, and never hands out a broken one', async () => {
    const broken = testRuntime(loadConfig({}, { imageDir: join(root, 'no-image') }));
    const pool = new WarmPool({ runtime: broken, size: 1, profile: { limits }, retryBaseMs: 50 });
    try {
      pool.start();
      await expect(pool.create(await jobSpec('broken'))).rejects.toThrow();
      expect(pool.stats).toMatchObject({ ready: 0, hits: 0, misses: 1 });
    } finally {
      await pool.close();
    }
  });
});

describe.runIf(process.getuid?.() === 0)("reaping a dead server's warm sandbox", () => {
  it("unmounts its slot and the job's workspace on it, and keeps the workspace's files", async () => {
    const slot = join(config.runDir, `sb-${randomBytes(6).toString('hex')}-ws`);
    const workspace = join(root, 'reaped-workspace');
    await mkdir(workspace, { recursive: true });
    await writeFile(join(workspace, 'keep.txt'), 'kept');
    await mkdir(slot, { recursive: true });
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4k', 'workcell-slot', slot]);
    execFileSync('mount', ['--bind', workspace, slot]);
    const hourAgo = new Date(Date.now() - 3600_000);
    await utimes(slot, hourAgo, hourAgo);
    const report = await testRuntime(config).reapOrphans();
    expect(report.dirs).toContain(slot);
    expect(await exists(slot)).toBe(false);
    expect(await readFile(join(workspace, 'keep.txt'), 'utf8')).toBe('kept');
  });

  it('kills nothing of a live warm sandbox', async () => {
    const warm = await testRuntime(config).prepare({ limits });
    try {
      // Its directories look abandoned (old), but its bwrap lives.
      const hourAgo = new Date(Date.now() - 3600_000);
      for (const dir of [join(config.runDir, warm.id), join(config.runDir, `${warm.id}-ws`)]) await utimes(dir, hourAgo, hourAgo);
      const report = await testRuntime(config).reapOrphans();
      expect(report.dirs.filter((dir) => dir.includes(warm.id))).toEqual([]);
      const sandbox = await warm.attach(await jobSpec('alive'));
      expect((await sandbox.client.call('shellExec', { command: 'echo alive' })).output).toBe('alive\n');
      expect((await sandboxProcesses(sandbox)).length).toBeGreaterThan(0);
      await sandbox.destroy();
    } finally {
      await warm.destroy();
    }
  });
});

describe.runIf(process.getuid?.() === 0)("giving a job's workspace to the sandbox user, cold and warm", () => {
  for (const pooled of [false, true]) {
    for (const entries of [3, 700]) {
      it(`chowns every entry of a ${entries}-entry tree and follows no symlink (pooled: ${pooled})`, async () => {
        const hostFile = join(root, `host-owned-${pooled}-${entries}`);
        await writeFile(hostFile, 'host');
        const spec = await jobSpec(`chown-${pooled}-${entries}`);
        const nested = join(spec.workspaceDir, 'a', 'b');
        await mkdir(nested, { recursive: true });
        for (let index = 0; index < entries; index++) await writeFile(join(nested, `f${index}`), '');
        await symlink(hostFile, join(spec.workspaceDir, 'link'));
        const runtime = testRuntime(config);
        const sandbox = pooled ? await (await runtime.prepare({ limits })).attach(spec) : await runtime.create(spec);
        try {
          for (const path of [spec.workspaceDir, nested, join(nested, `f${entries - 1}`), join(spec.workspaceDir, 'link')]) {
            expect((await lstat(path)).uid, path).toBe(sandbox.hostUid);
          }
          expect((await stat(hostFile)).uid).toBe(0);
          expect((await sandbox.client.call('shellExec', { command: `touch a/b/f0 && echo ok` })).output).toBe('ok\n');
        } finally {
          await sandbox.destroy();
        }
      });
    }
  }
});
