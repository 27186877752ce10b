// Who the sandbox is: uid/gid 1000 inside, no capabilities, no new privileges, and an unprivileged host uid outside.
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { useSandbox } from '../../helpers/sandbox.ts';

// Cold, and started ahead as the warm pool does (runtimes/pool/): nothing of the handover may open a way out.
describe.each([{ pooled: false }, { pooled: true }])('bwrap sandbox identity (pooled: $pooled)', ({ pooled }) => {
  const fixture = useSandbox({ pooled });

  it('runs as uid and gid 1000', async () => {
    const { sh } = fixture();
    expect((await sh('id -u')).output.trim()).toBe('1000');
    expect((await sh('id -g')).output.trim()).toBe('1000');
    expect((await sh('id -un')).output.trim()).toBe('agent');
  });

  it('has no new privileges and no capabilities', async () => {
    const status = (await fixture().sh('cat /proc/self/status')).output;
    expect(status).toMatch(/^NoNewPrivs:\s+1$/m);
    for (const set of ['CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb']) expect(status).toMatch(new RegExp(`^${set}:\\s+0{16}$`, 'm'));
  });

  it('cannot create nested user namespaces', async () => {
    const result = await fixture().sh('unshare --user --map-root-user true');
    expect(result.exit_code).not.toBe(0);
  });

  it('writes files that the host sees as the sandbox host user, never root', async () => {
    const { sh, sandbox, workspace } = fixture();
    expect((await sh('echo hello > from-shell.txt && mkdir -p dir && touch dir/inner')).exit_code).toBe(0);
    await sandbox.client.call('writeFile', { path: 'from-tool.txt', content: 'hi' });
    if (process.getuid?.() === 0) expect(sandbox.hostUid).not.toBe(0);
    for (const name of ['from-shell.txt', 'dir', 'dir/inner', 'from-tool.txt']) {
      expect((await stat(join(workspace, name))).uid).toBe(sandbox.hostUid);
    }
  });

  it('reports its isolation and a short socket path', () => {
    const { sandbox } = fixture();
    expect(sandbox.runtime).toBe('bwrap');
    expect(sandbox.isolation).toMatch(/bwrap .*namespaces.*read-only rootfs.*uid 1000.*no network/);
    expect(Buffer.byteLength(join(sandbox.runDir, 'sandboxd.sock'))).toBeLessThanOrEqual(107);
  });
});
