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
import { createJobDir, jobPaths } from './job-paths.ts';
import type { Job, JobLimits, JobStore } from './job-store.ts';
import { JobStop, type Scheduler } from './scheduler.ts';

export interface ScheduleInput {
  task: string;
  model?: string | undefined;
  runtime?: string | undefined;
  limits?: Partial<JobLimits> | undefined;
  metadata?: Record<string, string> | undefined;
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
      limits: { wall_time_s: input.limits?.wall_time_s ?? this.#config.wallTimeS, max_steps: input.limits?.max_steps ?? this.#config.maxSteps },
      metadata: input.metadata,
      idempotencyKey,
      owner: owner ?? null,
    });
    if (!result.created) await rm(paths.root, { recursive: true, force: true }); // lost an idempotency race
    this.#scheduler?.wake();
    return result;
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
    if (existsSync(paths.outputZip)) return;
    try {
      const result = await zipWorkspace(paths.workspace, paths.outputZip);
      this.#logger.info({ jobId, entries: result.entries, bytes: result.bytes, skipped: result.skipped.length }, 'workspace zipped');
    } catch (error) {
      this.#logger.error({ jobId, err: error }, `zipping the workspace failed: ${errorMessage(error)}`);
    }
  }
}
