// The seccomp launcher: puts the sandbox's system-call filter (seccomp.ts, the program bwrap loads with --seccomp) on
// sandboxes that bwrap does not start: docker and gvisor containers, and sandboxd in a microVM. It is a few lines of
// the image's python3 (ctypes: prctl(PR_SET_NO_NEW_PRIVS), then prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER)) that
// install the filter on their own process and then execve the command they were given. A filter is kept across
// fork and execve and can never be removed, so the command and everything it starts run under it.
//
// Filters stack: a container keeps Docker's own default profile, and this filter is added on top. For each system call
// the kernel runs both and takes the most restrictive answer (kill, then errno, then allow); between two errno answers
// the one of the filter installed last (this one) wins, which is how clone3 gets ENOSYS under gVisor, whose 2022 runsc
// answers the default profile's clone3 rule with EPERM (glibc then never falls back to clone, and no thread starts).
// It fails closed: when the filter cannot be installed it exits 126 and the command never runs. It never runs
// anything before the filter is on.

/** The launcher's exit status when the filter could not be installed. */
export const launcherFailureStatus = 126;

/**
 * argv[1]: the program (struct sock_filter[], base64); argv[2:]: the command. -I -S: no environment variables, no
 * user or site packages are read (the command's environment is left as it is).
 */
const launcherSource = `
import base64, ctypes, os, sys
program = base64.b64decode(sys.argv[1], validate=True)
if len(program) == 0 or len(program) % 8 != 0 or len(program) // 8 > 4096 or len(sys.argv) < 3:
    sys.stderr.write("workcell-seccomp: usage: PROGRAM COMMAND...\\n")
    sys.exit(${launcherFailureStatus})
class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]
fprog = SockFprog(len(program) // 8, program)
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]
PR_SET_SECCOMP, PR_SET_NO_NEW_PRIVS, SECCOMP_MODE_FILTER = 22, 38, 2
if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, None, 0, 0) != 0 or libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.cast(ctypes.byref(fprog), ctypes.c_void_p), 0, 0) != 0:
    sys.stderr.write("workcell-seccomp: cannot install the system-call filter: %s\\n" % os.strerror(ctypes.get_errno()))
    sys.exit(${launcherFailureStatus})
os.execv(sys.argv[2], sys.argv[2:])
`;

/** The argv that installs `program` and then runs the command appended to it (an absolute path and its arguments). */
export function seccompLauncher(program: Buffer, python = '/usr/bin/python3'): string[] {
  return [python, '-I', '-S', '-c', launcherSource, program.toString('base64')];
}
