// Orphans of dead servers, reaped by the bwrap runtime: stale run and socket directories go, a bwrap sandbox's process
// tree whose bwrap is gone is killed, and nothing of a live sandbox (this test's, another server's, another runtime's)
// is touched. test/integration/runtimes/docker-reap.test.ts has the bwrap reaper beside a live docker sandbox.
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdir, readlink, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../../src/config.ts';
import { labelledProcesses } from '../../../src/runtimes/bwrap/reap.ts';
import { lookupUser } from '../../../src/runtimes/probe.ts';
import { testRuntime, waitUntil, withSandbox } from '../../helpers/sandbox.ts';

const config = loadConfig();
const fakeId = () => `sb-${randomBytes(6).toString('hex')}`;
const exists = (path: string) => stat(path).then(() => true, () => false);
const hourAgo = () => new Date(Date.now() - 3600_000);

describe('reaping orphaned bwrap sandboxes', () => {
  it('removes old directories of dead sandboxes, keeps fresh ones and those of live sandboxes', async () => {
    const runtime = testRuntime(config);
    await withSandbox(
      async ({ sandbox }) => {
        const stale = join(config.runDir, fakeId());
        const staleNet = `${stale}-net`;
        const fresh = join(config.runDir, fakeId());
        const unrelated = join(config.runDir, `not-a-sandbox-${randomBytes(3).toString('hex')}`);
        await mkdir(config.runDir, { recursive: true });
        for (const dir of [stale, staleNet, fresh, unrelated]) await mkdir(dir);
        await writeFile(join(stale, 'sandboxd.sock'), '');
        await writeFile(join(staleNet, 'proxy.sock'), '');
        for (const dir of [stale, staleNet, unrelated, sandbox.runDir]) await utimes(dir, hourAgo(), hourAgo());
        try {
          const report = await runtime.reapOrphans();
          expect(report.dirs).toEqual(expect.arrayContaining([stale, staleNet]));
          expect(await exists(stale)).toBe(false);
          expect(await exists(staleNet)).toBe(false);
          expect(await exists(fresh)).toBe(true); // inside the grace period: perhaps another server creating it
          expect(await exists(unrelated)).toBe(true);
          expect(await exists(sandbox.runDir)).toBe(true); // live: its bwrap carries its label
          expect((await sandbox.client.call('shellExec', { command: 'echo alive' })).output).toContain('alive');
        } finally {
          const { rm } = await import('node:fs/promises');
          for (const dir of [stale, staleNet, fresh, unrelated]) await rm(dir, { recursive: true, force: true });
        }
      },
      { runtime },
    );
  });

  it.runIf(process.getuid?.() === 0)('unmounts an orphaned run directory that is a mount point before removing it', async () => {
    const orphan = join(config.runDir, fakeId());
    await mkdir(orphan, { recursive: true });
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'workcell-test', orphan]);
    try {
      await writeFile(join(orphan, 'sandboxd.sock'), '');
      await utimes(orphan, hourAgo(), hourAgo());
      const report = await testRuntime(config).reapOrphans();
      expect(report.dirs).toContain(orphan);
      expect(await exists(orphan)).toBe(false);
      expect(readFileSync('/proc/self/mountinfo', 'utf8')).not.toContain(orphan);
    } finally {
      if (readFileSync('/proc/self/mountinfo', 'utf8').includes(orphan)) execFileSync('umount', ['-l', orphan]);
      const { rm } = await import('node:fs/promises');
      await rm(orphan, { recursive: true, force: true });
    }
  });

  it("labels each sandbox's bwrap and sandboxd with its id", async () => {
    await withSandbox(async ({ sandbox }) => {
      const own = await readlink('/proc/self/ns/pid');
      const labelled = (await labelledProcesses()).filter((each) => each.sandboxId === sandbox.id);
      expect(labelled.some((each) => each.namespace === own)).toBe(true); // bwrap, outside
      expect(labelled.some((each) => each.namespace === sandbox.pidNamespace)).toBe(true); // sandboxd, inside
    });
  });

  it.runIf(process.getuid?.() === 0)("kills a bwrap sandbox's process tree whose bwrap is gone, and not another runtime's labelled tree", async () => {
    const user = await lookupUser(config.sandboxUser);
    if (user === undefined) throw new Error(`the sandbox user ${config.sandboxUser} is missing: run scripts/setup.sh`);
    const setpriv = ['setpriv', `--reuid=${user.uid}`, `--regid=${user.gid}`, '--clear-groups'];
    const sleeper = ['/usr/bin/python3', '-c', 'import time; time.sleep(600)'];
    // A bwrap sandbox as the runtime makes one (new pid and user namespaces, bwrap as their init, the label on the
    // command line), without --die-with-parent: when its outer bwrap dies, the tree inside is left behind.
    const bwrapId = fakeId();
    const bwrap = spawn(setpriv[0]!, [...setpriv.slice(1), 'bwrap', '--unshare-pid', '--unshare-user', '--ro-bind', '/', '/', '--proc', '/proc', '--dev', '/dev', '--', ...sleeper, '--label', bwrapId], { stdio: 'ignore', detached: true });
    // Another runtime's sandbox (a container's sandboxd carries the same kind of label): a labelled process, the same
    // user, pid 1 of its own pid namespace, but not started by bwrap. Its starter dies too.
    const otherId = fakeId();
    const other = spawn('unshare', ['--pid', '--fork', ...setpriv, 'sh', '-c', 'exec "$@" --label "$LABEL"', 'sh', ...sleeper], { env: { ...process.env, LABEL: otherId }, stdio: 'ignore', detached: true });
    const inside = async (id: string) => (await labelledProcesses()).filter((each) => each.sandboxId === id && each.namespace !== ownNamespace);
    const ownNamespace = await readlink('/proc/self/ns/pid');
    try {
      await waitUntil(async () => (await inside(bwrapId)).length === 2 && (await inside(otherId)).length === 1, undefined, 'both labelled trees');
      for (const starter of [bwrap, other]) {
        starter.kill('SIGKILL');
        await new Promise((resolve) => starter.once('exit', resolve));
      }
      const bwrapTree = (await inside(bwrapId)).map((each) => each.pid);
      const otherTree = (await inside(otherId)).map((each) => each.pid);
      expect(bwrapTree).toHaveLength(2); // bwrap as the namespace's init, and the sleeper
      const report = await testRuntime(config).reapOrphans();
      expect(report.processes).toEqual(expect.arrayContaining(bwrapTree));
      for (const pid of otherTree) expect(report.processes).not.toContain(pid);
      await waitUntil(async () => (await inside(bwrapId)).length === 0, undefined, 'the orphaned bwrap tree to die');
      expect((await inside(otherId)).map((each) => each.pid)).toEqual(otherTree);
    } finally {
      for (const each of [...(await inside(bwrapId)), ...(await inside(otherId))]) {
        try {
          process.kill(each.pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    }
  });
});
