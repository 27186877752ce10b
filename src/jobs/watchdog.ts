// The watchdog: ends what makes no progress and removes what nothing owns (DESIGN.md §3). In this worker it
//   - ends a running job that has gone `idle_time_s` without an event (no model turn, tool call or result: a
//     command hung past its own timeout, a model that never answers) with `error` and a reason naming the limit;
//   - destroys a live sandbox whose job is no longer running here (its job ended or moved on without it);
//   - at start-up and then periodically, asks each runtime to reap the orphans of servers that are gone (processes,
//     directories, proxy sockets; the bwrap runtime also removes their cgroups when it first creates one).
// Wall time and step limits are enforced by the job runner and the agent loop themselves. The watchdog only ever
// stops jobs of this worker (through the scheduler) and destroys sandboxes this process created.
import type { Logger } from 'pino';
import type { EventBus } from '../bus/types.ts';
import type { SandboxRuntime, Sandbox } from '../runtimes/types.ts';
import { finishedStatuses, type Job } from '../store/types.ts';
import { JobStop } from './scheduler.ts';

export interface WatchdogOptions {
  /** The job's row (its limits and status). */
  getJob: (jobId: string) => Promise<Job | undefined>;
  /** Where the jobs' new events are announced: an event is progress. */
  bus: Pick<EventBus, 'subscribe'>;
  /** Jobs this worker is running now. */
  runningJobIds: () => readonly string[];
  stopJob: (jobId: string, reason: JobStop) => boolean;
  /** Sandboxes live in this process, by job id. */
  liveSandboxes: () => ReadonlyMap<string, Sandbox>;
  /** Called once a sandbox the watchdog destroyed is gone, so its registry entry can go too. */
  forgetSandbox?: (jobId: string) => void;
  runtimes: Iterable<Pick<SandboxRuntime, 'name' | 'reapOrphans'>>;
  /** idle_time_s for jobs whose limits lack it (WORKCELL_IDLE_TIME_S). */
  defaultIdleTimeS: number;
  logger: Pick<Logger, 'info' | 'warn' | 'error'>;
  checkIntervalMs?: number;
  reapIntervalMs?: number;
}

interface Activity {
  lastEventAt: number;
  stopped: boolean;
  unsubscribe: () => void;
}

export class Watchdog {
  readonly #options: WatchdogOptions;
  readonly #activity = new Map<string, Activity>();
  #timers: NodeJS.Timeout[] = [];
  #reaping: Promise<void> | undefined;
  #checking: Promise<void> | undefined;

  constructor(options: WatchdogOptions) {
    this.#options = options;
  }

  start(): void {
    if (this.#timers.length > 0) return;
    const { checkIntervalMs = 1000, reapIntervalMs = 10 * 60_000 } = this.#options;
    this.#timers = [setInterval(() => void this.#checkOnce(), checkIntervalMs), setInterval(() => void this.reapOrphans(), reapIntervalMs)];
    for (const timer of this.#timers) timer.unref();
  }

  stop(): void {
    for (const timer of this.#timers) clearInterval(timer);
    this.#timers = [];
    for (const activity of this.#activity.values()) activity.unsubscribe();
    this.#activity.clear();
  }

  /** Asks every runtime to reap orphans (one pass at a time); failures are logged, never thrown. */
  reapOrphans(): Promise<void> {
    return (this.#reaping ??= (async () => {
      for (const runtime of this.#options.runtimes) {
        try {
          await runtime.reapOrphans?.();
        } catch (error) {
          this.#options.logger.error({ err: error, runtime: runtime.name }, 'reaping orphaned sandboxes failed');
        }
      }
    })().finally(() => (this.#reaping = undefined)));
  }

  #checkOnce(): Promise<void> {
    return (this.#checking ??= this.check()
      .catch((error: unknown) => this.#options.logger.error({ err: error }, 'the watchdog round failed'))
      .finally(() => (this.#checking = undefined)));
  }

  /** One round: idle jobs, then sandboxes without a job. */
  async check(now = Date.now()): Promise<void> {
    const running = new Set(this.#options.runningJobIds());
    const withSandbox = new Set([...this.#options.liveSandboxes()].map(([jobId]) => jobId));
    for (const [jobId, activity] of this.#activity) {
      if (running.has(jobId)) continue;
      activity.unsubscribe();
      this.#activity.delete(jobId);
    }
    for (const jobId of running) {
      let activity = this.#activity.get(jobId);
      if (activity === undefined) {
        const tracked: Activity = { lastEventAt: now, stopped: false, unsubscribe: () => {} };
        tracked.unsubscribe = this.#options.bus.subscribe(jobId, () => (tracked.lastEventAt = Date.now()));
        this.#activity.set(jobId, tracked);
        activity = tracked;
      }
      if (activity.stopped) continue;
      // Idle means the agent made no progress: the time its sandbox takes to start (bounded by the runtime's own
      // readiness timeout and the wall-time limit) does not count.
      if (!withSandbox.has(jobId)) {
        activity.lastEventAt = now;
        continue;
      }
      const job = await this.#options.getJob(jobId);
      const idleTimeS = job?.limits.idle_time_s ?? this.#options.defaultIdleTimeS;
      if (now - activity.lastEventAt >= idleTimeS * 1000) {
        activity.stopped = true;
        this.#options.logger.warn({ jobId, idleTimeS }, 'job idle: stopping it');
        this.#options.stopJob(jobId, new JobStop('idle', `idle time limit (${idleTimeS} s) exceeded: nothing happened (no model turn, tool call or result) for ${idleTimeS} s`));
      }
    }
    for (const [jobId, sandbox] of this.#options.liveSandboxes()) {
      const job = await this.#options.getJob(jobId);
      const gone = !running.has(jobId) || job === undefined || finishedStatuses.includes(job.status);
      if (!gone) continue;
      this.#options.logger.warn({ jobId, sandboxId: sandbox.id, status: job?.status }, 'destroying a sandbox whose job is no longer running here');
      this.#options.forgetSandbox?.(jobId);
      if (running.has(jobId)) this.#options.stopJob(jobId, new JobStop('lease-lost', 'the job ended elsewhere while this worker ran it'));
      void sandbox.destroy().catch((error: unknown) => this.#options.logger.error({ err: error, jobId, sandboxId: sandbox.id }, 'destroying an orphaned sandbox failed'));
    }
  }
}
