// What the API does to jobs: schedule one (its directory, its first event, its row, then wake the scheduler),
// cancel one, and end one (zip the workspace, record the final status). The worker ends jobs through endJob too,
// so every way out of a job zips the workspace and records the same final event.
import { existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import type { Logger } from 'pino';
import type { Config } from '../config.ts';
import type { Sandbox } from '../runtimes/types.ts';
import { notFound, conflict, errorMessage } from '../errors.ts';
import { newJobId } from '../util/ids.ts';
import { zipWorkspace } from './artifacts.ts';
import { EventLog } from './event-log.ts';
import { resolveJobLimits } from './job-limits.ts';
import { jobNetworkFromRequest } from './job-network.ts';
import { createJobDir, jobPaths } from './job-paths.ts';
import { attachWorkspaceDisk, mountType, releaseWorkspaceDisk } from './workspace-disk.ts';
import { finishedStatuses, type Job, type JobLimits, type JobStore } from './job-store.ts';
import { JobStop, type Scheduler } from './scheduler.ts';

export interface ScheduleInput {
  task: string;
  model?: string | undefined;
  runtime?: string | undefined;
  limits?: Partial<JobLimits> | undefined;
  metadata?: Record<string, string> | undefined;
  network?: { allow: string[] } | undefined;
  /** The model's context window for this job, in tokens (overrides the server's and the model table's). */
  context_window?: number | undefined;
}

export interface JobOutcome {
  status: 'complete' | 'error' | 'cancelled';
  error?: string | undefined;
  summary?: string | undefined;
}

export class JobService {
  readonly #config: Config;
  readonly #store: JobStore;
  readonly #logger: Logger;
  readonly #validateModel: (spec: string) => void;
  #scheduler: Scheduler | undefined;
  readonly #live = new Map<string, Sandbox>();

  constructor(options: { config: Config; store: JobStore; logger: Logger; validateModel?: (spec: string) => void }) {
    this.#config = options.config;
    this.#store = options.store;
    this.#logger = options.logger;
    this.#validateModel = options.validateModel ?? (() => {});
  }

  get store(): JobStore {
    return this.#store;
  }

  attachScheduler(scheduler: Scheduler): void {
    this.#scheduler = scheduler;
  }

  /** The sandbox of a job running in this process, for the desktop, Jupyter and terminal proxies. */
  liveSandbox(jobId: string): Sandbox | undefined {
    return this.#live.get(jobId);
  }

  /** Every job's sandbox live in this process, by job id (the watchdog destroys those whose job is gone). */
  liveSandboxes(): ReadonlyMap<string, Sandbox> {
    return this.#live;
  }

  /** Called by the job runner when a job's sandbox is ready (with the sandbox) and before it is destroyed (without). */
  setLiveSandbox(jobId: string, sandbox: Sandbox | undefined): void {
    if (sandbox === undefined) this.#live.delete(jobId);
    else this.#live.set(jobId, sandbox);
  }

  paths(jobId: string) {
    return jobPaths(this.#config.dataDir, jobId);
  }

  /**
   * Returns the job or throws not_found. With API keys, `owner` is the caller's key and another key's job is
   * "not found" too (never "forbidden": ids of other people's jobs are not confirmed).
   */
  get(jobId: string, owner?: string): Job {
    const job = this.#store.get(jobId);
    if (!job || (owner !== undefined && job.owner !== owner)) throw notFound(`no job with id ${JSON.stringify(jobId)}`);
    return job;
  }

  async schedule(input: ScheduleInput, idempotencyKey?: string, owner?: string): Promise<{ job: Job; created: boolean }> {
    if (idempotencyKey !== undefined) {
      const existing = this.#store.findByIdempotencyKey(idempotencyKey, owner ?? null);
      if (existing) return { job: existing, created: false };
    }
    if (input.model !== undefined) this.#validateModel(input.model);
    const limits = resolveJobLimits(this.#config, input.limits);
    const network = jobNetworkFromRequest(this.#config, input.network?.allow, owner ?? null);
    const id = newJobId();
    const paths = this.paths(id);
    await createJobDir(paths, input.task);
    const events = new EventLog(id, paths.contextDb);
    try {
      events.append('job-status', 0, { status: 'pending' });
    } finally {
      events.close();
    }
    const result = this.#store.create({
      id,
      task: input.task,
      model: input.model,
      runtime: input.runtime ?? this.#config.runtime,
      limits,
      metadata: input.metadata,
      idempotencyKey,
      owner: owner ?? null,
      network,
      contextWindow: input.context_window,
    });
    if (!result.created) await rm(paths.root, { recursive: true, force: true }); // lost an idempotency race
    this.#scheduler?.wake();
    return result;
  }

  /**
   * Records a follow-up instruction from the client as a user-message event: the agent reads it at its next step
   * (every prompt is built from the job's store). Throws conflict once the job has ended.
   */
  postMessage(jobId: string, text: string, owner?: string): { seq: number } {
    const job = this.get(jobId, owner);
    if (finishedStatuses.includes(job.status)) throw conflict(`job ${jobId} has already ended (${job.status}): a message can no longer reach its agent; schedule a new job instead`);
    const events = new EventLog(jobId, this.paths(jobId).contextDb);
    try {
      return { seq: events.append('user-message', job.steps, { text, source: 'client' }).seq };
    } finally {
      events.close();
    }
  }

  /**
   * A job whose worker died (its lease expired): resumed from its context store (back to pending, so that a worker
   * claims it and rebuilds its prompt from the store) until it has been started max_attempts times, then ended
   * with error. A job whose cancel was requested is ended as cancelled.
   */
  async recoverExpired(job: Job): Promise<void> {
    if (job.cancel_requested) {
      await this.endJob(job, job.locked_by, { status: 'cancelled', error: 'cancelled by request (its worker had stopped)' });
      return;
    }
    if (this.requeue(job, job.locked_by, 'the worker running this job stopped (lease expired)')) return;
    const attempts = job.attempts === 1 ? 'once' : `${job.attempts} times`;
    await this.endJob(job, job.locked_by, { status: 'error', error: `the worker running this job stopped (lease expired) ${attempts}; not resumed again (WORKCELL_MAX_ATTEMPTS is ${this.#config.maxAttempts})` });
  }

  /**
   * Puts a running job held by `lockedBy` back to pending, to resume from its context store, unless it has been
   * started max_attempts times already. Returns whether it did.
   */
  requeue(job: Job, lockedBy: string | null, why: string): boolean {
    const maxAttempts = this.#config.maxAttempts;
    if (job.attempts >= maxAttempts || !this.#store.requeue(job.id, lockedBy)) return false;
    this.#logger.warn({ jobId: job.id, attempts: job.attempts, maxAttempts }, `${why}: the job resumes from its context store`);
    const events = new EventLog(job.id, this.paths(job.id).contextDb);
    try {
      events.append('job-status', job.steps, { status: 'pending', resume: true, reason: `${why}; it resumes from its last completed step (attempt ${job.attempts + 1} of ${maxAttempts})` });
    } finally {
      events.close();
    }
    this.#scheduler?.wake();
    return true;
  }

  /** Cancels a job in any state but a finished one. Resolves once a pending job is fully ended. */
  async cancel(jobId: string, owner?: string): Promise<Job> {
    const job = this.get(jobId, owner);
    const result = this.#store.requestCancel(jobId);
    if (result === 'already-finished') throw conflict(`job ${jobId} has already ended (${this.#store.get(jobId)?.status ?? job.status}): nothing to cancel`);
    if (result === 'cancelled') {
      await this.recordEnd(jobId, { status: 'cancelled', error: 'cancelled before it started' });
    } else {
      this.#scheduler?.stopJob(jobId, new JobStop('cancel', 'cancelled by request'));
    }
    return this.get(jobId);
  }

  /**
   * Ends a job: zips its workspace (the sandbox must already be stopped), then records the final status in the
   * store (if `workerId` still holds it, or the job is unclaimed when `workerId` is null) and as the last event.
   */
  async endJob(job: Job, workerId: string | null, outcome: JobOutcome, step = job.steps): Promise<void> {
    await this.#zip(job.id);
    if (!this.#store.finish(job.id, workerId, outcome)) return; // someone else ended it first
    await this.recordEnd(job.id, outcome, step);
  }

  /** Zips (if not yet) and appends the final job-status event of a job the store already shows as ended. */
  async recordEnd(jobId: string, outcome: JobOutcome, step = 0): Promise<void> {
    await this.#zip(jobId);
    const events = new EventLog(jobId, this.paths(jobId).contextDb);
    try {
      events.append('job-status', step, { status: outcome.status, ...(outcome.error ? { error: outcome.error } : {}), ...(outcome.summary ? { summary: outcome.summary } : {}) });
    } finally {
      events.close();
    }
  }

  hasArtifacts(jobId: string): boolean {
    return existsSync(this.paths(jobId).outputZip);
  }

  async #zip(jobId: string): Promise<void> {
    const paths = this.paths(jobId);
    const onDisk = existsSync(paths.workspaceImage);
    // The tmpfs fallback (WORKCELL_DISK_LIMIT=tmpfs) has no image: it is what is mounted there.
    const onTmpfs = (await mountType(paths.workspace)) === 'tmpfs';
    if (!existsSync(paths.outputZip)) {
      try {
        // A workspace with a disk limit is on its image: zip that (mounted again if a restart lost the mount).
        if (onDisk) await attachWorkspaceDisk(paths, 0);
        const result = await zipWorkspace(paths.workspace, paths.outputZip);
        this.#logger.info({ jobId, entries: result.entries, bytes: result.bytes, skipped: result.skipped.length }, 'workspace zipped');
      } catch (error) {
        this.#logger.error({ jobId, err: error }, `zipping the workspace failed: ${errorMessage(error)}`);
      }
    }
    if (onDisk || onTmpfs) {
      // The sandbox is gone and the zip made: the workspace goes back to a plain directory.
      await releaseWorkspaceDisk(paths).catch((error: unknown) => this.#logger.error({ jobId, err: error }, `releasing the workspace disk failed: ${errorMessage(error)}`));
    }
  }
}
