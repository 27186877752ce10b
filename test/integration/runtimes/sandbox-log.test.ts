// sandbox.log has a cap on every runtime: code in the sandbox floods what sandboxd prints (Jupyter's warnings, which
// sandboxd logs; they reach the host straight from sandboxd under bwrap, through the guest agent and the container's
// output under docker and gvisor, through the guest agent and the VM's console in a microVM), and the log on the host
// stops at its cap with one marker line, the runtime says so once, and the sandbox keeps working.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { sandboxLogMarker } from '../../../src/runtimes/sandbox-log.ts';
import { waitUntil } from '../../helpers/sandbox.ts';
import { runtimeCases, skipReason, useRuntimeSandbox } from './runtimes.ts';

const capBytes = 256 * 1024;

/**
 * Requests to the sandbox's Jupyter server for a page that is not there, each with a long URL: Jupyter logs every one
 * as a warning, and sandboxd passes Jupyter's warnings on to its log. Any code in the sandbox can do this.
 */
function floodCommand(requests: number): string {
  return `python3 -c "
import urllib.request, urllib.error
status = None
for _ in range(${requests}):
    try:
        urllib.request.urlopen('http://127.0.0.1:8888/flood?' + 'x' * 4000)
    except urllib.error.HTTPError as error:
        status = error.code
print('flooded jupyter', status)
"`;
}

for (const runtimeCase of runtimeCases) {
  const skip = await skipReason(runtimeCase.name);
  if (skip !== undefined) console.warn(`skipping the ${runtimeCase.name} sandbox.log test: ${skip}`);
  const timeout = runtimeCase.slow ? 600_000 : 180_000;

  describe.skipIf(skip !== undefined)(`sandbox.log on ${runtimeCase.name}`, () => {
    let reached = 0;
    const sandbox = useRuntimeSandbox(runtimeCase.name, timeout, { log: { maxBytes: capBytes, onLimit: () => reached++ } });

    it('stops at its cap with a marker, says so once, and the sandbox lives on', async () => {
      const { sandbox: running, sh, logDir } = sandbox();
      const path = join(logDir, 'sandbox.log');
      const marker = sandboxLogMarker(capBytes);
      // Jupyter starts on first use.
      const started = await running.client.call('runCode', { language: 'python', code: 'print("jupyter up")', timeout_ms: timeout / 2 });
      expect(JSON.stringify(started)).toContain('jupyter up');
      // About four times the cap: the flood ends (the host keeps reading what it drops), and the shell returns.
      const flood = await sh(floodCommand(250), timeout / 2);
      expect(flood.output).toMatch(/flooded jupyter 404/);
      await waitUntil(async () => (await readFile(path, 'utf8')).endsWith(marker), timeout / 4, 'the marker at the end of sandbox.log');
      const log = await readFile(path, 'utf8');
      expect(Buffer.byteLength(log)).toBeLessThanOrEqual(capBytes);
      expect(log).toMatch(/404 GET \/flood\?x{100}/);
      expect(log.indexOf(marker)).toBe(log.length - marker.length);
      expect(reached).toBe(1);

      const again = await sh(`${floodCommand(20)}; echo still here`, timeout / 2);
      expect(again.output).toMatch(/still here/);
      expect(await readFile(path, 'utf8')).toBe(log);
      expect(reached).toBe(1);
    }, timeout);
  });
}
