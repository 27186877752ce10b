// Which jobs a sandbox started ahead of any job (the warm pool, runtimes/pool/) may serve: those whose limits are
// the ones it was started with and that have no network. The pool asks before it hands one out, the runtime again
// at the handover.
import { hasEgress } from './network/sandbox-egress.ts';
import type { SandboxProfile, SandboxSpec } from './types.ts';

/** Why a job with `spec` cannot have a sandbox of `profile`, or undefined when it can. */
export function profileMismatch(spec: SandboxSpec, profile: SandboxProfile): string | undefined {
  if (hasEgress(spec.network)) return 'a warm sandbox has no network; a job with an allow-list needs a sandbox of its own';
  const { limits } = profile;
  const wanted = spec.limits;
  if (wanted === undefined || wanted.cpus !== limits.cpus || wanted.memoryMb !== limits.memoryMb || wanted.pids !== limits.pids || wanted.diskMb !== limits.diskMb) {
    return "the job's limits are not the warm sandbox's";
  }
  return undefined;
}
