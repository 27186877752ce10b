// The sandbox's system-call filter: one policy, compiled here to a classic-BPF seccomp program (no libseccomp, no
// helper binary) for x86_64 and aarch64. bwrap loads it with `--seccomp FD`; docker and gvisor containers and sandboxd
// in a microVM get the same program from seccomp-launcher.ts. The filter only ever takes away: every syscall not named
// here is allowed, and what it denies returns an error (EPERM, or ENOSYS where libc must fall back), never a crash —
// except a foreign ABI (a 32-bit `int 0x80` call on x86_64, say), which kills the process: nothing in the rootfs uses
// one, and exploits use it to slip past filters written for the native table.
//
// Why these: a coding sandbox never needs them, and each widens the kernel's attack surface (mount and the new mount
// API, kexec, modules, bpf, perf, userfaultfd, io_uring, keyrings, namespaces, file handles, raw I/O ports, clocks,
// swap, quotas, accounting, the kernel log), or reaches past the sandbox: AF_VSOCK sockets talk to the hypervisor
// and other VMs on the same host (virtio-vsock, VMCI, Hyper-V sockets) without any network namespace in the way, and
// modify_ldt (x86_64) installs 16-bit and 32-bit segments, kernel code behind several past exploits. Most already fail
// without capabilities; the filter makes sure the kernel code behind them is never reached. ptrace stays allowed:
// inside its own pid and user namespace a sandbox can only see and trace its own processes (host processes have no pid
// there), and gdb and strace need it; since Linux 4.8 seccomp re-checks a syscall after a tracer changes it, so ptrace
// cannot be used to dodge this filter.

export type SeccompArch = 'x86_64' | 'aarch64';

/** Denied with EPERM. */
export const deniedSyscalls = [
  // mounts and the new mount API
  'mount', 'umount2', 'pivot_root', 'chroot', 'open_tree', 'move_mount', 'fsopen', 'fsconfig', 'fsmount', 'fspick', 'mount_setattr',
  // namespaces (unshare and clone are checked by flag below)
  'setns',
  // the running kernel: kexec, modules, bpf, perf, userfaultfd, io_uring
  'kexec_load', 'kexec_file_load', 'init_module', 'finit_module', 'delete_module',
  'bpf', 'perf_event_open', 'userfaultfd', 'io_uring_setup', 'io_uring_enter', 'io_uring_register',
  // keyrings
  'keyctl', 'add_key', 'request_key',
  // file handles (open_by_handle_at walks around mount boundaries)
  'open_by_handle_at', 'name_to_handle_at',
  // the machine: power, swap, clocks, quotas, accounting, the kernel log, terminals, I/O ports
  'reboot', 'swapon', 'swapoff', 'settimeofday', 'clock_settime', 'clock_adjtime', 'quotactl', 'quotactl_fd', 'acct',
  'lookup_dcookie', 'vhangup', 'nfsservctl', 'syslog', 'fanotify_init', 'iopl', 'ioperm', 'uselib', '_sysctl', 'ustat', 'sysfs',
  // x86 segments (x86_64 only)
  'modify_ldt',
] as const;

/** Answered with ENOSYS so that libc falls back: clone3 takes its flags in a struct the filter cannot read. */
export const unimplementedSyscalls = ['clone3'] as const;

/** Allowed unless the flags in their first argument ask for a new user namespace. */
export const userNamespaceCheckedSyscalls = ['clone', 'unshare'] as const;
export const CLONE_NEWUSER = 0x10000000;

/** Allowed unless their first argument (the address family) is AF_VSOCK: a way to the hypervisor and other VMs. */
export const addressFamilyCheckedSyscalls = ['socket', 'socketpair'] as const;
export const AF_VSOCK = 40;

/**
 * personality() values allowed (the rest get EPERM): the default (PER_LINUX), PER_LINUX32, UNAME26 and the query.
 * ADDR_NO_RANDOMIZE (which gdb and `setarch -R` use to turn off ASLR), READ_IMPLIES_EXEC and MMAP_PAGE_ZERO are
 * refused: they weaken exploit mitigations. gdb only warns and runs on.
 */
export const allowedPersonalities = [0x0, 0x8, 0x20000, 0x20008, 0xffffffff] as const;

type SyscallName =
  | (typeof deniedSyscalls)[number]
  | (typeof unimplementedSyscalls)[number]
  | (typeof userNamespaceCheckedSyscalls)[number]
  | (typeof addressFamilyCheckedSyscalls)[number]
  | 'personality';

/** Syscall numbers (from the kernel's unistd_64.h and asm-generic/unistd.h); absent where the arch has no such call. */
const syscallNumbers: Record<SeccompArch, Partial<Record<SyscallName, number>>> = {
  x86_64: {
    socket: 41, socketpair: 53, clone: 56, syslog: 103, uselib: 134, personality: 135, ustat: 136, sysfs: 139, vhangup: 153, pivot_root: 155,
    _sysctl: 156, chroot: 161, acct: 163, settimeofday: 164, mount: 165, umount2: 166, swapon: 167, swapoff: 168, reboot: 169,
    modify_ldt: 154, iopl: 172, ioperm: 173, init_module: 175, delete_module: 176, quotactl: 179, nfsservctl: 180, lookup_dcookie: 212,
    clock_settime: 227, kexec_load: 246, add_key: 248, request_key: 249, keyctl: 250, unshare: 272, perf_event_open: 298,
    fanotify_init: 300, name_to_handle_at: 303, open_by_handle_at: 304, clock_adjtime: 305, setns: 308, finit_module: 313,
    kexec_file_load: 320, bpf: 321, userfaultfd: 323, io_uring_setup: 425, io_uring_enter: 426, io_uring_register: 427,
    open_tree: 428, move_mount: 429, fsopen: 430, fsconfig: 431, fsmount: 432, fspick: 433, clone3: 435, mount_setattr: 442,
    quotactl_fd: 443,
  },
  aarch64: {
    lookup_dcookie: 18, umount2: 39, mount: 40, pivot_root: 41, nfsservctl: 42, chroot: 51, vhangup: 58, quotactl: 60, acct: 89,
    personality: 92, unshare: 97, kexec_load: 104, init_module: 105, delete_module: 106, clock_settime: 112, syslog: 116,
    reboot: 142, settimeofday: 170, add_key: 217, request_key: 218, keyctl: 219, clone: 220, swapon: 224, swapoff: 225,
    socket: 198, socketpair: 199, perf_event_open: 241, fanotify_init: 262, name_to_handle_at: 264, open_by_handle_at: 265, clock_adjtime: 266, setns: 268,
    finit_module: 273, bpf: 280, userfaultfd: 282, kexec_file_load: 294, io_uring_setup: 425, io_uring_enter: 426,
    io_uring_register: 427, open_tree: 428, move_mount: 429, fsopen: 430, fsconfig: 431, fsmount: 432, fspick: 433, clone3: 435,
    mount_setattr: 442, quotactl_fd: 443,
  },
};

export function syscallNumber(arch: SeccompArch, name: string): number | undefined {
  return (syscallNumbers[arch] as Record<string, number | undefined>)[name];
}

/** AUDIT_ARCH_* values (linux/audit.h) as seccomp_data.arch reports them. */
export const auditArch: Record<SeccompArch, number> = { x86_64: 0xc000003e, aarch64: 0xc00000b7 };
/** x32 syscalls run with the x86_64 audit arch and this bit set in the number. */
export const X32_SYSCALL_BIT = 0x40000000;

export const SECCOMP_RET_KILL_PROCESS = 0x80000000;
export const SECCOMP_RET_ERRNO = 0x00050000;
export const SECCOMP_RET_ALLOW = 0x7fff0000;
export const EPERM = 1;
export const ENOSYS = 38;

// Classic BPF opcodes (linux/filter.h).
export const BPF_LD_W_ABS = 0x20; // BPF_LD | BPF_W | BPF_ABS
export const BPF_JEQ_K = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
export const BPF_JGE_K = 0x35; // BPF_JMP | BPF_JGE | BPF_K
export const BPF_JSET_K = 0x45; // BPF_JMP | BPF_JSET | BPF_K
export const BPF_JA = 0x05; // BPF_JMP | BPF_JA
export const BPF_RET_K = 0x06; // BPF_RET | BPF_K

/** Offsets in struct seccomp_data: nr (int), arch (u32), instruction_pointer (u64), args (u64[6]). */
const offsetNr = 0;
const offsetArch = 4;
/** The low 32 bits of argument 0 (both architectures are little-endian). */
const offsetArg0Low = 16;

export interface BpfInstruction {
  code: number;
  jt: number;
  jf: number;
  k: number;
}

type Target = string | 0;
type Step = { label: string } | { code: number; k: number; jt?: Target; jf?: Target; to?: string };

/** The policy as a list of BPF instructions for one architecture, jumps resolved. */
export function seccompInstructions(arch: SeccompArch): BpfInstruction[] {
  const steps: Step[] = [];
  const jumpIf = (code: number, k: number, jt: Target, jf: Target = 0) => steps.push({ code, k, jt, jf });
  const ret = (k: number) => steps.push({ code: BPF_RET_K, k });
  const label = (name: string) => steps.push({ label: name });

  steps.push({ code: BPF_LD_W_ABS, k: offsetArch });
  jumpIf(BPF_JEQ_K, auditArch[arch], 0, 'kill');
  steps.push({ code: BPF_LD_W_ABS, k: offsetNr });
  if (arch === 'x86_64') jumpIf(BPF_JGE_K, X32_SYSCALL_BIT, 'eperm');
  for (const name of userNamespaceCheckedSyscalls) jumpIf(BPF_JEQ_K, requireNumber(arch, name), 'check-newuser');
  for (const name of addressFamilyCheckedSyscalls) jumpIf(BPF_JEQ_K, requireNumber(arch, name), 'check-family');
  for (const name of unimplementedSyscalls) jumpIf(BPF_JEQ_K, requireNumber(arch, name), 'enosys');
  jumpIf(BPF_JEQ_K, requireNumber(arch, 'personality'), 'check-personality');
  for (const name of deniedSyscalls) {
    const number = syscallNumber(arch, name);
    if (number !== undefined) jumpIf(BPF_JEQ_K, number, 'eperm');
  }
  ret(SECCOMP_RET_ALLOW);

  label('check-newuser');
  steps.push({ code: BPF_LD_W_ABS, k: offsetArg0Low });
  jumpIf(BPF_JSET_K, CLONE_NEWUSER, 'eperm', 'allow');

  label('check-family');
  steps.push({ code: BPF_LD_W_ABS, k: offsetArg0Low });
  jumpIf(BPF_JEQ_K, AF_VSOCK, 'eperm', 'allow');

  label('check-personality');
  steps.push({ code: BPF_LD_W_ABS, k: offsetArg0Low });
  for (const value of allowedPersonalities) jumpIf(BPF_JEQ_K, value, 'allow');
  steps.push({ code: BPF_JA, k: 0, to: 'eperm' });

  label('allow');
  ret(SECCOMP_RET_ALLOW);
  label('eperm');
  ret(SECCOMP_RET_ERRNO | EPERM);
  label('enosys');
  ret(SECCOMP_RET_ERRNO | ENOSYS);
  label('kill');
  ret(SECCOMP_RET_KILL_PROCESS);

  return assemble(steps);
}

function requireNumber(arch: SeccompArch, name: SyscallName): number {
  const number = syscallNumber(arch, name);
  if (number === undefined) throw new Error(`no ${name} syscall number for ${arch}`);
  return number;
}

/** Resolves labels to relative jump offsets; conditional jumps reach at most 255 instructions ahead. */
function assemble(steps: Step[]): BpfInstruction[] {
  const positions = new Map<string, number>();
  let count = 0;
  for (const step of steps) {
    if ('label' in step) positions.set(step.label, count);
    else count++;
  }
  const program: BpfInstruction[] = [];
  const offset = (target: Target | undefined, from: number, max: number): number => {
    if (target === undefined || target === 0) return 0;
    const position = positions.get(target);
    if (position === undefined) throw new Error(`seccomp: unknown label ${target}`);
    const distance = position - from - 1;
    if (distance < 0 || distance > max) throw new Error(`seccomp: jump to ${target} out of range (${distance})`);
    return distance;
  };
  for (const step of steps) {
    if ('label' in step) continue;
    const index = program.length;
    if (step.to !== undefined) program.push({ code: step.code, jt: 0, jf: 0, k: offset(step.to, index, 0xffffffff) });
    else program.push({ code: step.code, jt: offset(step.jt, index, 255), jf: offset(step.jf, index, 255), k: step.k >>> 0 });
  }
  if (program.length > 4096) throw new Error('seccomp: program longer than BPF_MAXINSNS');
  return program;
}

/** struct sock_filter[] in the host's byte order (little-endian on both architectures), as bwrap --seccomp reads it. */
export function encodeSeccompProgram(program: readonly BpfInstruction[]): Buffer {
  const buffer = Buffer.alloc(program.length * 8);
  program.forEach((instruction, i) => {
    buffer.writeUInt16LE(instruction.code, i * 8);
    buffer.writeUInt8(instruction.jt, i * 8 + 2);
    buffer.writeUInt8(instruction.jf, i * 8 + 3);
    buffer.writeUInt32LE(instruction.k, i * 8 + 4);
  });
  return buffer;
}

/** The architecture of this host's processes, or undefined where the filter has no syscall table. */
export function hostSeccompArch(): SeccompArch | undefined {
  if (process.arch === 'x64') return 'x86_64';
  if (process.arch === 'arm64') return 'aarch64';
  return undefined;
}

let cached: { arch: SeccompArch; program: Buffer } | undefined;

/** The compiled filter for this host, ready for bwrap --seccomp; undefined on an architecture it does not cover. */
export function hostSeccompProgram(): Buffer | undefined {
  const arch = hostSeccompArch();
  if (arch === undefined) return undefined;
  if (cached?.arch !== arch) cached = { arch, program: encodeSeccompProgram(seccompInstructions(arch)) };
  return cached.program;
}
