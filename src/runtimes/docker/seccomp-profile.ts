// The sandbox's system-call policy (../seccomp.ts, the same lists bwrap's BPF program is compiled from) as a Docker
// seccomp profile (JSON for `--security-opt seccomp=...`; runc loads it with libseccomp, gVisor's sentry enforces it
// itself). Everything not named is allowed, as in the BPF program. Differences forced by the format: personality()
// is refused by flag (ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC, MMAP_PAGE_ZERO) rather than allowed by value, and a
// foreign ABI is refused by listing only the native architecture (libseccomp kills calls of architectures a filter
// does not list, and refuses x32 calls in an x86_64 filter).
import { CLONE_NEWUSER, deniedSyscalls, ENOSYS, EPERM, hostSeccompArch, unimplementedSyscalls, userNamespaceCheckedSyscalls, type SeccompArch } from '../seccomp.ts';

const architectures: Record<SeccompArch, string> = { x86_64: 'SCMP_ARCH_X86_64', aarch64: 'SCMP_ARCH_AARCH64' };
/** personality() flags that weaken exploit mitigations (linux/personality.h). */
const refusedPersonalityFlags = { ADDR_NO_RANDOMIZE: 0x0040000, MMAP_PAGE_ZERO: 0x0100000, READ_IMPLIES_EXEC: 0x0400000 };

interface SyscallRule {
  names: string[];
  action: 'SCMP_ACT_ERRNO';
  errnoRet: number;
  args?: Array<{ index: number; value: number; valueTwo: number; op: 'SCMP_CMP_MASKED_EQ' }>;
  comment?: string;
}

export interface DockerSeccompProfile {
  defaultAction: 'SCMP_ACT_ALLOW';
  architectures: string[];
  syscalls: SyscallRule[];
}

/**
 * `gvisor`: gVisor (2022) enforces OCI profiles in its sentry (runsc --oci-seccomp) but answers an errno rule for
 * clone3 with something other than ENOSYS, so glibc does not fall back to clone and no thread can start; its sentry
 * does not implement clone3 anyway (ENOSYS), so that rule is left out there.
 */
export function dockerSeccompProfile(arch: SeccompArch | undefined = hostSeccompArch(), options: { gvisor?: boolean } = {}): DockerSeccompProfile {
  const flagRule = (names: string[], flag: number, comment: string): SyscallRule => ({
    names,
    action: 'SCMP_ACT_ERRNO',
    errnoRet: EPERM,
    args: [{ index: 0, value: flag, valueTwo: flag, op: 'SCMP_CMP_MASKED_EQ' }],
    comment,
  });
  return {
    defaultAction: 'SCMP_ACT_ALLOW',
    architectures: arch === undefined ? [] : [architectures[arch]],
    syscalls: [
      { names: [...deniedSyscalls], action: 'SCMP_ACT_ERRNO', errnoRet: EPERM, comment: 'never needed by a coding sandbox (see src/runtimes/seccomp.ts)' },
      ...(options.gvisor === true ? [] : [{ names: [...unimplementedSyscalls] as string[], action: 'SCMP_ACT_ERRNO' as const, errnoRet: ENOSYS, comment: 'clone3: flags in a struct; ENOSYS makes libc fall back to clone' }]),
      flagRule([...userNamespaceCheckedSyscalls], CLONE_NEWUSER, 'no new user namespaces'),
      ...Object.entries(refusedPersonalityFlags).map(([name, flag]) => flagRule(['personality'], flag, `personality(${name})`)),
    ],
  };
}
