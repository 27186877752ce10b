import { describe, expect, it } from 'vitest';
import { runCommand } from './probe.ts';

describe('runCommand', () => {
  it('returns the output of a command that succeeds, and a failed result for one that fails', async () => {
    expect(await runCommand('sh', ['-c', 'echo out; echo err >&2'])).toEqual({ ok: true, code: 0, stdout: 'out\n', stderr: 'err\n' });
    expect(await runCommand('sh', ['-c', 'exit 3'])).toMatchObject({ ok: false, code: 3 });
    expect(await runCommand('/nonexistent/command', [])).toMatchObject({ ok: false, stderr: expect.stringMatching(/ENOENT/) as unknown });
  });

  it('gives up on a command that hangs at its time limit, and still resolves', async () => {
    const hung = await runCommand('sleep', ['600'], { timeoutMs: 200 });
    expect(hung).toMatchObject({ ok: false, code: null });
  });
});
