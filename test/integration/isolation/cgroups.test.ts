// The sandbox's cgroup on the real hierarchy: every process of the sandbox is in it from the start, destroy() removes
// it, the cgroups of dead servers are reaped with what still runs in them, and a host where cgroups cannot be used
// fails closed (saying how to fix it) unless the operator opted out of limits.
import { spawn } from 'node:child_process';
import { mkdir, readFile, readlink, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../../src/config.ts';
import { WorkcellError } from '../../../src/errors.ts';
import { findCgroupHost, reapCgroups, SandboxCgroup } from '../../../src/runtimes/cgroups.ts';
import { createSandboxFixture, sandboxProcesses, testRuntime, waitUntil, withSandbox } from '../../helpers/sandbox.ts';

const asRoot = process.getuid?.() === 0;

async function cgroupPathsOf(pid: number): Promise<string[]> {
  return (await readFile(`/proc/${pid}/cgroup`, 'utf8')).split('\n').filter((line) => /^\d+:(memory|pids|cpu|cpuacct|cpu,cpuacct):/.test(line));
}

describe.runIf(asRoot)('sandbox cgroups', () => {
  it('holds every process of the sandbox from its first one, and is removed by destroy()', async () => {
    const fixture = await createSandboxFixture({ limits: { memoryMb: 512, pids: 128 } });
    try {
      const { sandbox, sh } = fixture;
      expect((await sh('sleep 1000 > /dev/null 2>&1 & echo started')).output).toContain('started');
      await waitUntil(async () => (await sandboxProcesses(sandbox)).length >= 4);
      const processes = [sandbox.pid, ...(await sandboxProcesses(sandbox))];
      for (const pid of processes) {
        const lines = await cgroupPathsOf(pid);
        expect(lines.length, String(pid)).toBeGreaterThanOrEqual(3);
        for (const line of lines) expect(line, String(pid)).toMatch(/\/workcell\/sb-[a-z0-9]+\.\d+\.\d+\.\d+$/);
      }
      const cgroupDir = (await cgroupPathsOf(sandbox.pid)).find((line) => line.includes(':pids:'))!.split(':')[2]!;
      const pidsDir = join('/sys/fs/cgroup/pids', cgroupDir);
      expect(await readFile(join(pidsDir, 'pids.max'), 'utf8')).toBe('128\n');
      await sandbox.destroy();
      await expect(stat(pidsDir)).rejects.toThrow(/ENOENT/);
    } finally {
      await fixture.dispose();
    }
  });

  it('reaps the cgroups of a dead server, killing what still runs in them, and leaves live ones alone', async () => {
    const host = await findCgroupHost();
    if ('problem' in host) throw new Error(host.problem);
    await withSandbox(async ({ sandbox }) => {
      const namespace = /\[(\d+)\]/.exec(await readlink('/proc/self/ns/pid'))![1]!;
      const orphan = new SandboxCgroup(host, `sb-orphan0test.${namespace}.999999999.1`);
      for (const dir of orphan.uniqueDirs) await mkdir(dir, { recursive: true });
      const sleeper = spawn('sleep', ['1000'], { stdio: 'ignore', detached: true });
      const exited = new Promise((resolve) => sleeper.once('exit', resolve));
      for (const file of orphan.procsFiles) await writeFile(file, String(sleeper.pid));
      const reaped = await reapCgroups(host);
      expect(reaped).toContain(orphan.name);
      await exited;
      for (const dir of orphan.uniqueDirs) await expect(stat(dir)).rejects.toThrow(/ENOENT/);
      // The running sandbox's cgroup is this server's: untouched.
      expect(await sandbox.client.healthy()).toBe(true);
      expect((await sandbox.limitCounters!()).processes).toBeGreaterThan(0);
    });
  });

  it('fails closed, saying how to fix it, when its cgroup cannot be made; runs without limits only if told to', async () => {
    const broken = loadConfig(process.env, { cgroupParent: '/cgroup.procs' });
    const error = await createSandboxFixture({ runtime: testRuntime(broken) }).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(WorkcellError);
    expect((error as WorkcellError).code).toBe('runtime_unavailable');
    expect((error as WorkcellError).message).toMatch(/cannot set up the sandbox's cgroup.*WORKCELL_UNSAFE_NO_LIMITS=1/);

    const unsafe = loadConfig(process.env, { cgroupParent: '/cgroup.procs', unsafeNoLimits: true });
    await withSandbox(
      async ({ sandbox, sh }) => {
        expect(sandbox.isolation).toMatch(/NO resource limits \(WORKCELL_UNSAFE_NO_LIMITS\)/);
        expect(sandbox.limits).toBeUndefined();
        expect((await sh('echo unlimited')).output).toBe('unlimited\n');
      },
      { runtime: testRuntime(unsafe) },
    );
  });
});
