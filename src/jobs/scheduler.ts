// The scheduler: claims pending jobs from the store up to `concurrency`, keeps their leases alive by heartbeat,
// and stops a job when its cancel is requested, its lease is lost or the scheduler shuts down. It knows nothing
// of what running a job means: that is the `run` function it is given (jobs/run-job.ts).
import type { Logger } from 'pino';
import type { Job, JobStore } from '../store/types.ts';

/** Why a running job was told to stop; passed as the AbortSignal's reason. */
export class JobStop extends Error {
  readonly kind: 'cancel' | 'wall-time' | 'idle' | 'limit' | 'shutdown' | 'lease-lost';
  constructor(kind: JobStop['kind'], message: string) {
    super(message);
    this.name = 'JobStop';
    this.kind = kind;
  }
}

export type JobRunner = (job: Job, signal: AbortSignal) => Promise<void>;

export interface SchedulerOptions {
  store: JobStore;
  run: JobRunner;
  workerId: string;
  concurrency: number;
  leaseMs: number;
  logger: Logger;
  /** How often to look for pending jobs when nobody calls wake() (other processes may add jobs). */
  pollMs?: number;
  /** Called with jobs whose worker died (lease expired), so they can be ended or resumed. */
  onExpired?: (job: Job) => Promise<void>;
}

export class Scheduler {
  readonly #options: SchedulerOptions;
  readonly #running = new Map<string, { controller: AbortController; done: Promise<void> }>();
  #timers: NodeJS.Timeout[] = [];
  #stopped = true;
  /** The claiming loop while it runs; `#again`: wake() was called meanwhile, so look once more before stopping. */
  #ticking: Promise<void> | undefined;
  #again = false;
  #beating = false;

  constructor(options: SchedulerOptions) {
    this.#options = options;
  }

  get runningJobIds(): string[] {
    return [...this.#running.keys()];
  }

  start(): void {
    if (!this.#stopped) return;
    this.#stopped = false;
    const { leaseMs, pollMs = 1000 } = this.#options;
    this.#timers = [
      setInterval(() => this.wake(), pollMs),
      setInterval(() => void this.#heartbeat(), Math.max(250, Math.floor(leaseMs / 3))),
      setInterval(() => void this.#sweep(), leaseMs),
    ];
    void this.#sweep().then(() => this.wake());
  }

  /** Looks for pending jobs now (called when a job is scheduled). */
  wake(): void {
    if (this.#stopped) return;
    if (this.#ticking !== undefined) {
      this.#again = true;
      return;
    }
    this.#ticking = this.#claimAll().finally(() => (this.#ticking = undefined));
  }

  async #claimAll(): Promise<void> {
    const { store, workerId, leaseMs, concurrency, logger } = this.#options;
    try {
      do {
        this.#again = false;
        while (!this.#stopped && this.#running.size < concurrency) {
          const job = await store.claim(workerId, leaseMs);
          if (!job) break;
          // Stopped while claiming: the job goes straight back to the queue.
          if (this.#stopped) {
            await store.requeue(job.id, workerId);
            break;
          }
          this.#launch(job);
        }
      } while (this.#again && !this.#stopped);
    } catch (error) {
      logger.error({ err: error }, 'claiming jobs failed');
    }
  }

  /** Stops one running job of this worker; false if this worker is not running it. */
  stopJob(jobId: string, reason: JobStop): boolean {
    const entry = this.#running.get(jobId);
    if (!entry) return false;
    entry.controller.abort(reason);
    return true;
  }

  /** Stops claiming, stops every running job with `reason` and waits for them to wind down. */
  async stop(reason = new JobStop('shutdown', 'the server shut down while the job was running')): Promise<void> {
    this.#stopped = true;
    for (const timer of this.#timers) clearInterval(timer);
    this.#timers = [];
    await this.#ticking;
    for (const { controller } of this.#running.values()) controller.abort(reason);
    await Promise.allSettled([...this.#running.values()].map((entry) => entry.done));
  }

  #launch(job: Job): void {
    const controller = new AbortController();
    const logger = this.#options.logger.child({ jobId: job.id });
    logger.info('job claimed');
    const done = this.#options
      .run(job, controller.signal)
      .catch((error: unknown) => logger.error({ err: error }, 'job runner failed'))
      .finally(() => {
        this.#running.delete(job.id);
        this.wake();
      });
    this.#running.set(job.id, { controller, done });
  }

  /** Renews this worker's leases now, and stops the jobs whose cancel was requested (called when one was). */
  checkNow(): void {
    if (!this.#stopped) void this.#heartbeat();
  }

  async #heartbeat(): Promise<void> {
    if (this.#beating) return; // the last round is still waiting on the store
    this.#beating = true;
    const { store, workerId, leaseMs, logger } = this.#options;
    try {
      for (const [jobId, { controller }] of [...this.#running]) {
        if (controller.signal.aborted) continue;
        try {
          const { held, cancelRequested } = await store.heartbeat(jobId, workerId, leaseMs);
          if (!held) controller.abort(new JobStop('lease-lost', 'this worker lost the job (its lease expired)'));
          else if (cancelRequested) controller.abort(new JobStop('cancel', 'cancelled by request'));
        } catch (error) {
          logger.error({ err: error, jobId }, 'heartbeat failed');
        }
      }
    } finally {
      this.#beating = false;
    }
  }

  async #sweep(): Promise<void> {
    const { store, onExpired, logger } = this.#options;
    let expired: Job[];
    try {
      expired = await store.expiredLeases();
    } catch (error) {
      logger.error({ err: error }, 'looking for expired leases failed');
      return;
    }
    for (const job of expired) {
      if (this.#running.has(job.id)) continue;
      logger.warn({ jobId: job.id, lockedBy: job.locked_by }, 'job lease expired');
      try {
        if (onExpired) await onExpired(job);
        else await store.finish(job.id, job.locked_by, { status: 'error', error: 'the worker running this job stopped (lease expired)' });
      } catch (error) {
        logger.error({ err: error, jobId: job.id }, 'ending an expired job failed');
      }
    }
  }
}
