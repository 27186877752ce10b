// Escape attempts from inside a real sandbox, each asserting that it fails and that the host is unharmed. These
// extend test/integration/bwrap/ (filesystem.test.ts: host paths, the docker socket, the rootfs, another sandbox's
// /tmp and workspace; identity.test.ts: capabilities, no_new_privs, nested user namespaces; processes.test.ts: host
// processes) with mounts, namespaces, ptrace, kernel modules, chroot, setuid binaries, /proc and /sys of the host.
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useSandbox, withSandbox } from '../../helpers/sandbox.ts';

// Cold, and started ahead as the warm pool does (runtimes/pool/): nothing of the handover may open a way out.
describe.each([{ pooled: false }, { pooled: true }])('escapes from a real sandbox (pooled: $pooled)', ({ pooled }) => {
  const fixture = useSandbox({ pooled });
  let hostDir: string;
  const secret = `host-secret-${process.pid}-${Date.now()}`;

  beforeAll(async () => {
    hostDir = await mkdtemp(join(tmpdir(), 'workcell-host-'));
    await writeFile(join(hostDir, 'secret.txt'), secret, { mode: 0o644 });
  });
  afterAll(async () => {
    await rm(hostDir, { recursive: true, force: true });
  });

  it('cannot read host files outside the rootfs and workspace', async () => {
    const { sh } = fixture();
    for (const path of [join(hostDir, 'secret.txt'), '/root', '/home/workcell-sandbox', '/var/lib/workcell/workcell.db', '/etc/workcell', '/proc/1/root/etc/hostname']) {
      const result = await sh(`cat ${path} 2>&1; ls ${path} 2>&1`);
      expect(result.output, path).not.toContain(secret);
    }
    // Nothing anywhere in the sandbox's view holds the secret.
    const search = await sh(`grep -rls --exclude-dir=proc --exclude-dir=sys '${secret}' / 2>/dev/null; true`, 60_000);
    expect(search.output.trim()).toBe('');
  });

  it("cannot reach another job's workspace through its host path", async () => {
    await withSandbox(async (other) => {
      await writeFile(join(other.workspace, 'theirs.txt'), secret);
      const { sh } = fixture();
      for (const path of [join(other.workspace, 'theirs.txt'), `/proc/1/root${other.workspace}/theirs.txt`]) {
        expect((await sh(`cat ${path} 2>&1`)).output, path).not.toContain(secret);
      }
    });
  });

  it('sees no host process in /proc and cannot read or trace one', async () => {
    const { sh } = fixture();
    const hostPid = process.pid;
    expect((await sh(`test -e /proc/${hostPid}/environ`)).exit_code).not.toBe(0);
    // ptrace(PTRACE_ATTACH) of the host pid: no such process in this pid namespace.
    const attach = await sh(`python3 -c "
import ctypes, errno
libc = ctypes.CDLL(None, use_errno=True)
result = libc.ptrace(16, ${hostPid}, None, None)
print('attach', errno.errorcode.get(ctypes.get_errno()) if result == -1 else 'OK')
"`);
    expect(attach.output.trim()).toBe('attach ESRCH');
    // ptrace stays usable inside the sandbox (debuggers): a child of our own can be traced.
    const own = await sh(`python3 -c "
import ctypes, os, signal, time
libc = ctypes.CDLL(None, use_errno=True)
child = os.fork()
if child == 0:
    time.sleep(30)
    os._exit(0)
result = libc.ptrace(16, child, None, None)
os.waitpid(child, 0)
print('own child', 'traced' if result == 0 else ctypes.get_errno())
libc.ptrace(17, child, None, None)
os.kill(child, signal.SIGKILL)
"`);
    expect(own.output.trim()).toBe('own child traced');
    // The host's sysctls, kernel log and devices are out of reach.
    expect((await sh('echo 1 > /proc/sys/kernel/sysrq')).exit_code).not.toBe(0);
    expect((await sh('dmesg')).exit_code).not.toBe(0);
    const devices = (await sh('ls /dev')).output.trim().split(/\s+/);
    expect(devices).toContain('null');
    for (const device of devices) expect(device).not.toMatch(/^(mem|kmem|kmsg|port|[sv]d[a-z]+\d*|nvme.*|loop.*|kvm|fuse|dm-.*|vhost.*)$/);
  });

  it('cannot mount, unshare a user namespace, or load kernel modules', async () => {
    const { sh } = fixture();
    const mount = await sh('mount -t tmpfs none /mnt 2>&1; mount --bind /workspace /mnt 2>&1; echo "exit $?"');
    expect(mount.output).toMatch(/permission denied|must be superuser|Operation not permitted/i);
    expect(mount.output).toMatch(/exit [1-9]/);
    for (const command of ['unshare -U true', 'unshare -r true', 'unshare --user --map-root-user --mount true']) {
      const result = await sh(`${command} 2>&1`);
      expect(result.exit_code, command).not.toBe(0);
      expect(result.output, command).toMatch(/Operation not permitted/);
    }
    const module = await sh(`python3 -c "
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
fd = os.open('/etc/hostname', os.O_RDONLY)
result = libc.syscall(${process.arch === 'arm64' ? 273 : 313}, fd, b'', 0)
print('finit_module', errno.errorcode.get(ctypes.get_errno()) if result == -1 else 'OK')
"`);
    expect(module.output.trim()).toBe('finit_module EPERM');
    expect((await sh('test -e /lib/modules/$(uname -r)')).exit_code).not.toBe(0);
  });

  it('cannot chroot (the first step of the classic chroot escape)', async () => {
    const { sh } = fixture();
    const result = await sh('mkdir -p /tmp/jail && /usr/sbin/chroot /tmp/jail /bin/true 2>&1; python3 -c "import os; os.chroot(\'/tmp/jail\')" 2>&1 | tail -1');
    expect(result.output).toMatch(/Operation not permitted/);
    expect(result.output).not.toMatch(/^$/);
  });

  it('gains nothing from setuid binaries, and setuid files it makes are not root on the host', async () => {
    const { sh, workspace, sandbox } = fixture();
    // mount and su are setuid root in the rootfs; with no_new_privs they run as uid 1000.
    const su = await sh('su -c id root < /dev/null 2>&1; echo "exit $?"');
    expect(su.output).not.toMatch(/uid=0/);
    const mount = await sh('ls -l /usr/bin/mount | cut -c1-10; mount -o remount,rw / 2>&1; echo "exit $?"');
    expect(mount.output).toMatch(/^-rwsr-xr-x/);
    expect(mount.output).toMatch(/exit [1-9]/);
    expect((await sh('id -u')).output.trim()).toBe('1000');
    expect((await sh('cp /usr/bin/id /workspace/suid-id && chmod u+s /workspace/suid-id && ls -l /workspace/suid-id | cut -c1-10')).output.trim()).toBe('-rwsr-xr-x');
    const onHost = await stat(join(workspace, 'suid-id'));
    expect(onHost.uid).toBe(sandbox.hostUid);
    if (process.getuid?.() === 0) expect(onHost.uid).not.toBe(0);
    expect(await readFile(join(hostDir, 'secret.txt'), 'utf8')).toBe(secret);
  });
});
