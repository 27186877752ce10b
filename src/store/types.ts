// The store seam: where jobs, their runs, API keys, server secrets and the webhook outbox are kept. One interface,
// one folder per implementation: sqlite/ (the embedded default, <data-dir>/workcell.db) and postgres/ (selected by
// WORKCELL_DATABASE_URL, shared by every API replica and worker). Every method is async so that both fit; each
// write that must be atomic (claim, finish, reopen, the outbox row of a status change) is atomic in the store itself.
import type { HostFileLimit } from '../jobs/job-limits.ts';

export const jobStatuses = ['pending', 'running', 'complete', 'error', 'cancelled'] as const;
export type JobStatus = (typeof jobStatuses)[number];
export const finishedStatuses: readonly JobStatus[] = ['complete', 'error', 'cancelled'];

export interface JobLimits {
  wall_time_s: number;
  max_steps: number;
  // Resource limits (set on every job scheduled since they exist; older rows lack them: the server defaults apply).
  cpus?: number;
  memory_mb?: number;
  pids?: number;
  disk_mb?: number;
  idle_time_s?: number;
  // Caps on the files a sandbox can grow on the host (jobs/job-limits.ts); older rows lack them: the server defaults apply.
  sandbox_log_mb?: number;
  audit_log_mb?: number;
  context_mb?: number;
}

/** What the job's sandbox used, measured by the runtime (cgroups) when it ended. */
export interface ResourceUsage {
  cpu_seconds?: number;
  peak_memory_mb?: number;
  /** The caps on host files the job ran into (recorded when each is reached). */
  limits_reached?: HostFileLimit[];
}

export interface Job {
  id: string;
  status: JobStatus;
  task: string;
  /** The model the client asked for; null means the server's default at run time. */
  model: string | null;
  /** The runtime the client asked for (`auto` or a name). */
  runtime: string;
  limits: JobLimits;
  metadata: Record<string, string>;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
  error: string | null;
  summary: string | null;
  /** What the job actually got. */
  runtime_used: string | null;
  isolation: string | null;
  model_used: string | null;
  steps: number;
  input_tokens: number;
  output_tokens: number;
  attempts: number;
  cancel_requested: boolean;
  locked_by: string | null;
  /** The API key that created the job; null when the server ran without keys. */
  owner: string | null;
  /** The job's current run: 1, then one more each time a message continues the finished job (job_runs holds each). */
  run: number;
  /** Where the job's lifecycle hooks go (its own callback_url); null: nowhere, or the server's WORKCELL_CALLBACK_URL. */
  callback_url: string | null;
  /** The job whose final workspace this one started from (POST /schedule {from_job}). */
  forked_from: string | null;
  resource_usage: ResourceUsage | null;
  /** The model context window the client set for this job (tokens); null: the server's or the model's. */
  context_window: number | null;
  /** The job's own egress allow-list (normalized); the server's WORKCELL_NETWORK_ALLOW is added when it runs. */
  network: JobNetwork;
  /** What the workspace starts from: a git clone made when the job starts, or files uploaded with it ({}: nothing). */
  inputs: JobInputs;
}

export interface JobNetwork {
  allow: string[];
}

/** A git repository the host clones into the workspace before the sandbox starts (jobs/inputs/git-clone.ts). */
export interface GitInput {
  /** http(s) URL without user info: credentials come from the server's WORKCELL_GIT_CREDENTIALS. */
  url: string;
  /** A branch, a tag or a full commit id; default: the remote's default branch. */
  ref?: string | undefined;
  /** Commits of history to fetch (a shallow clone); default: all. */
  depth?: number | undefined;
}

export interface JobInputs {
  git?: GitInput;
  /** Files placed in the workspace when the job was scheduled (multipart POST /schedule). */
  upload?: { entries: number; bytes: number };
}

/** One run of a job: the first starts with the task, each later one with the message that continued the job. */
export interface JobRun {
  run: number;
  status: JobStatus;
  /** The message that started this run, verbatim; null for the first run (its message is the task). */
  message: string | null;
  /** The user-message event that holds it. */
  message_seq: number | null;
  /** The first event of this run in the job's event log (the job-status that reopened the job); 0 for the first. */
  start_seq: number;
  /** Model turns the job took before this run: its steps are numbered from steps_before + 1. */
  steps_before: number;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
  error: string | null;
  summary: string | null;
  /** Model turns this run took (recorded at each status change; the job row has the live count). */
  steps: number;
}

export interface NewJob {
  id: string;
  task: string;
  model?: string | undefined;
  runtime: string;
  limits: JobLimits;
  metadata?: Record<string, string> | undefined;
  idempotencyKey?: string | undefined;
  owner?: string | null | undefined;
  /** The job's own hook URL (checked by jobs/webhooks/callback-url.ts); callbackDefault: the server's instead. */
  callbackUrl?: string | undefined;
  callbackDefault?: boolean | undefined;
  forkedFrom?: string | undefined;
  network?: JobNetwork | undefined;
  contextWindow?: number | undefined;
  inputs?: JobInputs | undefined;
}

export type CancelResult = 'cancelled' | 'requested' | 'already-finished';

export type JobProgress = Partial<Pick<Job, 'runtime_used' | 'isolation' | 'model_used' | 'steps' | 'input_tokens' | 'output_tokens'>>;

export interface OutboxRow {
  id: number;
  /** The event's id: the same on every attempt (the receiver deduplicates on it). */
  event_id: string;
  job_id: string;
  /** The job's own callback_url; null: the server's WORKCELL_CALLBACK_URL. */
  url: string | null;
  status: JobStatus;
  previous_status: JobStatus | null;
  run: number;
  error: string | null;
  summary: string | null;
  /** When the status changed (ISO 8601). */
  time: string;
  state: 'pending' | 'delivered' | 'failed';
  attempts: number;
  /** Unix ms before which the next attempt waits. */
  next_attempt_at: number;
  last_error: string | null;
  done_at: string | null;
  locked_by: string | null;
  lease_expires_at: number | null;
}


/** A key as listed (never its secret). */
export interface ApiKeyInfo {
  id: string;
  name: string;
  created_at: string;
  revoked_at: string | null;
}

/**
 * Jobs and their runs, and the queue: claiming is done in the store with a lease (`locked_by`, `lease_expires_at`)
 * renewed by heartbeat, so several workers (or a crashed one) never run the same job twice.
 */
export interface JobStore {
  /** Inserts a pending job, or returns the existing one when the idempotency key was used before. */
  create(input: NewJob, now?: Date): Promise<{ job: Job; created: boolean }>;
  /** Idempotency keys are per owner: two API keys may use the same one without seeing each other's jobs. */
  findByIdempotencyKey(key: string, owner: string | null): Promise<Job | undefined>;
  get(id: string): Promise<Job | undefined>;
  /** Newest first; `cursor` is the last id of the previous page; `owner` (when given) only that key's jobs. */
  list(options: { status?: JobStatus | undefined; limit: number; cursor?: string | undefined; owner?: string | undefined }): Promise<{ jobs: Job[]; nextCursor: string | null }>;
  /** Atomically takes the oldest pending job for `workerId`, marking it running with a lease. */
  claim(workerId: string, leaseMs: number, now?: number): Promise<Job | undefined>;
  /** Extends the lease; whether the worker still holds the job and whether a cancel was requested. */
  heartbeat(id: string, workerId: string, leaseMs: number, now?: number): Promise<{ held: boolean; cancelRequested: boolean }>;
  /** Records what the job actually runs on and its progress. */
  update(id: string, fields: JobProgress): Promise<void>;
  /** Records what the job's sandbox used (CPU time, peak memory), over what was recorded before. */
  recordResourceUsage(id: string, usage: ResourceUsage): Promise<void>;
  /** Adds a cap the job ran into to its resource usage (once each). */
  recordLimitReached(id: string, limit: HostFileLimit): Promise<void>;
  /** Ends a job the worker holds (or any unclaimed job when workerId is null); false if it already ended. */
  finish(id: string, workerId: string | null, outcome: { status: 'complete' | 'error' | 'cancelled'; error?: string | undefined; summary?: string | undefined }, now?: Date): Promise<boolean>;
  /** A pending job is cancelled at once; a running one is flagged for its worker, which stops it at its next heartbeat. */
  requestCancel(id: string, now?: Date): Promise<CancelResult>;
  /**
   * Puts a running job whose worker died back in the queue (it resumes from its context store); only if
   * `lockedBy` still holds it, so that of several workers sweeping at once exactly one requeues it.
   */
  requeue(id: string, lockedBy: string | null): Promise<boolean>;
  /** Running jobs whose worker stopped renewing its lease. */
  expiredLeases(now?: number): Promise<Job[]>;
  /**
   * Continues a finished job with another run: back to pending, `run` one more, a fresh attempt budget, and the
   * previous run's times and outcome cleared from the row (the runs keep them). `start` is where the run begins in
   * the job's event log and the message that starts it. Undefined when the job is not finished (gone, or reopened
   * by another request first: of two at once exactly one reopens it).
   */
  reopen(id: string, start: { message: string; messageSeq: number; startSeq: number }, now?: Date): Promise<Job | undefined>;
  /** The job's runs, first to last. */
  runs(id: string): Promise<JobRun[]>;
  getRun(id: string, run: number): Promise<JobRun | undefined>;
  /** Deletes a finished job's row (and its runs); false when it is not there or not finished (never a live job). */
  deleteFinished(id: string): Promise<boolean>;
  /** Finished jobs that ended before `cutoff`, oldest first. */
  finishedBefore(cutoff: Date, limit: number): Promise<Job[]>;
}

/** API keys (only a hash of each secret is kept) and the secrets the server makes for itself. */
export interface KeyStore {
  /** A new key; its token is returned once and never stored. */
  create(name: string, now?: Date): Promise<{ id: string; token: string }>;
  /** The key id a token belongs to, if it is a live key; constant-time in the secret. */
  verify(token: string): Promise<string | undefined>;
  list(): Promise<ApiKeyInfo[]>;
  revoke(id: string, now?: Date): Promise<boolean>;
  /** Whether the key with this id exists and is not revoked. */
  isLive(id: string): Promise<boolean>;
  /**
   * Whether keys are in use: then every route but /healthz needs one. Revoked keys count, so that revoking the last
   * key locks the server rather than opening it.
   */
  hasKeys(): Promise<boolean>;
  /**
   * A value by name, made on first use and the same for every process that opens this store: the first caller's
   * `offer`, by default 32 random bytes (a secret).
   */
  serverSecret(name: string, offer?: Buffer): Promise<Buffer>;
}

/**
 * The webhook outbox: one row per status change of a job with a hook, written in the same transaction as the change,
 * so a crash or a restart loses none. Deliveries are claimed with a lease, as jobs are; a row is claimed only when no
 * earlier row of its job is still pending, so a receiver hears a job's changes in order. jobs/webhooks/ does the HTTP.
 */
export interface WebhookOutbox {
  /** Takes up to `limit` deliveries that are due, each the oldest pending one of its job, for `workerId` until `leaseUntil` (Unix ms). */
  claim(workerId: string, limit: number, now: number, leaseUntil: number): Promise<OutboxRow[]>;
  delivered(id: number, workerId: string, now: Date): Promise<void>;
  /** A failed attempt: tried again at `nextAttemptAt` (Unix ms), or given up (`nextAttemptAt` undefined). */
  attemptFailed(id: number, workerId: string, error: string, nextAttemptAt: number | undefined, now: Date): Promise<void>;
  /** Gives back a claim without counting an attempt (the server is stopping). */
  release(id: number, workerId: string): Promise<void>;
  /** When the next pending delivery is due (Unix ms), or undefined when none is pending. */
  nextDue(): Promise<number | undefined>;
  /** A job's deliveries, oldest first. */
  forJob(jobId: string): Promise<OutboxRow[]>;
  /** Removes deliveries that ended (delivered or given up) before `cutoff`; how many. */
  prune(cutoff: Date): Promise<number>;
}

/** One store: the three parts share a database (and its transactions). */
export interface Store {
  /** `sqlite` or `postgres`. */
  readonly kind: string;
  readonly jobs: JobStore;
  readonly keys: KeyStore;
  readonly outbox: WebhookOutbox;
  close(): Promise<void>;
}
