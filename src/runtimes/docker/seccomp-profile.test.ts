// The Docker seccomp profile comes from the same policy as bwrap's BPF program: every denied call, clone3 answered
// with ENOSYS (not under gVisor), new user namespaces and ASLR-disabling personalities refused, only the native ABI.
import { describe, expect, it } from 'vitest';
import { CLONE_NEWUSER, deniedSyscalls } from '../seccomp.ts';
import { dockerSeccompProfile } from './seccomp-profile.ts';

describe('dockerSeccompProfile', () => {
  it('denies what the BPF filter denies, allowing the rest', () => {
    const profile = dockerSeccompProfile('x86_64');
    expect(profile.defaultAction).toBe('SCMP_ACT_ALLOW');
    expect(profile.architectures).toEqual(['SCMP_ARCH_X86_64']);
    expect(profile.syscalls[0]).toMatchObject({ names: [...deniedSyscalls], action: 'SCMP_ACT_ERRNO', errnoRet: 1 });
    expect(profile.syscalls).toContainEqual(expect.objectContaining({ names: ['clone3'], errnoRet: 38 }));
    expect(profile.syscalls).toContainEqual(expect.objectContaining({ names: ['clone', 'unshare'], args: [{ index: 0, value: CLONE_NEWUSER, valueTwo: CLONE_NEWUSER, op: 'SCMP_CMP_MASKED_EQ' }] }));
    expect(profile.syscalls.filter((rule) => rule.names.includes('personality')).map((rule) => rule.args?.[0]?.value)).toEqual([0x0040000, 0x0100000, 0x0400000]);
  });

  it('leaves clone3 to gVisor, which does not implement it', () => {
    expect(dockerSeccompProfile('x86_64', { gvisor: true }).syscalls.some((rule) => rule.names.includes('clone3'))).toBe(false);
    expect(dockerSeccompProfile('aarch64').architectures).toEqual(['SCMP_ARCH_AARCH64']);
  });
});
