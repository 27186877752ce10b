// What the API does to jobs: schedule one (its directory, its first event, its row, then tell the workers),
// cancel one, and end one (zip the workspace, record the final status). The worker ends jobs through endJob too,
// so every way out of a job zips the workspace and records the same final event.
import { existsSync } from 'node:fs';
import { setTimeout as delay } from 'node:timers/promises';
import { rename, rm, rmdir } from 'node:fs/promises';
import type { Logger } from 'pino';
import type { Config } from '../config.ts';
import type { SandboxdChannel } from '../runtimes/sandboxd-client.ts';
import type { Sandbox } from '../runtimes/types.ts';
import { notFound, conflict, errorMessage, invalidRequest, WorkcellError } from '../errors.ts';
import { newJobId } from '../util/ids.ts';
import { LocalEventBus } from '../bus/local/local-bus.ts';
import { queueTopic, type EventBus, type QueueNotice } from '../bus/types.ts';
import { EventLog } from './event-log.ts';
import { writeJobArtifacts } from './job-artifacts.ts';
import { resolveJobLimits } from './job-limits.ts';
import { jobNetworkFromRequest } from './job-network.ts';
import { ensureJobDir, jobPaths, type JobPaths } from './job-paths.ts';
import { attachWorkspaceDisk, mountType, releaseWorkspaceDisk } from './workspace-disk.ts';
import { finishedStatuses, type GitInput, type Job, type JobInputs, type JobLimits, type JobStore } from '../store/types.ts';
import { reopenJob } from './job-runs.ts';
import { removeJobFiles } from './retention.ts';
import { copyWorkspace } from './workspace-copy.ts';
import { CallbackPolicy } from './webhooks/callback-url.ts';
import { workerAddress } from './remote/internal-auth.ts';
import { RemoteSandboxdChannel } from './remote/remote-channel.ts';

export interface ScheduleInput {
  task: string;
  model?: string | undefined;
  runtime?: string | undefined;
  limits?: Partial<JobLimits> | undefined;
  metadata?: Record<string, string> | undefined;
  network?: { allow: string[] } | undefined;
  /** The model's context window for this job, in tokens (overrides the server's and the model table's). */
  context_window?: number | undefined;
  /** A git repository to clone into the workspace when the job starts. */
  inputs?: { git?: GitInput | undefined } | undefined;
  /** Where the job's lifecycle hooks go (checked against the callback policy); default: the server's, if any. */
  callback_url?: string | undefined;
  /** A finished job of the same owner whose final workspace this job starts from (a fork). */
  from_job?: string | undefined;
}

/** Files received for the job's workspace (multipart POST /schedule), waiting in a staging directory. */
export interface UploadedWorkspace {
  /** The tree that becomes jobs/<id>/workspace (moved, not copied). */
  workspace: string;
  entries: number;
  bytes: number;
  /** About what the tree takes on a file system. */
  diskBytes: number;
}

/** Uploads may fill this share of the job's disk: the rest is the file system's own and the agent's room to start. */
const uploadDiskShare = 0.9;
/** Tries of the store's finish while it is unreachable: about 25 s in all. */
const finishAttempts = 8;

export interface JobOutcome {
  status: 'complete' | 'error' | 'cancelled';
  error?: string | undefined;
  summary?: string | undefined;
}

export class JobService {
  readonly #config: Config;
  readonly #store: JobStore;
  readonly #logger: Logger;
  readonly #bus: EventBus;
  readonly #validateModel: (spec: string) => void;
  readonly #live = new Map<string, Sandbox>();
  /** Jobs this process is ending (the row says so, the zip and final event are still being made), and when done. */
  readonly #ending = new Map<string, Promise<void>>();
  #callbackPolicy: CallbackPolicy | undefined;
  #internalRoute: { secret: Buffer; workerId: string | undefined } | undefined;

  /** `bus`: where new events are announced; the app passes its own, a process of its own gets a local one. */
  constructor(options: { config: Config; store: JobStore; bus?: EventBus; logger: Logger; callbackPolicy?: CallbackPolicy; validateModel?: (spec: string) => void }) {
    this.#callbackPolicy = options.callbackPolicy;
    this.#config = options.config;
    this.#store = options.store;
    this.#bus = options.bus ?? new LocalEventBus();
    this.#logger = options.logger;
    this.#validateModel = options.validateModel ?? (() => {});
  }

  get store(): JobStore {
    return this.#store;
  }

  get bus(): EventBus {
    return this.#bus;
  }

  /**
   * The job's event log, announcing what is appended to it on the bus; made on first use (with the job's directory),
   * starting with the job's pending status. The caller closes it.
   */
  openEvents(job: Job): EventLog {
    const paths = this.jobFiles(job);
    const first = { time: job.created_at, data: { status: 'pending', ...(job.forked_from === null ? {} : { from_job: job.forked_from }) } };
    return new EventLog(job.id, paths.contextDb, { bus: this.#bus, first });
  }

  /** The job's directory, made if it is not there yet (scheduling does not make it: job-paths.ts). */
  jobFiles(job: Job): JobPaths {
    const paths = this.paths(job.id);
    ensureJobDir(paths, job.task);
    return paths;
  }

  /**
   * Tells every worker, in this process and (on the Postgres bus) in others, that a job became pending (claim now,
   * rather than at the next poll) or that a cancel was requested (check its jobs now, rather than at the next
   * heartbeat).
   */
  #queueChanged(type: QueueNotice): void {
    this.#bus.publish({ job_id: queueTopic, seq: 0, type });
  }

  get config(): Config {
    return this.#config;
  }

  /**
   * Lets this process reach sandboxes that workers in other processes hold, through their internal routes, signed
   * with `secret`; `workerId`: this process's own worker (whose jobs are in liveSandbox), if it has one.
   */
  attachInternalRoute(options: { secret: Buffer; workerId: string | undefined }): void {
    this.#internalRoute = options;
  }

  /** The sandbox of a job running in this process (the watchdog's and the job runner's). */
  liveSandbox(jobId: string): Sandbox | undefined {
    return this.#live.get(jobId);
  }

  /**
   * The way to a running job's sandboxd for the API's routes (files, desktop, Jupyter, terminal): this process's own
   * sandbox, or the internal route of the worker that holds the job. Undefined while no sandbox is up for it (it is
   * starting or stopping, or its worker has no internal route).
   */
  sandboxChannel(job: Job): SandboxdChannel | undefined {
    const local = this.#live.get(job.id);
    if (local !== undefined) return local.client;
    const route = this.#internalRoute;
    if (job.status !== 'running' || route === undefined || job.locked_by === null || job.locked_by === route.workerId) return undefined;
    const worker = workerAddress(job.locked_by);
    return worker && new RemoteSandboxdChannel(worker, job.id, route.secret);
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
  async get(jobId: string, owner?: string): Promise<Job> {
    const job = await this.#store.get(jobId);
    if (!job || (owner !== undefined && job.owner !== owner)) throw notFound(`no job with id ${JSON.stringify(jobId)}`);
    return job;
  }

  /**
   * Creates a pending job. `upload` (files received with the request) becomes its workspace; the caller deletes the
   * staging directory afterwards, whatever happened (an idempotent repeat, a refusal).
   */
  async schedule(input: ScheduleInput, idempotencyKey?: string, owner?: string, upload?: UploadedWorkspace): Promise<{ job: Job; created: boolean }> {
    if (idempotencyKey !== undefined) {
      const existing = await this.#store.findByIdempotencyKey(idempotencyKey, owner ?? null);
      if (existing) return { job: existing, created: false };
    }
    if (input.model !== undefined) this.#validateModel(input.model);
    const callbackUrl = input.callback_url === undefined ? undefined : await this.#checkCallback(input.callback_url);
    const source = input.from_job === undefined ? undefined : await this.#forkSource(input.from_job, owner);
    const limits = resolveJobLimits(this.#config, input.limits);
    const network = jobNetworkFromRequest(this.#config, input.network?.allow, owner ?? null);
    const inputs = jobInputs(input, upload, limits.disk_mb);
    const id = newJobId();
    const paths = this.paths(id);
    // A job with files to start from gets its directory now; any other, when it is first needed (job-paths.ts).
    if (upload !== undefined || source !== undefined) ensureJobDir(paths, input.task);
    if (upload !== undefined) {
      try {
        // The uploaded tree becomes the workspace in one rename (same file system: both under the data directory).
        await rmdir(paths.workspace);
        await rename(upload.workspace, paths.workspace);
      } catch (error) {
        await rm(paths.root, { recursive: true, force: true });
        throw error;
      }
    }
    if (source !== undefined) {
      try {
        const copied = await copyWorkspace(this.paths(source.id).workspace, paths.workspace, { maxBytes: limits.disk_mb * 1024 * 1024 });
        this.#logger.info({ jobId: id, from: source.id, entries: copied.entries, bytes: copied.bytes, skipped: copied.skipped.length }, 'workspace forked');
      } catch (error) {
        await rm(paths.root, { recursive: true, force: true });
        throw error;
      }
    }
    const result = await this.#store.create({
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
      inputs,
      callbackUrl,
      callbackDefault: callbackUrl === undefined && this.#config.callbackUrl !== undefined,
      forkedFrom: source?.id,
    });
    if (!result.created) await rm(paths.root, { recursive: true, force: true }); // lost an idempotency race
    this.#queueChanged('pending');
    return result;
  }

  /**
   * Records a follow-up instruction from the client as a user-message event: the agent reads it at its next step
   * (every prompt is built from the job's store). A finished job is continued: it reopens for another run that
   * starts with this message (job-runs.ts); of several messages at once, one reopens it and the rest join that run.
   */
  async postMessage(jobId: string, text: string, owner?: string): Promise<{ seq: number; run: number; reopened: boolean }> {
    await this.get(jobId, owner);
    // A job whose end is still being recorded here (zip, final event) is reopened only after that.
    await this.#ending.get(jobId);
    const job = await this.get(jobId, owner);
    if (finishedStatuses.includes(job.status)) {
      const events = this.openEvents(job);
      let reopened: Awaited<ReturnType<typeof reopenJob>>;
      try {
        reopened = await reopenJob(this.#store, this.paths(jobId), events, job, text);
      } finally {
        events.close();
      }
      if (reopened.job !== undefined) {
        this.#logger.info({ jobId, run: reopened.job.run, previousStatus: job.status }, 'job continued by a message');
        this.#queueChanged('pending');
      }
      return { seq: reopened.messageSeq, run: reopened.job?.run ?? job.run + 1, reopened: reopened.job !== undefined };
    }
    const events = this.openEvents(job);
    try {
      return { seq: events.append('user-message', job.steps, { text, source: 'client', run: job.run }).seq, run: job.run, reopened: false };
    } finally {
      events.close();
    }
  }

  /**
   * Deletes a finished job: its row, then its directory (workspace, history, logs, zip). 409 while it is pending or
   * running (cancel it first); another key's job is not found. Resolves once the files are gone.
   */
  async delete(jobId: string, owner?: string): Promise<void> {
    const job = await this.get(jobId, owner);
    if (!finishedStatuses.includes(job.status)) throw conflict(`job ${jobId} is ${job.status}: cancel it first (POST /jobs/${jobId}/cancel), then delete it once it has ended`);
    if (!(await this.deleteFinished(job))) throw conflict(`job ${jobId} is no longer finished (a message continued it): cancel it first, then delete it once it has ended`);
  }

  /** Deletes a finished job's row and files; false when it was no longer finished (DELETE, and the retention sweep). */
  async deleteFinished(job: Job): Promise<boolean> {
    await this.#ending.get(job.id);
    if (!(await this.#store.deleteFinished(job.id))) return false;
    await removeJobFiles(this.paths(job.id));
    this.#logger.info({ jobId: job.id, status: job.status }, 'job deleted');
    return true;
  }

  /** The server's rules for callback URLs (made on first use: it holds a DNS resolver). */
  async #checkCallback(url: string): Promise<string> {
    if (this.#config.callbackSecret === undefined) {
      throw invalidRequest("callback_url needs the server to sign its hooks, and this server has no WORKCELL_CALLBACK_SECRET: ask its operator to set one, or leave callback_url out");
    }
    this.#callbackPolicy ??= new CallbackPolicy({ allowPrivate: this.#config.callbackAllowPrivate });
    return this.#callbackPolicy.check(url);
  }

  /** The job a fork starts from: the caller's own (others' are not found), finished, its end fully recorded. */
  async #forkSource(jobId: string, owner: string | undefined): Promise<Job> {
    const find = async () => {
      const job = await this.#store.get(jobId);
      if (job === undefined || (owner !== undefined && job.owner !== owner)) throw invalidRequest(`from_job: no job with id ${JSON.stringify(jobId)} (a fork starts from one of your own jobs)`);
      return job;
    };
    await find();
    await this.#ending.get(jobId);
    const current = await find();
    if (!finishedStatuses.includes(current.status)) {
      throw conflict(`job ${jobId} is ${current.status}: a fork starts from a finished job's final workspace; fork it once it has ended (or cancel it)`);
    }
    return current;
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
    if (await this.requeue(job, job.locked_by, 'the worker running this job stopped (lease expired)')) return;
    const attempts = job.attempts === 1 ? 'once' : `${job.attempts} times`;
    await this.endJob(job, job.locked_by, { status: 'error', error: `the worker running this job stopped (lease expired) ${attempts}; not resumed again (WORKCELL_MAX_ATTEMPTS is ${this.#config.maxAttempts})` });
  }

  /**
   * Puts a running job held by `lockedBy` back to pending, to resume from its context store, unless it has been
   * started max_attempts times already. Returns whether it did.
   */
  async requeue(job: Job, lockedBy: string | null, why: string): Promise<boolean> {
    const maxAttempts = this.#config.maxAttempts;
    if (job.attempts >= maxAttempts || !(await this.#store.requeue(job.id, lockedBy))) return false;
    this.#logger.warn({ jobId: job.id, attempts: job.attempts, maxAttempts }, `${why}: the job resumes from its context store`);
    const events = this.openEvents(job);
    try {
      events.append('job-status', job.steps, { status: 'pending', resume: true, reason: `${why}; it resumes from its last completed step (attempt ${job.attempts + 1} of ${maxAttempts})` });
    } finally {
      events.close();
    }
    this.#queueChanged('pending');
    return true;
  }

  /** Cancels a job in any state but a finished one. Resolves once a pending job is fully ended. */
  async cancel(jobId: string, owner?: string): Promise<Job> {
    const job = await this.get(jobId, owner);
    const result = await this.#store.requestCancel(jobId);
    if (result === 'already-finished') throw conflict(`job ${jobId} has already ended (${(await this.#store.get(jobId))?.status ?? job.status}): nothing to cancel`);
    if (result === 'cancelled') {
      await this.recordEnd(job, { status: 'cancelled', error: 'cancelled before it started' }, 0);
    } else {
      this.#queueChanged('cancel');
    }
    return await this.get(jobId);
  }

  /**
   * Ends a job: zips its workspace (the sandbox must already be stopped), then records the final status in the
   * store (if `workerId` still holds it, or the job is unclaimed when `workerId` is null) and as the last event.
   */
  async endJob(job: Job, workerId: string | null, outcome: JobOutcome, step = job.steps): Promise<void> {
    await this.#zip(job);
    if (!(await this.#finish(job.id, workerId, outcome))) return; // someone else ended it first
    await this.recordEnd(job, outcome, step);
  }

  /**
   * The store's finish, tried again while the store is unreachable (Postgres restarting), so that a job that ended
   * does not wait for its lease to run out and run its last step again. An attempt whose answer was lost may have
   * committed: the row then shows this outcome already, which counts as this call's.
   */
  async #finish(jobId: string, workerId: string | null, outcome: JobOutcome): Promise<boolean> {
    for (let attempt = 1; ; attempt++) {
      try {
        if (await this.#store.finish(jobId, workerId, outcome)) return true;
        if (attempt === 1) return false;
        const row = await this.#store.get(jobId);
        return row?.status === outcome.status && row.error === (outcome.error ?? null) && row.summary === (outcome.summary ?? null);
      } catch (error) {
        if (attempt === finishAttempts) throw error;
        this.#logger.warn({ jobId, err: error, attempt }, `recording the end of the job failed (${errorMessage(error)}); trying again`);
        await delay(Math.min(5000, 250 * 2 ** attempt));
      }
    }
  }

  /**
   * Zips (if not yet) and appends the final job-status event of the run `job.run` of a job the store already shows as
   * ended, unless the log has it already.
   */
  async recordEnd(job: Job, outcome: JobOutcome, step: number): Promise<void> {
    // A message or a fork waits for this (the zip and the final event belong to the run that ended).
    const ending = Promise.withResolvers<void>();
    const previous = this.#ending.get(job.id);
    this.#ending.set(job.id, ending.promise);
    try {
      await previous;
      await this.#zip(job);
      const events = this.openEvents(job);
      try {
        events.appendEnd(step, endEvent(outcome, job.run));
      } finally {
        events.close();
      }
    } finally {
      if (this.#ending.get(job.id) === ending.promise) this.#ending.delete(job.id);
      ending.resolve();
    }
  }

  /**
   * A job the store shows as ended whose log lacks that end (its worker died between the two, or the store's
   * answer was lost): the end is appended from the row. Harmless when the worker is just recording it: one wins.
   * Only the event: the zip is the worker's (a replica without a worker may not mount the workspace's disk).
   */
  repairEnd(job: Job): void {
    if (job.status !== 'complete' && job.status !== 'error' && job.status !== 'cancelled') return;
    const events = this.openEvents(job);
    try {
      events.appendEnd(job.steps, { ...endEvent({ status: job.status, error: job.error ?? undefined, summary: job.summary ?? undefined }, job.run), repaired: true });
    } finally {
      events.close();
    }
  }

  hasArtifacts(jobId: string): boolean {
    return existsSync(this.paths(jobId).outputZip);
  }

  async #zip(job: Job): Promise<void> {
    const jobId = job.id;
    const paths = this.jobFiles(job);
    const onDisk = existsSync(paths.workspaceImage);
    // The tmpfs fallback (WORKCELL_DISK_LIMIT=tmpfs) has no image: it is what is mounted there.
    const onTmpfs = (await mountType(paths.workspace)) === 'tmpfs';
    if (!existsSync(paths.outputZip)) {
      try {
        // A workspace with a disk limit is on its image: zip that (mounted again if a restart lost the mount).
        if (onDisk) await attachWorkspaceDisk(paths, 0);
        // The workspace, and changes.patch when the job started from inputs (job-artifacts.ts).
        const result = await writeJobArtifacts(paths, { config: this.#config, logger: this.#logger.child({ jobId }) });
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

/** The data of a run's final job-status event. */
function endEvent(outcome: JobOutcome, run: number): { status: JobOutcome['status'] } & Record<string, unknown> {
  return { status: outcome.status, ...(outcome.error ? { error: outcome.error } : {}), ...(outcome.summary ? { summary: outcome.summary } : {}), run };
}

/** What the job's workspace starts from; refuses a git input with uploaded files, and uploads its disk cannot hold. */
function jobInputs(input: ScheduleInput, upload: UploadedWorkspace | undefined, diskMb: number): JobInputs {
  const git = input.inputs?.git;
  if (git !== undefined && input.from_job !== undefined) {
    throw invalidRequest('inputs.git cannot be combined with from_job: a fork starts from the other job\'s workspace, a clone needs an empty one. Fork the job, or clone the repository');
  }
  if (git !== undefined && upload !== undefined) {
    throw invalidRequest('inputs.git cannot be combined with uploaded files: the clone needs an empty workspace. Commit the files to the repository, or upload everything (an archive of the checkout)');
  }
  if (upload !== undefined && upload.diskBytes > diskMb * 1024 * 1024 * uploadDiskShare) {
    throw new WorkcellError(
      'payload_too_large',
      `the uploaded files take about ${Math.ceil(upload.diskBytes / (1024 * 1024))} MB on disk, more than ${Math.round(uploadDiskShare * 100)} % of the job's disk (limits.disk_mb: ${diskMb} MB): ask for a larger disk_mb (up to the server's WORKCELL_DISK_MB), or upload less`,
    );
  }
  return {
    ...(git === undefined ? {} : { git: { url: git.url, ...(git.ref === undefined ? {} : { ref: git.ref }), ...(git.depth === undefined ? {} : { depth: git.depth }) } }),
    ...(upload === undefined ? {} : { upload: { entries: upload.entries, bytes: upload.bytes } }),
  };
}
