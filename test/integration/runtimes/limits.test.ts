// The isolation suite's limit cases on every runtime, through the agent's tool plumbing (what the model would read):
// a fork bomb is refused at the pids limit, the agent is told and the sandbox recovers; a memory bomb is stopped at
// the memory limit and the agent is told. One sandbox per runtime, the fork bomb first; gVisor's memory bomb gets a
// sandbox of its own. gVisor's memory is one host cgroup, and gVisor also enforces the same limit inside: depending
// on which is reached first (runsc versions differ: Debian 12's 2022 build, Debian 13's 2024 one), the allocation
// fails inside gVisor while the host's OOM killer takes one of gVisor's processes, or the host's OOM killer takes
// the whole sandbox after reclaiming what it can, which has taken up to two minutes under runsc 2024. Either way the
// agent is told; the test accepts both, and checks recovery when the sandbox survived.
import { describe, expect, it } from 'vitest';
import { runTool, type ToolRunResult } from '../../../src/agent/tools/run-tool.ts';
import { limitWatch } from '../../../src/jobs/run-job.ts';
import { forkHolderCommand } from '../../helpers/sandbox.ts';
import { runtimeCases, skipReason, useRuntimeSandbox, type RuntimeSandbox } from './runtimes.ts';

// 512 MB: under gVisor every forked process costs the sandbox memory too, and 256 MB would stop the fork bomb's
// sandbox by its memory limit before its process limit.
const small = { cpus: 1, memoryMb: 512, pids: 64, diskMb: 64 };

function shell(fixture: RuntimeSandbox, command: string, timeoutMs = 60_000): Promise<ToolRunResult> {
  return runTool(fixture.sandbox.client, { name: 'shell', input: { command, timeout_ms: timeoutMs } }, { signal: new AbortController().signal, limits: limitWatch(fixture.sandbox, undefined) });
}

for (const runtimeCase of runtimeCases) {
  const skip = await skipReason(runtimeCase.name);
  if (skip !== undefined) console.warn(`skipping the ${runtimeCase.name} limit tests: ${skip}`);
  const timeout = runtimeCase.slow ? 600_000 : 180_000;

  describe.skipIf(skip !== undefined)(`limits on ${runtimeCase.name}`, () => {
    const sandbox = useRuntimeSandbox(runtimeCase.name, timeout, { limits: small });

    it('has no network: only loopback, no route out', async () => {
      const result = await sandbox().sh(`python3 -c '
import socket
try:
    socket.create_connection(("1.1.1.1", 443), 3)
    print("CONNECTED")
except OSError as error:
    print("NO-ROUTE", type(error).__name__)
'`);
      expect(result.output).toMatch(/NO-ROUTE/);
      expect(result.output).not.toMatch(/CONNECTED/);
    }, timeout);

    // Twice: a sandbox that recovered from one fork bomb must survive the next (under gVisor, host threads of the
    // stopped processes linger, and a too tight host pids limit let the second bomb take the whole sandbox down).
    it('fork bomb, twice: refused at the pids limit, the agent is told, the sandbox recovers', async () => {
      for (let round = 0; round < 2; round++) {
        const holder = await shell(sandbox(), forkHolderCommand, timeout / 2 - 10_000);
        expect(holder.output).toMatch(/fork refused after \d+ children: Resource temporarily unavailable/);
        expect(holder.limitsHit).toEqual(['pids']);
        expect(holder.output).toContain(`[limit] fork failed: the sandbox's process limit (${small.pids} processes and threads) was reached.`);
        const after = await shell(sandbox(), 'echo still-here', timeout / 2 - 10_000);
        expect(after.output).toMatch(/still-here/);
      }
    }, timeout);

    if (runtimeCase.name !== 'gvisor') {
      it('memory bomb: stopped at the memory limit, and the agent is told', async () => {
        const bomb = await memoryBomb(sandbox(), timeout - 10_000);
        expect(bomb.output).toMatch(/exit 137/);
        const next = await shell(sandbox(), 'echo fine', timeout - 10_000);
        expect(next.output).toMatch(/fine/);
        expect(next.limitsHit).toBeUndefined();
      }, timeout);
    }
  });
}

async function memoryBomb(fixture: RuntimeSandbox, timeoutMs: number): Promise<ToolRunResult> {
  const bomb = await shell(fixture, 'python3 -c "chunks = []\nwhile True: chunks.append(bytearray(8 * 1024 * 1024))"; echo "exit $?"', timeoutMs);
  expect(bomb.limitsHit).toEqual(['memory']);
  expect(bomb.output).toMatch(new RegExp(`\\[limit\\] (a process was|\\d+ processes were) killed: the sandbox's memory limit \\(${small.memoryMb} MB\\) was reached\\.`));
  return bomb;
}

const gvisorSkip = await skipReason('gvisor');
describe.skipIf(gvisorSkip !== undefined)('memory limit on gvisor', () => {
  const timeout = 600_000;
  const sandbox = useRuntimeSandbox('gvisor', timeout, { limits: small });

  it('memory bomb: stopped at the memory limit, and the agent is told', async () => {
    await memoryBomb(sandbox(), timeout - 10_000);
    expect((await sandbox().sandbox.limitCounters!()).oomKills).toBeGreaterThan(0);
    // Either the sandbox works on, or it was taken whole (perhaps only now): then it has exited.
    const next = await shell(sandbox(), 'echo fine', timeout - 10_000);
    if (!/fine/.test(next.output)) await sandbox().sandbox.exited;
  }, timeout);
});
