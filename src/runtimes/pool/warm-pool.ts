// The warm pool: sandboxes of one runtime started ahead of any job, so that a job claimed by this worker gets one in
// the time it takes to hand it over (mount the workspace, tell sandboxd), not the time to start it. It stands in for
// its runtime (same name, same probe; app.ts wires it for workers): create() takes a warm sandbox when the spec fits
// the pool's profile (its limits, no network) and one is ready, and starts one cold otherwise, or when the handover
// fails. Each warm sandbox serves exactly one job and is never returned: what one job did cannot reach the next.
// The pool refills in the background, one sandbox at a time (starting sandboxes competes with running jobs for CPU),
// backs off while starting fails, replaces any that die while idle, and is drained on close.
import type { Logger } from 'pino';
import { errorMessage } from '../../errors.ts';
import type { RegisteredRuntime } from '../index.ts';
import { profileMismatch } from '../sandbox-profile.ts';
import type { Sandbox, SandboxProfile, SandboxSpec, WarmSandbox } from '../types.ts';

export interface WarmPoolOptions {
  runtime: RegisteredRuntime & { prepare: NonNullable<RegisteredRuntime['prepare']> };
  /** How many warm sandboxes to keep ready. */
  size: number;
  profile: SandboxProfile;
  logger?: Logger | undefined;
  /** The first wait after a failed start; it doubles up to a minute. */
  retryBaseMs?: number;
}

export interface WarmPoolStats {
  ready: number;
  /** Jobs that got a warm sandbox, and jobs that got a cold one (no fit, none ready, or a failed handover). */
  hits: number;
  misses: number;
}

export class WarmPool implements RegisteredRuntime {
  readonly name: string;
  readonly #runtime: WarmPoolOptions['runtime'];
  readonly #size: number;
  readonly #profile: SandboxProfile;
  readonly #logger: Logger | undefined;
  readonly #retryBaseMs: number;
  readonly #ready: WarmSandbox[] = [];
  readonly #stats = { hits: 0, misses: 0 };
  #filling: Promise<void> | undefined;
  #retryTimer: NodeJS.Timeout | undefined;
  #failures = 0;
  #started = false;
  #closed = false;
  readonly #stopping = new AbortController();

  constructor(options: WarmPoolOptions) {
    this.#runtime = options.runtime;
    this.name = options.runtime.name;
    this.#size = options.size;
    this.#profile = options.profile;
    this.#logger = options.logger;
    this.#retryBaseMs = options.retryBaseMs ?? 1000;
  }

  probe() {
    return this.#runtime.probe();
  }

  unavailableReason() {
    return this.#runtime.unavailableReason();
  }

  autoSkipReason() {
    return this.#runtime.autoSkipReason?.();
  }

  reapOrphans() {
    return this.#runtime.reapOrphans?.() ?? Promise.resolve({ dirs: [], processes: [] });
  }

  /** The ids of the sandboxes waiting for a job, oldest first. */
  get readyIds(): string[] {
    return this.#ready.map((warm) => warm.id);
  }

  get stats(): WarmPoolStats {
    return { ready: this.#ready.length, ...this.#stats };
  }

  /** Starts filling the pool (workers only: a process that runs no job must not hold idle sandboxes). */
  start(): void {
    this.#started = true;
    this.#fill();
  }

  async create(spec: SandboxSpec, signal?: AbortSignal): Promise<Sandbox> {
    const warm = profileMismatch(spec, this.#profile) === undefined ? this.#ready.shift() : undefined;
    if (warm !== undefined) {
      this.#fill();
      try {
        signal?.throwIfAborted();
        const sandbox = await warm.attach(spec);
        this.#stats.hits++;
        return sandbox;
      } catch (error) {
        await warm.destroy().catch(() => undefined);
        if (signal?.aborted) throw error;
        this.#logger?.warn({ sandboxId: warm.id, jobId: spec.jobId, err: error }, `handing a warm sandbox to the job failed, starting one for it: ${errorMessage(error)}`);
      }
    }
    this.#stats.misses++;
    return this.#runtime.create(spec, signal);
  }

  /** Stops filling and destroys every sandbox no job took. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#stopping.abort(new Error('the warm pool is closing'));
    clearTimeout(this.#retryTimer);
    await this.#filling?.catch(() => undefined);
    await Promise.all(this.#ready.splice(0).map((warm) => warm.destroy().catch(() => undefined)));
  }

  /** Starts sandboxes, one at a time, until the pool is full; one run at a time. */
  #fill(): void {
    if (!this.#started || this.#closed || this.#filling !== undefined || this.#retryTimer !== undefined) return;
    this.#filling = (async () => {
      while (!this.#closed && this.#ready.length < this.#size) {
        let warm: WarmSandbox;
        try {
          warm = await this.#runtime.prepare(this.#profile, this.#stopping.signal);
        } catch (error) {
          if (this.#closed) return;
          const waitMs = Math.min(60_000, this.#retryBaseMs * 2 ** this.#failures++);
          this.#logger?.error({ err: error, retryInMs: waitMs }, `starting a warm sandbox failed: ${errorMessage(error)}`);
          this.#retryTimer = setTimeout(() => {
            this.#retryTimer = undefined;
            this.#fill();
          }, waitMs);
          this.#retryTimer.unref();
          return;
        }
        this.#failures = 0;
        if (this.#closed) {
          await warm.destroy().catch(() => undefined);
          return;
        }
        this.#ready.push(warm);
        // One that dies while it waits (killed on the host, out of memory) is dropped and replaced.
        void warm.exited.then(() => {
          const at = this.#ready.indexOf(warm);
          if (at === -1) return;
          this.#ready.splice(at, 1);
          this.#logger?.warn({ sandboxId: warm.id }, 'a warm sandbox stopped while it waited for a job; starting another');
          void warm.destroy().catch(() => undefined);
          this.#fill();
        });
      }
    })().finally(() => {
      this.#filling = undefined;
      // A sandbox taken after the loop's last check and before this found the run still going: go on for it.
      if (this.#ready.length < this.#size) this.#fill();
    });
  }
}
