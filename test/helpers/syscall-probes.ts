// Python programs that make raw system calls through ctypes, so that what a test sees is the sandbox's seccomp filter
// and kernel, not the checks of a shell or a library. They print `name result` lines, result being OK or the errno's
// name (EPERM, ENOSYS, ...). Used by the bwrap escape suite and the shared runtime suite.
import { syscallNumber, type SeccompArch } from '../../src/runtimes/seccomp.ts';

export interface ProbeCall {
  name: string;
  number: number;
  args: number[];
}

/** Makes each call in turn and prints `name result` per line. */
export function probeScript(calls: readonly ProbeCall[]): string {
  const table = JSON.stringify(calls.map((call) => [call.name, call.number, call.args]));
  return [
    'import ctypes, errno, json',
    'libc = ctypes.CDLL(None, use_errno=True)',
    'libc.syscall.restype = ctypes.c_long',
    `for name, number, args in json.loads('${table}'):`,
    '    ctypes.set_errno(0)',
    '    result = libc.syscall(ctypes.c_long(number), *[ctypes.c_long(a) for a in args])',
    "    print(name, errno.errorcode.get(ctypes.get_errno(), 'OK') if result == -1 else 'OK', flush=True)",
  ].join('\n');
}

/** A shell command that runs a probe script with the sandbox's python3. */
export function probeCommand(script: string): string {
  return `python3 - <<'PROBE_EOF'\n${script}\nPROBE_EOF`;
}

export function parseProbe(output: string): Map<string, string> {
  return new Map(
    output
      .trim()
      .split('\n')
      .filter((line) => /^\S+ [A-Z0-9]+$/.test(line))
      .map((line) => line.split(' ') as [string, string]),
  );
}

const AF_UNIX = 1;
const AF_VSOCK = 40;
const SOCK_STREAM = 1;

/**
 * What every runtime must refuse (issue 9): AF_VSOCK sockets and socket pairs (the way to the hypervisor and other
 * VMs) and modify_ldt (x86_64; a read of 0 bytes, which succeeds wherever the call is let through). Plus two that
 * tell whether workcell's own filter is on where another one (Docker's default profile, gVisor) answers too:
 * io_uring_setup reaches the kernel (EFAULT for its NULL parameters) under Docker's default profile and in gVisor,
 * and only workcell's filter answers it with EPERM; an AF_UNIX socket must still work.
 */
export function escapeProbeCalls(arch: SeccompArch): ProbeCall[] {
  const number = (name: string) => {
    const found = syscallNumber(arch, name);
    if (found === undefined) throw new Error(`no ${name} on ${arch}`);
    return found;
  };
  return [
    { name: 'socket-vsock', number: number('socket'), args: [AF_VSOCK, SOCK_STREAM, 0] },
    { name: 'socketpair-vsock', number: number('socketpair'), args: [AF_VSOCK, SOCK_STREAM, 0, 0] },
    ...(arch === 'x86_64' ? [{ name: 'modify_ldt', number: number('modify_ldt'), args: [0, 0, 0] }] : []),
    { name: 'io_uring_setup', number: number('io_uring_setup'), args: [1, 0] },
    { name: 'socket-unix', number: number('socket'), args: [AF_UNIX, SOCK_STREAM, 0] },
  ];
}

/** x86_64 calls the sweep does not make: they block forever with zero arguments, or fork the prober itself. */
export const sweepSkipped = {
  x86_64: { 23: 'select', 34: 'pause', 56: 'clone', 57: 'fork', 58: 'vfork', 70: 'msgrcv', 270: 'pselect6', 271: 'ppoll' },
  aarch64: { 72: 'pselect6', 73: 'ppoll', 188: 'msgrcv', 220: 'clone' },
} as const satisfies Record<SeccompArch, Record<number, string>>;

/**
 * Every system call number from 0 to `last`, each made with six zero arguments in a forked child (so that one which
 * exits, crashes or changes the prober's state harms nothing), with a 5 s alarm for any that would block. Prints
 * `number result` lines: OK, an errno name, SIG<n> (the child was killed), EXITED (the call ended the child) or
 * TIMEOUT.
 */
export function syscallSweepScript(arch: SeccompArch, last: number): string {
  const skipped = Object.keys(sweepSkipped[arch]).map(Number);
  return [
    'import ctypes, errno, os, signal',
    'libc = ctypes.CDLL(None, use_errno=True)',
    'libc.syscall.restype = ctypes.c_long',
    `skipped = set(${JSON.stringify(skipped)})`,
    `for number in range(${last + 1}):`,
    '    if number in skipped:',
    '        continue',
    '    read_end, write_end = os.pipe()',
    '    pid = os.fork()',
    '    if pid == 0:',
    '        os.close(read_end)',
    '        signal.alarm(5)',
    '        ctypes.set_errno(0)',
    '        result = libc.syscall(ctypes.c_long(number), *[ctypes.c_long(0)] * 6)',
    "        os.write(write_end, (errno.errorcode.get(ctypes.get_errno(), 'E%d' % ctypes.get_errno()) if result == -1 else 'OK').encode())",
    '        os._exit(0)',
    '    os.close(write_end)',
    "    answer = b''",
    '    while True:',
    '        chunk = os.read(read_end, 64)',
    '        if not chunk:',
    '            break',
    '        answer += chunk',
    '    os.close(read_end)',
    '    _, status = os.waitpid(pid, os.WUNTRACED)',
    '    if os.WIFSTOPPED(status):',
    '        os.kill(pid, signal.SIGKILL)',
    '        _, status = os.waitpid(pid, 0)',
    "    if answer == b'' and os.WIFSIGNALED(status):",
    "        answer = b'TIMEOUT' if os.WTERMSIG(status) == signal.SIGALRM else b'SIG%d' % os.WTERMSIG(status)",
    "    print(number, (answer or b'EXITED').decode(), flush=True)",
  ].join('\n');
}

/** The sweep's answers by syscall number. */
export function parseSweep(output: string): Map<number, string> {
  const answers = new Map<number, string>();
  for (const line of output.split('\n')) {
    const match = /^(\d+) (\S+)$/.exec(line.trim());
    if (match !== null) answers.set(Number(match[1]), match[2]!);
  }
  return answers;
}
