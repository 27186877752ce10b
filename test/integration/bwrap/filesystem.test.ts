// The file system: a read-only rootfs, a writable /workspace and private /tmp, nothing of the host or of other
// sandboxes, and Debian's private files staying private.
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../../src/config.ts';
import { ensureRootfs } from '../../../src/runtimes/image.ts';
import { useSandbox, withSandbox } from '../../helpers/sandbox.ts';

// Cold, and started ahead as the warm pool does (runtimes/pool/): nothing of the handover may open a way out.
describe.each([{ pooled: false }, { pooled: true }])('bwrap sandbox file system (pooled: $pooled)', ({ pooled }) => {
  const fixture = useSandbox({ pooled });

  it('cannot read /etc/shadow', async () => {
    const result = await fixture().sh('cat /etc/shadow');
    expect(result.exit_code).not.toBe(0);
    expect(result.output).toMatch(/Permission denied/);
  });

  it('cannot write to the rootfs', async () => {
    const { sh } = fixture();
    const rootfs = ensureRootfs(loadConfig());
    const nodeBefore = await stat(join(rootfs, 'usr/local/bin/node'));
    for (const target of ['/x', '/etc/x', '/usr/x', '/home/agent/../../x', '/usr/local/bin/node', '/etc/passwd', '/workspace/../x']) {
      const result = await sh(`echo x >> ${target}`);
      expect(result.exit_code, target).not.toBe(0);
      expect(result.output, target).toMatch(/Read-only file system|Permission denied/);
    }
    expect((await sh('mkdir /opt/x')).exit_code).not.toBe(0);
    expect((await sh('rm -f /usr/bin/env')).exit_code).not.toBe(0);
    const nodeAfter = await stat(join(rootfs, 'usr/local/bin/node'));
    expect(nodeAfter.mtimeMs).toBe(nodeBefore.mtimeMs);
    expect(nodeAfter.size).toBe(nodeBefore.size);
  });

  it('can write to /workspace, /tmp and its home', async () => {
    const { sh, workspace } = fixture();
    const result = await sh('echo w > /workspace/w.txt && echo t > /tmp/t.txt && echo h > ~/h.txt && cat /workspace/w.txt /tmp/t.txt ~/h.txt');
    expect(result.exit_code).toBe(0);
    expect(result.output).toBe('w\nt\nh\n');
    expect(await readFile(join(workspace, 'w.txt'), 'utf8')).toBe('w\n');
  });

  it("sees neither another sandbox's /tmp nor its workspace", async () => {
    const { sh, workspace } = fixture();
    const marker = `marker-${process.pid}-${Date.now()}`;
    expect((await sh(`echo secret > /tmp/${marker} && echo secret > /workspace/${marker}`)).exit_code).toBe(0);
    await withSandbox(async (other) => {
      expect((await other.sh(`test -e /tmp/${marker}`)).exit_code).not.toBe(0);
      expect((await other.sh(`test -e /workspace/${marker}`)).exit_code).not.toBe(0);
      expect((await other.sh(`test -e ${workspace}`)).exit_code).not.toBe(0);
      const search = await other.sh(`find / -path /proc -prune -o -name '${marker}' -print 2>/dev/null; true`, 60_000);
      expect(search.output.trim()).toBe('');
      // And the other way round.
      expect((await other.sh(`echo other > /tmp/${marker}-other`)).exit_code).toBe(0);
      expect((await sh(`test -e /tmp/${marker}-other`)).exit_code).not.toBe(0);
    });
  });

  it('does not see host paths', async () => {
    const { sh } = fixture();
    for (const path of ['/var/lib/workcell', '/work', '/sys/fs/cgroup', '/run/docker.sock', '/var/run/docker.sock']) {
      expect((await sh(`test -e ${path}`)).exit_code, path).not.toBe(0);
    }
    const mounts = (await sh('cat /proc/self/mounts')).output;
    expect(mounts).not.toMatch(/\/var\/lib\/workcell|workcell-test-/);
  });
});
