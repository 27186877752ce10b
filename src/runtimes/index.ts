// The runtimes this host can offer, and the choice among them. `auto` takes the strongest isolation available, in
// the order WORKCELL_RUNTIME_ORDER gives (default microvm, gvisor, docker, bwrap; microvm only where KVM works); the
// rest of the code gets a SandboxRuntime and never asks which backend it is.
import { join } from 'node:path';
import type { Logger } from 'pino';
import { runtimeNames, type Config, type RuntimeName } from '../config.ts';
import { WorkcellError } from '../errors.ts';
import { BwrapRuntime } from './bwrap/bwrap-runtime.ts';
import { DockerRuntime } from './docker/docker-runtime.ts';
import { MicrovmRuntime } from './microvm/microvm-runtime.ts';
import { WarmPool } from './pool/warm-pool.ts';
import { guestAgentBundle, sandboxdBundle } from './sandboxd-bundle.ts';
import type { SandboxRuntime } from './types.ts';

export interface RegisteredRuntime extends SandboxRuntime {
  /** A quick check (no sandbox started): why the runtime cannot run sandboxes now, or undefined. */
  unavailableReason(): string | undefined | Promise<string | undefined>;
  /** Why `auto` should pass this runtime over although it works (microVMs under TCG), or undefined. */
  autoSkipReason?(): string | undefined | Promise<string | undefined>;
}

export interface Runtimes extends ReadonlyMap<RuntimeName, RegisteredRuntime> {
  /** The runtimes `auto` tries, strongest first (WORKCELL_RUNTIME_ORDER). */
  readonly autoOrder?: readonly RuntimeName[];
}

/** Every runtime this platform can have. Whether each is usable right now is asked at resolve time. */
export function createRuntimes(config: Config, logger?: Logger): Runtimes {
  const runtimes = new Map<RuntimeName, RegisteredRuntime>() as Map<RuntimeName, RegisteredRuntime> & { autoOrder?: readonly RuntimeName[] };
  runtimes.autoOrder = config.runtimeOrder;
  // One sandboxd bundle (and guest agent) for all runtimes, built on first use; a failed build is retried later.
  const once = (build: (dir: string) => Promise<string>) => {
    let pending: Promise<string> | undefined;
    return () =>
      (pending ??= build(join(config.imageDir, 'sandboxd')).catch((error: unknown) => {
        pending = undefined;
        throw error;
      }));
  };
  const sandboxdBundlePath = once(sandboxdBundle);
  const guestAgentBundlePath = once(guestAgentBundle);
  const child = (name: string) => (logger === undefined ? {} : { logger: logger.child({ runtime: name }) });
  if (process.platform === 'linux') {
    runtimes.set('bwrap', new BwrapRuntime({ config, sandboxdBundlePath, ...child('bwrap') }));
    for (const variant of ['docker', 'gvisor'] as const) runtimes.set(variant, new DockerRuntime({ config, variant, sandboxdBundlePath, guestAgentBundlePath, ...child(variant) }));
    runtimes.set('microvm', new MicrovmRuntime({ config, sandboxdBundlePath, guestAgentBundlePath, ...child('microvm') }));
  }
  return runtimes;
}

/**
 * Puts a warm pool of WORKCELL_POOL_SIZE bwrap sandboxes in front of the bwrap runtime (runtimes/pool/), for jobs with
 * the default limits; returns it (started) or undefined when there is none. Workers only.
 */
export function startWarmPool(runtimes: Runtimes, config: Config, logger?: Logger): WarmPool | undefined {
  const bwrap = runtimes.get('bwrap');
  if (config.poolSize === 0 || bwrap?.prepare === undefined) return undefined;
  const profile = { limits: { cpus: config.cpus, memoryMb: config.memoryMb, pids: config.pids, diskMb: config.diskMb } };
  const pool = new WarmPool({ runtime: bwrap as RegisteredRuntime & { prepare: NonNullable<RegisteredRuntime['prepare']> }, size: config.poolSize, profile, logger: logger?.child({ component: 'warm-pool' }) });
  (runtimes as Map<RuntimeName, RegisteredRuntime>).set('bwrap', pool);
  pool.start();
  return pool;
}

/**
 * The runtime for a job's `runtime` setting (`auto` or a name). Throws runtime_unavailable saying what is missing
 * and how to fix it; an unknown name is the caller's mistake (invalid_request).
 */
export async function resolveRuntime(name: string, runtimes: Runtimes): Promise<SandboxRuntime> {
  if (name === 'auto') {
    const order = runtimes.autoOrder ?? [...runtimes.keys()];
    const reasons: string[] = [];
    for (const candidate of order) {
      const runtime = runtimes.get(candidate);
      if (runtime === undefined) continue;
      const reason = (await runtime.unavailableReason()) ?? (await runtime.autoSkipReason?.());
      if (reason === undefined) return runtime;
      reasons.push(`${candidate}: ${reason}`);
    }
    const why = reasons.length > 0 ? reasons.join('; ') : `none of ${order.join(', ')} runs on ${process.platform}`;
    throw new WorkcellError('runtime_unavailable', `no sandbox runtime is available on this host (${why}); run \`workcell doctor\` for details`);
  }
  if (!(runtimeNames as readonly string[]).includes(name)) {
    throw new WorkcellError('invalid_request', `unknown runtime "${name}": use auto or one of ${runtimeNames.join(', ')}`);
  }
  const runtime = runtimes.get(name as RuntimeName);
  if (runtime === undefined) throw new WorkcellError('runtime_unavailable', `the ${name} runtime does not run on ${process.platform}`);
  const reason = await runtime.unavailableReason();
  if (reason !== undefined) throw new WorkcellError('runtime_unavailable', `the ${name} runtime is not available: ${reason}`);
  return runtime;
}
