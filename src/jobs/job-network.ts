// A job's egress policy: the job's own allow-list (validated and normalized when it is scheduled) plus the server's
// WORKCELL_NETWORK_ALLOW (added when the job runs, so the operator's list is current). The union is the policy: an
// entry on either list is allowed. Private, loopback and link-local addresses listed exactly open only when the
// entry is the server's, or the job's own when it may (WORKCELL_NETWORK_JOB_PRIVATE; by default only jobs scheduled
// without an API key, i.e. by the local operator).
import type { Config } from '../config.ts';
import { invalidRequest } from '../errors.ts';
import { AllowPatternError, combineAllowLists, mergeAllowLists, nonPublicLiteral, parseAllowList, type AllowRule } from '../runtimes/network/allow-list.ts';
import type { Job, JobNetwork } from '../store/types.ts';

/** May the job's own entries open non-public addresses? `owner` is the API key that scheduled it (null: none). */
export function jobOpensPrivate(config: Pick<Config, 'networkJobPrivate'>, owner: string | null): boolean {
  return config.networkJobPrivate ?? owner === null;
}

/** Validates and normalizes a job's own allow-list; throws invalid_request naming the entry at fault. */
export function jobNetworkFromRequest(config: Pick<Config, 'networkJobPrivate'>, allow: readonly string[] | undefined, owner: string | null): JobNetwork {
  if (allow === undefined || allow.length === 0) return { allow: [] };
  let rules: AllowRule[];
  try {
    rules = parseAllowList(allow);
  } catch (error) {
    if (error instanceof AllowPatternError) throw invalidRequest(`network.allow: ${error.message}`);
    throw error;
  }
  if (!jobOpensPrivate(config, owner)) {
    for (const rule of rules) {
      const kind = nonPublicLiteral(rule);
      if (kind !== undefined) {
        throw invalidRequest(
          `network.allow: "${rule.pattern}" is a ${kind} address, and jobs scheduled with an API key may not open private, loopback or link-local addresses: ` +
            'ask the server operator to add it to WORKCELL_NETWORK_ALLOW (or to set WORKCELL_NETWORK_JOB_PRIVATE=true)',
        );
      }
    }
  }
  return { allow: mergeAllowLists(rules.map((rule) => rule.pattern)) };
}

/** The rules the job's sandbox runs with: the server's list, then the job's own. */
export function sandboxAllowRules(config: Pick<Config, 'networkAllow' | 'networkJobPrivate'>, job: Pick<Job, 'network' | 'owner'>): AllowRule[] {
  return combineAllowLists(config.networkAllow, job.network.allow, jobOpensPrivate(config, job.owner));
}
