import { describe, expect, it } from 'vitest';
import {
  AF_VSOCK,
  BPF_JA,
  BPF_JEQ_K,
  BPF_JGE_K,
  BPF_JSET_K,
  BPF_LD_W_ABS,
  BPF_RET_K,
  CLONE_NEWUSER,
  ENOSYS,
  EPERM,
  SECCOMP_RET_ALLOW,
  SECCOMP_RET_ERRNO,
  SECCOMP_RET_KILL_PROCESS,
  X32_SYSCALL_BIT,
  auditArch,
  deniedSyscalls,
  encodeSeccompProgram,
  hostSeccompProgram,
  seccompInstructions,
  syscallNumber,
  type BpfInstruction,
  type SeccompArch,
} from './seccomp.ts';

/** A classic-BPF interpreter for the opcodes the generator emits: runs the filter on one seccomp_data. */
function run(program: readonly BpfInstruction[], data: { nr: number; arch: number; args?: number[] }): number {
  const bytes = Buffer.alloc(64);
  bytes.writeInt32LE(data.nr | 0, 0);
  bytes.writeUInt32LE(data.arch >>> 0, 4);
  (data.args ?? []).forEach((arg, i) => bytes.writeBigUInt64LE(BigInt(arg), 16 + i * 8));
  let accumulator = 0;
  for (let pc = 0, executed = 0; pc < program.length; pc++, executed++) {
    if (executed > program.length) throw new Error('loop');
    const { code, jt, jf, k } = program[pc]!;
    switch (code) {
      case BPF_LD_W_ABS:
        accumulator = bytes.readUInt32LE(k);
        break;
      case BPF_JEQ_K:
        pc += accumulator === k ? jt : jf;
        break;
      case BPF_JGE_K:
        pc += accumulator >>> 0 >= k >>> 0 ? jt : jf;
        break;
      case BPF_JSET_K:
        pc += (accumulator & k) !== 0 ? jt : jf;
        break;
      case BPF_JA:
        pc += k;
        break;
      case BPF_RET_K:
        return k >>> 0;
      default:
        throw new Error(`unexpected opcode ${code}`);
    }
  }
  throw new Error('fell off the end of the program');
}

const eperm = (SECCOMP_RET_ERRNO | EPERM) >>> 0;
const enosys = (SECCOMP_RET_ERRNO | ENOSYS) >>> 0;

describe.each<SeccompArch>(['x86_64', 'aarch64'])('the seccomp filter for %s', (arch) => {
  const program = seccompInstructions(arch);
  const call = (name: string, args: number[] = []) => run(program, { nr: syscallNumber(arch, name)!, arch: auditArch[arch], args });
  const nr = (name: string) => syscallNumber(arch, name)!;

  it('checks the architecture first and kills a foreign one', () => {
    expect(program[0]).toEqual({ code: BPF_LD_W_ABS, jt: 0, jf: 0, k: 4 });
    expect(program[1]).toMatchObject({ code: BPF_JEQ_K, k: auditArch[arch], jt: 0 });
    expect(program[1 + program[1]!.jf + 1]).toEqual({ code: BPF_RET_K, jt: 0, jf: 0, k: SECCOMP_RET_KILL_PROCESS });
    const i386 = 0x40000003;
    expect(run(program, { nr: 0, arch: i386 })).toBe(SECCOMP_RET_KILL_PROCESS);
    const other = arch === 'x86_64' ? auditArch.aarch64 : auditArch.x86_64;
    expect(run(program, { nr: nr('mount'), arch: other })).toBe(SECCOMP_RET_KILL_PROCESS);
  });

  it('denies every listed syscall with EPERM', () => {
    let checked = 0;
    for (const name of deniedSyscalls) {
      if (syscallNumber(arch, name) === undefined) continue;
      expect(call(name), name).toBe(eperm);
      checked++;
    }
    expect(checked).toBeGreaterThan(30);
  });

  it('allows ordinary syscalls', () => {
    // read, write, openat, execve, exit_group, mmap, futex, ptrace, getpid: a sample across the table.
    const ordinary = arch === 'x86_64' ? [0, 1, 257, 59, 231, 9, 202, 101, 39] : [63, 64, 56, 221, 94, 222, 98, 117, 172];
    for (const number of ordinary) expect(run(program, { nr: number, arch: auditArch[arch] }), String(number)).toBe(SECCOMP_RET_ALLOW);
  });

  it('refuses clone and unshare only when they ask for a user namespace', () => {
    const CLONE_NEWNS = 0x00020000;
    const forkFlags = 0x01200011; // CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID | SIGCHLD, as glibc's fork
    expect(call('clone', [forkFlags])).toBe(SECCOMP_RET_ALLOW);
    expect(call('clone', [forkFlags | CLONE_NEWUSER])).toBe(eperm);
    expect(call('clone', [0x1_0000_0000 * 7 + CLONE_NEWUSER])).toBe(eperm); // high bits do not hide the flag
    expect(call('unshare', [CLONE_NEWNS])).toBe(SECCOMP_RET_ALLOW); // fails later without CAP_SYS_ADMIN
    expect(call('unshare', [CLONE_NEWUSER])).toBe(eperm);
    expect(call('unshare', [CLONE_NEWUSER | CLONE_NEWNS])).toBe(eperm);
  });

  it('refuses AF_VSOCK sockets and socket pairs, and only those', () => {
    const AF_UNIX = 1;
    const AF_INET = 2;
    const AF_INET6 = 10;
    const AF_NETLINK = 16;
    const SOCK_STREAM = 1;
    for (const name of ['socket', 'socketpair']) {
      expect(call(name, [AF_VSOCK, SOCK_STREAM]), name).toBe(eperm);
      expect(call(name, [0x1_0000_0000 * 3 + AF_VSOCK, SOCK_STREAM]), `${name} with high bits`).toBe(eperm); // the kernel reads an int
      for (const family of [AF_UNIX, AF_INET, AF_INET6, AF_NETLINK, 0]) expect(call(name, [family, SOCK_STREAM]), `${name}(${family})`).toBe(SECCOMP_RET_ALLOW);
    }
  });

  it('answers clone3 with ENOSYS, so libc falls back to clone', () => {
    expect(call('clone3')).toBe(enosys);
  });

  it('allows only the harmless personalities', () => {
    for (const value of [0, 8, 0x20000, 0x20008, 0xffffffff]) expect(call('personality', [value]), String(value)).toBe(SECCOMP_RET_ALLOW);
    const ADDR_NO_RANDOMIZE = 0x0040000;
    const READ_IMPLIES_EXEC = 0x0400000;
    for (const value of [ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC, 0x0100000]) expect(call('personality', [value]), String(value)).toBe(eperm);
  });

  it('has every jump inside the program, landing on an instruction', () => {
    program.forEach((instruction, i) => {
      if (instruction.code === BPF_JA) expect(i + 1 + instruction.k).toBeLessThan(program.length);
      else if (instruction.code !== BPF_RET_K && instruction.code !== BPF_LD_W_ABS) {
        expect(i + 1 + instruction.jt).toBeLessThan(program.length);
        expect(i + 1 + instruction.jf).toBeLessThan(program.length);
      }
    });
    expect(program.at(-1)?.code).toBe(BPF_RET_K);
  });
});

describe('the x86_64 filter', () => {
  const program = seccompInstructions('x86_64');
  it('refuses the x32 ABI with EPERM', () => {
    expect(run(program, { nr: X32_SYSCALL_BIT | 1, arch: auditArch.x86_64 })).toBe(eperm);
    expect(run(program, { nr: X32_SYSCALL_BIT | 39, arch: auditArch.x86_64 })).toBe(eperm);
  });
  it('denies iopl, ioperm and modify_ldt, which aarch64 does not have', () => {
    expect(run(program, { nr: 172, arch: auditArch.x86_64 })).toBe(eperm);
    expect(run(program, { nr: 173, arch: auditArch.x86_64 })).toBe(eperm);
    expect(run(program, { nr: 154, arch: auditArch.x86_64 })).toBe(eperm);
    for (const name of ['iopl', 'ioperm', 'modify_ldt']) expect(syscallNumber('aarch64', name), name).toBeUndefined();
  });
  it('has the socket calls at their x86_64 numbers', () => {
    expect(run(program, { nr: 41, arch: auditArch.x86_64, args: [AF_VSOCK] })).toBe(eperm);
    expect(run(program, { nr: 53, arch: auditArch.x86_64, args: [AF_VSOCK] })).toBe(eperm);
    expect(run(program, { nr: 41, arch: auditArch.x86_64, args: [2] })).toBe(SECCOMP_RET_ALLOW);
  });
});

describe('the aarch64 filter', () => {
  it('has the socket calls at their aarch64 numbers', () => {
    const program = seccompInstructions('aarch64');
    expect(run(program, { nr: 198, arch: auditArch.aarch64, args: [AF_VSOCK] })).toBe(eperm);
    expect(run(program, { nr: 199, arch: auditArch.aarch64, args: [AF_VSOCK] })).toBe(eperm);
    expect(run(program, { nr: 198, arch: auditArch.aarch64, args: [2] })).toBe(SECCOMP_RET_ALLOW);
  });
});

describe('encoding', () => {
  it('writes struct sock_filter entries of 8 bytes, little-endian', () => {
    const encoded = encodeSeccompProgram([{ code: 0x15, jt: 2, jf: 7, k: 0xc000003e }]);
    expect([...encoded]).toEqual([0x15, 0x00, 0x02, 0x07, 0x3e, 0x00, 0x00, 0xc0]);
    const host = hostSeccompProgram();
    if (process.arch === 'x64' || process.arch === 'arm64') {
      expect(host).toBeDefined();
      expect(host!.length % 8).toBe(0);
      expect(host!.length / 8).toBeLessThan(256);
    }
  });
});
