// The runtimes this host can offer, and the choice among them. `auto` takes the strongest isolation available; the
// rest of the code gets a SandboxRuntime and never asks which backend it is.
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { Config, RuntimeName } from '../config.ts';
import { WorkcellError } from '../errors.ts';
import { BwrapRuntime } from './bwrap/bwrap-runtime.ts';
import { sandboxdBundle } from './sandboxd-bundle.ts';
import type { SandboxRuntime } from './types.ts';

export interface RegisteredRuntime extends SandboxRuntime {
  /** A quick, synchronous check (no process started): why the runtime cannot run sandboxes now, or undefined. */
  unavailableReason(): string | undefined;
}

export type Runtimes = ReadonlyMap<RuntimeName, RegisteredRuntime>;

/** Strongest isolation first: what `auto` prefers. Later runtimes (microvm, docker with gVisor, docker) go before bwrap. */
const strongestFirst: readonly RuntimeName[] = ['bwrap'];

/** Every runtime this platform can have. Whether each is usable right now is asked at resolve time. */
export function createRuntimes(config: Config, logger?: Logger): Runtimes {
  const runtimes = new Map<RuntimeName, RegisteredRuntime>();
  // One sandboxd bundle for all runtimes, built on first use; a failed build is retried by the next sandbox.
  let bundle: Promise<string> | undefined;
  const sandboxdBundlePath = () =>
    (bundle ??= sandboxdBundle(join(config.imageDir, 'sandboxd')).catch((error: unknown) => {
      bundle = undefined;
      throw error;
    }));
  if (process.platform === 'linux') {
    runtimes.set('bwrap', new BwrapRuntime({ config, sandboxdBundlePath, ...(logger === undefined ? {} : { logger: logger.child({ runtime: 'bwrap' }) }) }));
  }
  return runtimes;
}

/**
 * The runtime for a job's `runtime` setting (`auto` or a name). Throws runtime_unavailable saying what is missing
 * and how to fix it; an unknown name is the caller's mistake (invalid_request).
 */
export function resolveRuntime(name: string, runtimes: Runtimes): SandboxRuntime {
  if (name === 'auto') {
    const reasons: string[] = [];
    for (const candidate of strongestFirst) {
      const runtime = runtimes.get(candidate);
      if (runtime === undefined) continue;
      const reason = runtime.unavailableReason();
      if (reason === undefined) return runtime;
      reasons.push(`${candidate}: ${reason}`);
    }
    const why = reasons.length > 0 ? reasons.join('; ') : `none of ${strongestFirst.join(', ')} runs on ${process.platform}`;
    throw new WorkcellError('runtime_unavailable', `no sandbox runtime is available on this host (${why}); run \`workcell doctor\` for details`);
  }
  if (!(strongestFirst as readonly string[]).includes(name)) {
    throw new WorkcellError('invalid_request', `unknown runtime "${name}": use auto or one of ${strongestFirst.join(', ')}`);
  }
  const runtime = runtimes.get(name as RuntimeName);
  if (runtime === undefined) throw new WorkcellError('runtime_unavailable', `the ${name} runtime does not run on ${process.platform}`);
  const reason = runtime.unavailableReason();
  if (reason !== undefined) throw new WorkcellError('runtime_unavailable', `the ${name} runtime is not available: ${reason}`);
  return runtime;
}
