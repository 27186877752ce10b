// Resource exhaustion from inside a real sandbox, with small limits: a fork bomb, a memory bomb, a disk fill of
// /workspace and of /tmp (and of the run directory), a CPU spin. Each is contained: the tool result says which limit
// was hit (through the same plumbing the agent loop uses), the sandbox keeps working for the next call, a sandbox
// beside it runs normally, and the host is unharmed (its disk, its ability to fork).
import { stat, statfs } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runTool, type ToolRunResult } from '../../../src/agent/tools/run-tool.ts';
import { limitWatch } from '../../../src/jobs/run-job.ts';
import { forkHolderCommand, withSandbox, waitUntil, type SandboxFixture } from '../../helpers/sandbox.ts';

const small = { cpus: 0.5, memoryMb: 256, pids: 64, diskMb: 32 };
const asRoot = process.getuid?.() === 0;

/**
 * The agent's shell calls in a sandbox, through the tool plumbing with one limit watch for all of them, as a job has
 * (a limit hit between two calls is reported by the next): what the model would read.
 */
function agentShell(fixture: SandboxFixture, workspaceDiskMb?: number): (command: string, timeoutMs?: number) => Promise<ToolRunResult> {
  const limits = limitWatch(fixture.sandbox, workspaceDiskMb);
  return (command, timeoutMs = 30_000) => runTool(fixture.sandbox.client, { name: 'shell', input: { command, timeout_ms: timeoutMs } }, { signal: new AbortController().signal, limits });
}

async function hostFreeBytes(path: string): Promise<number> {
  const info = await statfs(path);
  return info.bavail * info.bsize;
}

/**
 * The neighbour's check: a normal command, which forks, completes while the other sandbox misbehaves, and no fork of
 * the neighbour's was refused. (How long it takes says more about the machine's load than about the isolation.)
 */
async function expectResponsive(neighbour: SandboxFixture): Promise<void> {
  const result = await neighbour.sh('echo neighbour-ok && python3 -c "print(sum(range(1000)))"');
  expect(result.output).toBe('neighbour-ok\n499500\n');
  expect((await neighbour.sandbox.limitCounters!()).pidsRefused).toBe(0);
}

describe('resource limits in a real sandbox', () => {
  it('reports the limits in effect', async () => {
    await withSandbox(
      async ({ sandbox }) => {
        expect(sandbox.limits).toEqual(small);
        expect(sandbox.isolation).toMatch(/limits: 0.5 CPU, 256 MB memory, 64 processes \(cgroup v[12]\), \/tmp 32 MB/);
      },
      { limits: small },
    );
  });

  it('fork bomb: refused at the pids limit, the agent is told, the sandbox recovers, a neighbour is unaffected', async () => {
    await withSandbox(async (neighbour) => {
      await withSandbox(
        async (bombed) => {
          const shell = agentShell(bombed);
          const holder = await shell(forkHolderCommand);
          expect(holder.output).toMatch(/fork refused after \d+ children: Resource temporarily unavailable/);
          expect(holder.limitsHit).toEqual(['pids']);
          expect(holder.output).toContain("[limit] fork failed: the sandbox's process limit (64 processes and threads) was reached.");
          expect(holder.output).toMatch(/every process your commands started \(\d+\) was stopped/);
          const after = await shell('echo still-here; ps -e --no-headers | wc -l');
          expect(after.output).toMatch(/still-here\n\d\n/); // bwrap, sandboxd, a fresh bash, ps, wc
          expect(after.limitsHit).toBeUndefined();

          // The classic bash bomb, which never stops by itself, armed to go off once the call that starts it has ended
          // (else, on a busy machine, that call may be the one that runs into the limit and stops it). The kernel
          // refuses it while no call runs; the next call is told, and the sandbox is given back.
          const armed = await shell('(until [ -e /workspace/bomb-go ]; do sleep 0.05; done; :(){ :|:& };:) &');
          expect(armed.limitsHit).toBeUndefined();
          const quiet = await bombed.sandbox.limitCounters!();
          await bombed.sandbox.client.call('writeFile', { path: 'bomb-go', content: '' });
          await waitUntil(async () => (await bombed.sandbox.limitCounters!()).pidsRefused > quiet.pidsRefused, 60_000, 'the bomb to hit the pids limit');
          await expectResponsive(neighbour);
          const during = await shell('ls / > /dev/null; echo listed', 3000);
          expect(during.limitsHit).toContain('pids');
          // Told either way: the bomb still held the sandbox at its limit when the call ended, and was stopped; or its
          // bashes had given up on fork and exited first (bash retries a refused fork, then fails), on a busy machine
          // before the call's end, and there was nothing left to stop.
          expect(during.output).toMatch(/every process your commands started \(\d+\) was stopped|was reached\. Run fewer processes or threads at once/);
          const recovered = await shell('ls /workspace > /dev/null && echo recovered');
          expect(recovered.output).toMatch(/recovered/);
        },
        { limits: small },
      );
    });
  });

  it('memory bomb: OOM-killed at the memory limit, the agent is told, the sandbox keeps working', async () => {
    await withSandbox(
      async (fixture) => {
        const shell = agentShell(fixture);
        const bomb = await shell('python3 -c "chunks = []\nwhile True: chunks.append(bytearray(8 * 1024 * 1024))"; echo "exit $?"');
        expect(bomb.output).toMatch(/Killed/);
        expect(bomb.output).toMatch(/exit 137/);
        expect(bomb.limitsHit).toEqual(['memory']);
        expect(bomb.output).toContain("[limit] a process was killed: the sandbox's memory limit (256 MB) was reached.");
        const next = await shell('echo fine');
        expect(next.output).toMatch(/fine/);
        expect(next.limitsHit).toBeUndefined();
        const usage = await fixture.sandbox.usage!();
        expect(usage.peakMemoryBytes).toBeGreaterThan(200 * 1024 * 1024);
        expect(usage.peakMemoryBytes).toBeLessThanOrEqual(256 * 1024 * 1024);
      },
      { limits: small },
    );
  });

  it.runIf(asRoot)('disk fill of /workspace: ENOSPC at the disk limit, the agent is told, the host disk loses at most the limit', async () => {
    await withSandbox(
      async (fixture) => {
        const shell = agentShell(fixture, small.diskMb);
        const fill = await shell('head -c 100M /dev/zero > /workspace/fill; echo "exit $?"; df -k /workspace | tail -1');
        expect(fill.output).toMatch(/No space left on device/);
        expect(fill.limitsHit).toEqual(['workspace_disk']);
        expect(fill.output).toContain('[limit] no space left: the workspace disk limit (32 MB) is full.');
        // What the fill took from the host's disk: the blocks of the (sparse) workspace image, at most the limit.
        const image = await stat(join(dirname(fixture.workspace), 'workspace.ext4'));
        expect(image.blocks * 512).toBeGreaterThan(small.diskMb * 0.8 * 1024 * 1024);
        expect(image.blocks * 512).toBeLessThanOrEqual(small.diskMb * 1024 * 1024);
        expect(await hostFreeBytes(tmpdir())).toBeGreaterThan(0);
        // Freeing space gives the workspace back.
        const freed = await shell('rm /workspace/fill && echo hello > /workspace/after.txt && cat /workspace/after.txt');
        expect(freed.output).toMatch(/hello/);
        expect(freed.limitsHit).toBeUndefined();
      },
      { limits: small, workspaceDiskMb: small.diskMb },
    );
  });

  it('disk fill of /tmp: ENOSPC at the limit, the agent is told; the run directory is small too', async () => {
    await withSandbox(
      async (fixture) => {
        const shell = agentShell(fixture);
        const fill = await shell('head -c 100M /dev/zero > /tmp/fill; echo "exit $?"');
        expect(fill.output).toMatch(/No space left on device/);
        expect(fill.limitsHit).toEqual(['tmp_disk']);
        expect(fill.output).toContain('[limit] no space left: /tmp is full (its limit is 32 MB).');
        expect((await shell('rm /tmp/fill && echo ok > /tmp/small && cat /tmp/small')).output).toMatch(/ok/);
        // The home directory and the run directory (writable for sandboxd's socket) are bounded as well.
        expect((await fixture.sh('head -c 100M /dev/zero > ~/fill; echo "exit $?"; rm -f ~/fill')).output).toMatch(/No space left on device/);
        if (asRoot) expect((await fixture.sh('head -c 100M /dev/zero > /run/workcell/fill; echo "exit $?"; rm -f /run/workcell/fill')).output).toMatch(/No space left on device/);
        // All of them are tmpfs (memory, charged to the sandbox's cgroup): nothing reached the host's disk.
        const mountPoints = asRoot ? 'tmp|home/agent|run/workcell' : 'tmp|home/agent';
        const mounts = (await fixture.sh(`grep -E " /(${mountPoints}) " /proc/self/mounts | cut -d" " -f3 | sort -u`)).output.trim();
        expect(mounts).toBe('tmpfs');
      },
      { limits: small },
    );
  });

  it('CPU spin: interrupted at the timeout, held to its CPU quota, a neighbour stays responsive', async () => {
    await withSandbox(async (neighbour) => {
      await withSandbox(
        async (spinning) => {
          // Start the shell session first (a PTY and a bash: not part of the spin, and not free on a busy machine).
          await spinning.sh('true');
          const before = (await spinning.sandbox.usage!()).cpuSeconds ?? 0;
          const started = performance.now();
          const spin = agentShell(spinning)('while :; do :; done', 2000);
          await expectResponsive(neighbour);
          const result = await spin;
          const elapsedSeconds = (performance.now() - started) / 1000;
          expect(result.output).toMatch(/timed out after 2000 ms: the command was interrupted/);
          const used = ((await spinning.sandbox.usage!()).cpuSeconds ?? 0) - before;
          // 0.5 CPU: half the wall time at most, whatever the spin wanted (a busy machine gives it less, never more).
          expect(used).toBeGreaterThan(0);
          expect(used).toBeLessThan(0.5 * elapsedSeconds + 0.3);
          // And the quota holds back a spin that could run faster: half a second of CPU takes at least a second of
          // wall time (less the first period's share, which may come at once). A busy machine can only stretch it.
          const paced = await spinning.sh('python3 -c "import time\nwall, cpu = time.monotonic(), time.process_time()\nwhile time.process_time() - cpu < 0.5: pass\nprint(round(time.monotonic() - wall, 2))"', 60_000);
          expect(Number(paced.output)).toBeGreaterThan(0.85);
          expect((await spinning.sh('echo after-spin')).output).toBe('after-spin\n');
        },
        { limits: small },
      );
    });
  });
});
