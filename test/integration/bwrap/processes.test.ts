// Processes: the sandbox sees only its own, and nothing it started survives destroy() or the death of bwrap.
import { readFile, stat } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { createSandboxFixture, sandboxProcesses, useSandbox, waitUntil, withSandbox } from '../../helpers/sandbox.ts';

async function commandLine(pid: number): Promise<string> {
  return (await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')).replaceAll('\0', ' ').trim();
}

async function findSleep(processes: number[]): Promise<number | undefined> {
  for (const pid of processes) if ((await commandLine(pid)) === 'sleep 1000') return pid;
  return undefined;
}

// Cold, and started ahead as the warm pool does (runtimes/pool/): nothing of the handover may open a way out.
describe.each([{ pooled: false }, { pooled: true }])('bwrap sandbox processes (pooled: $pooled)', ({ pooled }) => {
  const fixture = useSandbox({ pooled });

  it("sees only its own processes, not the host's", async () => {
    const { sh } = fixture();
    const result = await sh('ps -eo pid=,args=');
    expect(result.exit_code).toBe(0);
    const lines = result.output.trim().split('\n').map((line) => line.trim());
    // bwrap's init, sandboxd, the shell session, ps itself: a handful, with small pids.
    expect(lines.length).toBeLessThan(10);
    expect(lines[0]).toMatch(/^1 .*bwrap/);
    expect(result.output).toContain('/run/workcell-bin/sandboxd.mjs');
    expect(result.output).not.toContain('vitest');
    expect(result.output).not.toContain(String(process.pid) + ' ');
    // No host path leaks through the command lines.
    expect(result.output).not.toMatch(/\/var\/lib\/workcell|workcell-test-/);
  });

  it('destroy() kills background processes and is idempotent', async () => {
    const fixtureToKill = await createSandboxFixture();
    try {
      const { sandbox, sh } = fixtureToKill;
      const started = await sh('sleep 1000 >/dev/null 2>&1 & echo $!');
      expect(started.exit_code).toBe(0);
      // The background job may not have exec'd sleep yet when the shell returns.
      let sleepPid: number | undefined;
      await waitUntil(async () => (sleepPid = await findSleep(await sandboxProcesses(sandbox))) !== undefined);
      expect(sleepPid).toBeDefined();
      expect((await stat(`/proc/${sleepPid}`)).uid).toBe(sandbox.hostUid);

      await sandbox.destroy();
      expect(await sandboxProcesses(sandbox)).toEqual([]);
      expect(await commandLine(sleepPid!)).toBe('');
      await expect(stat(sandbox.runDir)).rejects.toThrow();
      expect((await sandbox.exited).code).toBeNull();
      await sandbox.destroy(); // again: nothing to do, no error
    } finally {
      await fixtureToKill.dispose();
    }
  });

  it('leaves no process behind when bwrap itself is SIGKILLed', async () => {
    await withSandbox(async ({ sandbox, sh }) => {
      expect((await sh('sleep 1000 >/dev/null 2>&1 & echo started')).output).toContain('started');
      // The background job may not have exec'd sleep yet when the shell returns.
      let sleepPid: number | undefined;
      await waitUntil(async () => (sleepPid = await findSleep(await sandboxProcesses(sandbox))) !== undefined);
      expect(sleepPid).toBeDefined();
      process.kill(sandbox.pid, 'SIGKILL');
      expect((await sandbox.exited).signal).toBe('SIGKILL');
      await waitUntil(async () => (await sandboxProcesses(sandbox)).length === 0, undefined, 'the sandbox processes to die');
      expect(await commandLine(sleepPid!)).toBe('');
      expect(await sandbox.client.healthy()).toBe(false);
    });
  });
});
