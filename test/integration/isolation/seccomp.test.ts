// The syscall filter in a real sandbox: every denied call returns EPERM (clone3: ENOSYS) to a program that makes it
// directly (python3 ctypes, so the shell's own checks are not what is tested), a foreign ABI kills the caller, and
// ordinary work (bash, python, git, node, threads, fork) is unaffected.
import { describe, expect, it } from 'vitest';
import { deniedSyscalls, hostSeccompArch, syscallNumber } from '../../../src/runtimes/seccomp.ts';
import { useSandbox } from '../../helpers/sandbox.ts';
import { parseProbe as parse, probeScript } from '../../helpers/syscall-probes.ts';

const arch = hostSeccompArch()!;

// Cold, and started ahead as the warm pool does (runtimes/pool/): nothing of the handover may open a way out.
describe.each([{ pooled: false }, { pooled: true }])('the seccomp filter in a real sandbox (pooled: $pooled)', ({ pooled }) => {
  const fixture = useSandbox({ pooled });

  it('is loaded: one filter, in filter mode', async () => {
    const status = (await fixture().sh('grep -E "^Seccomp" /proc/self/status')).output;
    expect(status).toMatch(/^Seccomp:\s+2$/m);
    expect(status).toMatch(/^Seccomp_filters:\s+1$/m);
    expect(fixture().sandbox.isolation).toContain('seccomp filter');
  });

  it('answers every denied syscall with EPERM', async () => {
    // Arguments that would make each call fail some other way (EFAULT, EINVAL, EBADF) if the filter let it through.
    const calls = deniedSyscalls.flatMap((name) => {
      const number = syscallNumber(arch, name);
      return number === undefined ? [] : [{ name, number, args: [-1, 0, 0, 0, 0] }];
    });
    const { sh } = fixture();
    const result = await sh(`python3 - <<'EOF'\n${probeScript(calls)}\nEOF`);
    expect(result.exit_code, result.output).toBe(0);
    const errors = parse(result.output);
    expect(errors.size).toBe(calls.length);
    for (const { name } of calls) expect(errors.get(name), name).toBe('EPERM');
  });

  it('refuses new user namespaces in unshare and clone, answers clone3 with ENOSYS, refuses ASLR-weakening personalities', async () => {
    const CLONE_NEWUSER = 0x10000000;
    const SIGCHLD = 17;
    const calls = [
      { name: 'unshare-user', number: syscallNumber(arch, 'unshare')!, args: [CLONE_NEWUSER] },
      { name: 'clone-user', number: syscallNumber(arch, 'clone')!, args: [CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0] },
      { name: 'clone3', number: syscallNumber(arch, 'clone3')!, args: [0, 0] },
      { name: 'personality-no-aslr', number: syscallNumber(arch, 'personality')!, args: [0x0040000] },
      { name: 'personality-query', number: syscallNumber(arch, 'personality')!, args: [0xffffffff] },
      // Without CLONE_NEWUSER, unshare reaches the kernel, which refuses for want of CAP_SYS_ADMIN: also EPERM, but
      // from the kernel (an unshare of nothing at all succeeds).
      { name: 'unshare-nothing', number: syscallNumber(arch, 'unshare')!, args: [0] },
    ];
    const result = await fixture().sh(`python3 - <<'EOF'\n${probeScript(calls)}\nEOF`);
    const errors = parse(result.output);
    expect(Object.fromEntries(errors)).toEqual({
      'unshare-user': 'EPERM',
      'clone-user': 'EPERM',
      clone3: 'ENOSYS',
      'personality-no-aslr': 'EPERM',
      'personality-query': 'OK',
      'unshare-nothing': 'OK',
    });
  });

  it('refuses AF_VSOCK sockets and socket pairs (the way to the hypervisor), not other families', async () => {
    const AF_VSOCK = 40;
    const SOCK_STREAM = 1;
    const calls = [
      { name: 'socket-vsock', number: syscallNumber(arch, 'socket')!, args: [AF_VSOCK, SOCK_STREAM, 0] },
      { name: 'socketpair-vsock', number: syscallNumber(arch, 'socketpair')!, args: [AF_VSOCK, SOCK_STREAM, 0, 0] },
      { name: 'socket-unix', number: syscallNumber(arch, 'socket')!, args: [1, SOCK_STREAM, 0] },
      { name: 'socket-inet', number: syscallNumber(arch, 'socket')!, args: [2, SOCK_STREAM, 0] },
    ];
    const result = await fixture().sh(`python3 - <<'EOF'\n${probeScript(calls)}\nEOF\npython3 -c 'import socket; socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)' 2>&1 | tail -1`);
    const lines = result.output.trim().split('\n');
    expect(Object.fromEntries(parse(lines.slice(0, calls.length).join('\n')))).toEqual({ 'socket-vsock': 'EPERM', 'socketpair-vsock': 'EPERM', 'socket-unix': 'OK', 'socket-inet': 'OK' });
    expect(lines.at(-1)).toMatch(/PermissionError: \[Errno 1\] Operation not permitted/);
  });

  it.runIf(arch === 'x86_64')('refuses modify_ldt, even the harmless read of the LDT', async () => {
    // modify_ldt(0: read, buffer, 16): returns 0 (nothing read) or the LDT's bytes when the filter lets it through.
    const script = [
      'import ctypes, errno',
      'libc = ctypes.CDLL(None, use_errno=True)',
      'buffer = ctypes.create_string_buffer(16)',
      'result = libc.syscall(ctypes.c_long(154), ctypes.c_long(0), buffer, ctypes.c_long(16))',
      "print('modify_ldt', errno.errorcode.get(ctypes.get_errno(), 'OK') if result == -1 else 'OK')",
    ].join('\n');
    const result = await fixture().sh(`python3 - <<'EOF'\n${script}\nEOF`);
    expect(result.output.trim()).toBe('modify_ldt EPERM');
  });

  it.runIf(arch === 'x86_64')('refuses the x32 ABI with EPERM and kills a process that uses the i386 ABI', async () => {
    const { sh } = fixture();
    const x32 = await sh(`python3 - <<'EOF'\n${probeScript([{ name: 'x32-getpid', number: 0x40000000 | 39, args: [] }])}\nEOF`);
    expect(x32.output.trim()).toBe('x32-getpid EPERM');
    // `mov eax, 20 (getpid); int 0x80; ret` from executable memory: the 32-bit entry point, seen as AUDIT_ARCH_I386.
    const int80 = [
      'import ctypes, mmap',
      'code = bytes([0xb8, 20, 0, 0, 0, 0xcd, 0x80, 0xc3])',
      'memory = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)',
      'memory.write(code)',
      'address = ctypes.addressof(ctypes.c_char.from_buffer(memory))',
      'print("calling", flush=True)',
      'print("returned", ctypes.CFUNCTYPE(ctypes.c_int)(address)())',
    ].join('\n');
    const result = await sh(`python3 - <<'EOF' 2>/dev/null\n${int80}\nEOF\necho "status $?"`);
    expect(result.output).toMatch(/^calling$/m);
    expect(result.output).not.toMatch(/^returned/m);
    // SIGSYS (128 + 31) from the filter; SIGSEGV (128 + 11) where the kernel has no 32-bit entry at all.
    expect(result.output).toMatch(/status (159|139)/);
  });

  it('leaves ordinary work alone: bash, python, git, node, threads, fork, exec', async () => {
    const { sh } = fixture();
    const script = [
      'set -e',
      'cd "$(mktemp -d)"',
      'git init -q . && git -c user.email=a@b -c user.name=a commit -q --allow-empty -m first && git log --oneline | wc -l',
      'python3 -c "import threading, subprocess, os; t = threading.Thread(target=lambda: None); t.start(); t.join(); print(subprocess.run([\'echo\', \'py-ok\'], capture_output=True, text=True).stdout.strip()); pid = os.fork(); os._exit(0) if pid == 0 else os.waitpid(pid, 0)"',
      'node -e "const { Worker } = require(\'node:worker_threads\'); new Worker(\'1\', { eval: true }).on(\'exit\', () => console.log(require(\'node:child_process\').execSync(\'echo node-ok\').toString().trim()))"',
      'echo $(( 6 * 7 )) | cat',
    ].join('\n');
    const result = await sh(script, 60_000);
    expect(result.exit_code, result.output).toBe(0);
    expect(result.output.trim().split('\n')).toEqual(['1', 'py-ok', 'node-ok', '42']);
  });
});
