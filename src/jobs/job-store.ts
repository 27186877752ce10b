// The job store: one SQLite database (<data-dir>/workcell.db) holding every job's row. Claiming is done in SQL
// with a lease (`locked_by`, `lease_expires_at`) renewed by heartbeat, so several workers (or a crashed one) never
// run the same job twice. This is the only module that writes job rows.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { migrate } from './event-log.ts';
import type { HostFileLimit } from './job-limits.ts';

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

interface JobRow extends Omit<Job, 'limits' | 'metadata' | 'cancel_requested' | 'resource_usage' | 'network' | 'inputs'> {
  resource_usage: string | null;
  network: string | null;
  inputs: string | null;
  limits: string;
  metadata: string;
  cancel_requested: number;
  lease_expires_at: number | null;
  idempotency_key: string | null;
  /** 1: the job's hooks go to the server's WORKCELL_CALLBACK_URL (it had one, and the job gave none). */
  callback_default: number;
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

const migrations = [
  `CREATE TABLE jobs (
     id TEXT PRIMARY KEY,
     status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'complete', 'error', 'cancelled')),
     task TEXT NOT NULL,
     model TEXT,
     runtime TEXT NOT NULL,
     limits TEXT NOT NULL,
     metadata TEXT NOT NULL DEFAULT '{}',
     idempotency_key TEXT UNIQUE,
     created_at TEXT NOT NULL,
     started_at TEXT,
     finished_at TEXT,
     error TEXT,
     summary TEXT,
     runtime_used TEXT,
     isolation TEXT,
     model_used TEXT,
     steps INTEGER NOT NULL DEFAULT 0,
     input_tokens INTEGER NOT NULL DEFAULT 0,
     output_tokens INTEGER NOT NULL DEFAULT 0,
     attempts INTEGER NOT NULL DEFAULT 0,
     cancel_requested INTEGER NOT NULL DEFAULT 0,
     locked_by TEXT,
     lease_expires_at INTEGER
   )`,
  `CREATE INDEX jobs_by_status ON jobs (status, id)`,
  // API keys: `owner` is the key that created the job (NULL when the server ran without keys).
  `ALTER TABLE jobs ADD COLUMN owner TEXT`,
  `CREATE TABLE api_keys (
     id TEXT PRIMARY KEY,
     name TEXT NOT NULL,
     secret_sha256 TEXT NOT NULL,
     created_at TEXT NOT NULL,
     revoked_at TEXT
   )`,
  // What the sandbox used (JSON ResourceUsage), recorded when the job ends.
  `ALTER TABLE jobs ADD COLUMN resource_usage TEXT`,
  // The job's own egress allow-list (JSON JobNetwork); NULL: none.
  `ALTER TABLE jobs ADD COLUMN network TEXT`,
  // The context window the client set for the job's model (tokens); NULL: the server's or the model's own.
  `ALTER TABLE jobs ADD COLUMN context_window INTEGER`,
  // Secrets the server makes for itself (the key that signs browser tokens), shared by every process on this store.
  `CREATE TABLE server_secrets (name TEXT PRIMARY KEY, value BLOB NOT NULL)`,
  // What the workspace starts from (JSON JobInputs: a git input, a summary of uploaded files); NULL: nothing.
  `ALTER TABLE jobs ADD COLUMN inputs TEXT`,
  // Runs. A message to a finished job continues it: the job runs again (`run` is its current run) and job_runs keeps
  // each run's start, end and outcome. The triggers keep the current run's row in step with every status change of
  // the job, whichever statement makes it (claim, finish, cancel, requeue), in the same transaction.
  `ALTER TABLE jobs ADD COLUMN run INTEGER NOT NULL DEFAULT 1;
   CREATE TABLE job_runs (
     job_id TEXT NOT NULL,
     run INTEGER NOT NULL,
     status TEXT NOT NULL,
     message TEXT,
     message_seq INTEGER,
     start_seq INTEGER NOT NULL DEFAULT 0,
     steps_before INTEGER NOT NULL DEFAULT 0,
     created_at TEXT NOT NULL,
     started_at TEXT,
     finished_at TEXT,
     error TEXT,
     summary TEXT,
     steps INTEGER NOT NULL DEFAULT 0,
     PRIMARY KEY (job_id, run)
   ) WITHOUT ROWID;
   INSERT INTO job_runs (job_id, run, status, created_at, started_at, finished_at, error, summary, steps)
     SELECT id, 1, status, created_at, started_at, finished_at, error, summary, steps FROM jobs;
   CREATE TRIGGER job_runs_first AFTER INSERT ON jobs BEGIN
     INSERT INTO job_runs (job_id, run, status, created_at) VALUES (NEW.id, NEW.run, NEW.status, NEW.created_at);
   END;
   CREATE TRIGGER job_runs_status AFTER UPDATE OF status ON jobs WHEN NEW.status IS NOT OLD.status BEGIN
     UPDATE job_runs SET status = NEW.status, started_at = COALESCE(started_at, NEW.started_at), finished_at = NEW.finished_at,
       error = NEW.error, summary = NEW.summary, steps = NEW.steps - steps_before
     WHERE job_id = NEW.id AND run = NEW.run;
   END;
   CREATE TRIGGER job_runs_deleted AFTER DELETE ON jobs BEGIN
     DELETE FROM job_runs WHERE job_id = OLD.id;
   END`,
  // The job a fork started from (POST /schedule {from_job}).
  `ALTER TABLE jobs ADD COLUMN forked_from TEXT`,
  // Lifecycle hooks. A job with a hook (its own callback_url, or the server's WORKCELL_CALLBACK_URL: callback_default)
  // gets a signed POST for its status when the hook is set and for every change after. The triggers put each into the
  // outbox in the transaction that makes the change, so a crash loses none; jobs/webhooks/ delivers them, in order
  // per job, retried with backoff. A row outlives its job (the receiver still hears how a deleted job ended).
  `ALTER TABLE jobs ADD COLUMN callback_url TEXT;
   ALTER TABLE jobs ADD COLUMN callback_default INTEGER NOT NULL DEFAULT 0;
   CREATE TABLE webhook_outbox (
     id INTEGER PRIMARY KEY AUTOINCREMENT,
     event_id TEXT NOT NULL UNIQUE,
     job_id TEXT NOT NULL,
     url TEXT,
     status TEXT NOT NULL,
     previous_status TEXT,
     run INTEGER NOT NULL,
     error TEXT,
     summary TEXT,
     time TEXT NOT NULL,
     state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
     attempts INTEGER NOT NULL DEFAULT 0,
     next_attempt_at INTEGER NOT NULL DEFAULT 0,
     last_error TEXT,
     done_at TEXT,
     locked_by TEXT,
     lease_expires_at INTEGER
   );
   CREATE INDEX webhook_outbox_by_state ON webhook_outbox (state, job_id, id);
   CREATE TRIGGER webhook_hook_set AFTER UPDATE OF callback_url, callback_default ON jobs
   WHEN OLD.callback_url IS NULL AND OLD.callback_default = 0 AND (NEW.callback_url IS NOT NULL OR NEW.callback_default = 1) BEGIN
     INSERT INTO webhook_outbox (event_id, job_id, url, status, run, error, summary, time)
     VALUES ('evt_' || lower(hex(randomblob(16))), NEW.id, NEW.callback_url, NEW.status, NEW.run, NEW.error, NEW.summary, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));
   END;
   CREATE TRIGGER webhook_status AFTER UPDATE OF status ON jobs
   WHEN NEW.status IS NOT OLD.status AND (NEW.callback_url IS NOT NULL OR NEW.callback_default = 1) BEGIN
     INSERT INTO webhook_outbox (event_id, job_id, url, status, previous_status, run, error, summary, time)
     VALUES ('evt_' || lower(hex(randomblob(16))), NEW.id, NEW.callback_url, NEW.status, OLD.status, NEW.run, NEW.error, NEW.summary, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));
   END`,
];

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

export class JobStore {
  readonly #db: Database.Database;

  constructor(dataDir: string) {
    mkdirSync(dataDir, { recursive: true, mode: 0o711 });
    this.#db = new Database(join(dataDir, 'workcell.db'));
    this.#db.pragma('journal_mode = WAL');
    this.#db.pragma('busy_timeout = 5000');
    this.#db.pragma('synchronous = NORMAL');
    migrate(this.#db, migrations);
  }

  /** Inserts a pending job, or returns the existing one when the idempotency key was used before. */
  create(input: NewJob, now = new Date()): { job: Job; created: boolean } {
    return this.#db.transaction(() => {
      if (input.idempotencyKey !== undefined) {
        const existing = this.findByIdempotencyKey(input.idempotencyKey, input.owner ?? null);
        if (existing) return { job: existing, created: false };
      }
      const id = input.id;
      this.#db
        .prepare(
          `INSERT INTO jobs (id, status, task, model, runtime, limits, metadata, idempotency_key, created_at, owner, network, context_window, inputs)
           VALUES (?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        )
        .run(
          id,
          input.task,
          input.model ?? null,
          input.runtime,
          JSON.stringify(input.limits),
          JSON.stringify(input.metadata ?? {}),
          input.idempotencyKey === undefined ? null : scopedKey(input.idempotencyKey, input.owner ?? null),
          now.toISOString(),
          input.owner ?? null,
          input.network === undefined || input.network.allow.length === 0 ? null : JSON.stringify(input.network),
          input.contextWindow ?? null,
          input.inputs === undefined || Object.keys(input.inputs).length === 0 ? null : JSON.stringify(input.inputs),
        );
      // Set apart from the insert: a hook set on a job is told its status at once (the trigger of webhook_hook_set).
      if (input.callbackUrl !== undefined || input.callbackDefault === true || input.forkedFrom !== undefined) {
        this.#db
          .prepare('UPDATE jobs SET callback_url = ?, callback_default = ?, forked_from = ? WHERE id = ?')
          .run(input.callbackUrl ?? null, input.callbackDefault === true ? 1 : 0, input.forkedFrom ?? null, id);
      }
      return { job: this.get(id)!, created: true };
    })();
  }

  /** Idempotency keys are per owner: two API keys may use the same one without seeing each other's jobs. */
  findByIdempotencyKey(key: string, owner: string | null): Job | undefined {
    const row = this.#db.prepare('SELECT * FROM jobs WHERE idempotency_key = ?').get(scopedKey(key, owner)) as JobRow | undefined;
    return row && toJob(row);
  }

  get(id: string): Job | undefined {
    const row = this.#db.prepare('SELECT * FROM jobs WHERE id = ?').get(id) as JobRow | undefined;
    return row && toJob(row);
  }

  /** Newest first; `cursor` is the last id of the previous page; `owner` (when given) only that key's jobs. */
  list(options: { status?: JobStatus | undefined; limit: number; cursor?: string | undefined; owner?: string | undefined }): { jobs: Job[]; nextCursor: string | null } {
    const where: string[] = [];
    const params: unknown[] = [];
    if (options.owner !== undefined) {
      where.push('owner = ?');
      params.push(options.owner);
    }
    if (options.status) {
      where.push('status = ?');
      params.push(options.status);
    }
    if (options.cursor) {
      where.push('id < ?');
      params.push(options.cursor);
    }
    const sql = `SELECT * FROM jobs ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY id DESC LIMIT ?`;
    const rows = this.#db.prepare(sql).all(...params, options.limit + 1) as JobRow[];
    const jobs = rows.slice(0, options.limit).map(toJob);
    return { jobs, nextCursor: rows.length > options.limit ? jobs.at(-1)!.id : null };
  }

  /** Atomically takes the oldest pending job for `workerId`, marking it running with a lease. */
  claim(workerId: string, leaseMs: number, now = Date.now()): Job | undefined {
    const row = this.#db
      .prepare(
        `UPDATE jobs SET status = 'running', locked_by = ?, lease_expires_at = ?, attempts = attempts + 1,
           started_at = COALESCE(started_at, ?)
         WHERE id = (SELECT id FROM jobs WHERE status = 'pending' ORDER BY id LIMIT 1)
         RETURNING *`,
      )
      .get(workerId, now + leaseMs, new Date(now).toISOString()) as JobRow | undefined;
    return row && toJob(row);
  }

  /** Extends the lease; returns whether the worker still holds the job and whether a cancel was requested. */
  heartbeat(id: string, workerId: string, leaseMs: number, now = Date.now()): { held: boolean; cancelRequested: boolean } {
    const row = this.#db
      .prepare(`UPDATE jobs SET lease_expires_at = ? WHERE id = ? AND locked_by = ? AND status = 'running' RETURNING cancel_requested`)
      .get(now + leaseMs, id, workerId) as { cancel_requested: number } | undefined;
    return { held: row !== undefined, cancelRequested: row?.cancel_requested === 1 };
  }

  /** Records what the job actually runs on and its progress. */
  update(id: string, fields: Partial<Pick<Job, 'runtime_used' | 'isolation' | 'model_used' | 'steps' | 'input_tokens' | 'output_tokens'>>): void {
    const keys = Object.keys(fields) as Array<keyof typeof fields>;
    if (keys.length === 0) return;
    this.#db.prepare(`UPDATE jobs SET ${keys.map((k) => `${k} = @${k}`).join(', ')} WHERE id = @id`).run({ ...fields, id });
  }

  /** Records what the job's sandbox used (CPU time, peak memory), over what was recorded before. */
  recordResourceUsage(id: string, usage: ResourceUsage): void {
    this.#db.prepare(`UPDATE jobs SET resource_usage = json_patch(COALESCE(resource_usage, '{}'), ?) WHERE id = ?`).run(JSON.stringify(usage), id);
  }

  /** Adds a cap the job ran into to its resource usage (once each). */
  recordLimitReached(id: string, limit: HostFileLimit): void {
    this.#db
      .prepare(
        `UPDATE jobs SET resource_usage = json_set(COALESCE(resource_usage, '{}'), '$.limits_reached', json_insert(COALESCE(json_extract(resource_usage, '$.limits_reached'), '[]'), '$[#]', @limit))
         WHERE id = @id AND NOT EXISTS (SELECT 1 FROM json_each(jobs.resource_usage, '$.limits_reached') WHERE value = @limit)`,
      )
      .run({ limit, id });
  }

  /** Ends a job the worker holds (or any unclaimed job when workerId is null). No-op if it already ended. */
  finish(id: string, workerId: string | null, outcome: { status: 'complete' | 'error' | 'cancelled'; error?: string | undefined; summary?: string | undefined }, now = new Date()): boolean {
    const result = this.#db
      .prepare(
        `UPDATE jobs SET status = ?, error = ?, summary = ?, finished_at = ?, locked_by = NULL, lease_expires_at = NULL
         WHERE id = ? AND status IN ('pending', 'running') AND (locked_by IS ? OR ? IS NULL)`,
      )
      .run(outcome.status, outcome.error ?? null, outcome.summary ?? null, now.toISOString(), id, workerId, workerId);
    return result.changes === 1;
  }

  /** A pending job is cancelled at once; a running one is flagged for its worker, which stops it at its next heartbeat. */
  requestCancel(id: string, now = new Date()): CancelResult {
    return this.#db.transaction((): CancelResult => {
      const job = this.get(id);
      if (!job || finishedStatuses.includes(job.status)) return 'already-finished';
      if (job.status === 'pending') {
        this.#db.prepare(`UPDATE jobs SET status = 'cancelled', error = 'cancelled before it started', finished_at = ? WHERE id = ?`).run(now.toISOString(), id);
        return 'cancelled';
      }
      this.#db.prepare('UPDATE jobs SET cancel_requested = 1 WHERE id = ?').run(id);
      return 'requested';
    })();
  }

  /**
   * Puts a running job whose worker died back in the queue (it resumes from its context store); only if
   * `lockedBy` still holds it, so that of several workers sweeping at once exactly one requeues it.
   */
  requeue(id: string, lockedBy: string | null): boolean {
    const result = this.#db
      .prepare(`UPDATE jobs SET status = 'pending', locked_by = NULL, lease_expires_at = NULL WHERE id = ? AND status = 'running' AND locked_by IS ?`)
      .run(id, lockedBy);
    return result.changes === 1;
  }

  /** Running jobs whose worker stopped renewing its lease. */
  expiredLeases(now = Date.now()): Job[] {
    return (this.#db.prepare(`SELECT * FROM jobs WHERE status = 'running' AND lease_expires_at < ?`).all(now) as JobRow[]).map(toJob);
  }

  /**
   * Continues a finished job with another run: back to pending, `run` one more, a fresh attempt budget, and the
   * previous run's times and outcome cleared from the row (job_runs keeps them). `start` is where the run begins in
   * the job's event log and the message that starts it. Undefined when the job is not finished (gone, or reopened
   * by another request first: of two at once exactly one reopens it).
   */
  reopen(id: string, start: { message: string; messageSeq: number; startSeq: number }, now = new Date()): Job | undefined {
    return this.#db.transaction(() => {
      const row = this.#db
        .prepare(
          `UPDATE jobs SET status = 'pending', run = run + 1, started_at = NULL, finished_at = NULL, error = NULL, summary = NULL,
             attempts = 0, cancel_requested = 0, locked_by = NULL, lease_expires_at = NULL
           WHERE id = ? AND status IN ('complete', 'error', 'cancelled')
           RETURNING *`,
        )
        .get(id) as JobRow | undefined;
      if (!row) return undefined;
      this.#db
        .prepare(`INSERT INTO job_runs (job_id, run, status, message, message_seq, start_seq, steps_before, created_at) VALUES (?, ?, 'pending', ?, ?, ?, ?, ?)`)
        .run(id, row.run, start.message, start.messageSeq, start.startSeq, row.steps, now.toISOString());
      return toJob(row);
    })();
  }

  /** The job's runs, first to last. */
  runs(id: string): JobRun[] {
    return this.#db.prepare('SELECT * FROM job_runs WHERE job_id = ? ORDER BY run').all(id) as JobRun[];
  }

  /** One run of the job. */
  getRun(id: string, run: number): JobRun | undefined {
    return this.#db.prepare('SELECT * FROM job_runs WHERE job_id = ? AND run = ?').get(id, run) as JobRun | undefined;
  }

  /** Deletes a finished job's row (and its runs); false when it is not there or not finished (never a live job). */
  deleteFinished(id: string): boolean {
    return this.#db.prepare(`DELETE FROM jobs WHERE id = ? AND status IN ('complete', 'error', 'cancelled')`).run(id).changes === 1;
  }

  /** Finished jobs that ended before `cutoff`, oldest first. */
  finishedBefore(cutoff: Date, limit: number): Job[] {
    const rows = this.#db
      .prepare(`SELECT * FROM jobs WHERE status IN ('complete', 'error', 'cancelled') AND finished_at < ? ORDER BY finished_at LIMIT ?`)
      .all(cutoff.toISOString(), limit) as JobRow[];
    return rows.map(toJob);
  }

  /** The store's database, for the modules that keep tables beside the jobs in it (jobs/webhooks/outbox.ts). */
  get database(): Database.Database {
    return this.#db;
  }

  // --- API keys: the secret is never stored, only its SHA-256 (secrets are 256 random bits, so no slow hash is needed).

  createApiKey(name: string, now = new Date()): { id: string; token: string } {
    const id = `key_${randomBytes(8).toString('hex')}`;
    const secret = randomBytes(32).toString('base64url');
    this.#db.prepare('INSERT INTO api_keys (id, name, secret_sha256, created_at) VALUES (?, ?, ?, ?)').run(id, name, sha256(secret), now.toISOString());
    return { id, token: `wc_${id}_${secret}` };
  }

  /** The key id a token belongs to, if it is a live key; constant-time in the secret. */
  verifyApiKey(token: string): string | undefined {
    const match = /^wc_(key_[0-9a-f]{16})_([A-Za-z0-9_-]{43})$/.exec(token);
    if (!match) return undefined;
    const row = this.#db.prepare('SELECT secret_sha256 FROM api_keys WHERE id = ? AND revoked_at IS NULL').get(match[1]) as { secret_sha256: string } | undefined;
    const expected = Buffer.from(row?.secret_sha256 ?? '0'.repeat(64), 'hex');
    const actual = Buffer.from(sha256(match[2]!), 'hex');
    return timingSafeEqual(expected, actual) && row !== undefined ? match[1] : undefined;
  }

  listApiKeys(): Array<{ id: string; name: string; created_at: string; revoked_at: string | null }> {
    return this.#db.prepare('SELECT id, name, created_at, revoked_at FROM api_keys ORDER BY created_at').all() as Array<{ id: string; name: string; created_at: string; revoked_at: string | null }>;
  }

  revokeApiKey(id: string, now = new Date()): boolean {
    return this.#db.prepare('UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL').run(now.toISOString(), id).changes === 1;
  }

  /** Whether the key with this id exists and is not revoked. */
  isApiKeyLive(id: string): boolean {
    return this.#db.prepare('SELECT 1 FROM api_keys WHERE id = ? AND revoked_at IS NULL').get(id) !== undefined;
  }

  /** A random 32-byte secret by name, made on first use and the same for every process that opens this store. */
  serverSecret(name: string): Buffer {
    this.#db.prepare('INSERT OR IGNORE INTO server_secrets (name, value) VALUES (?, ?)').run(name, randomBytes(32));
    return (this.#db.prepare('SELECT value FROM server_secrets WHERE name = ?').get(name) as { value: Buffer }).value;
  }

  /**
   * Whether keys are in use: then every route but /healthz needs one. Revoked keys count, so that revoking the last
   * key locks the server rather than opening it.
   */
  hasApiKeys(): boolean {
    return this.#db.prepare('SELECT 1 FROM api_keys LIMIT 1').get() !== undefined;
  }

  close(): void {
    this.#db.close();
  }
}

const sha256 = (value: string) => createHash('sha256').update(value).digest('hex');
const scopedKey = (key: string, owner: string | null) => `${owner ?? '-'}:${key}`;

function toJob(row: JobRow): Job {
  const { lease_expires_at: _lease, idempotency_key: _key, callback_default: _hookDefault, ...rest } = row;
  return {
    ...rest,
    limits: JSON.parse(row.limits) as JobLimits,
    metadata: JSON.parse(row.metadata) as Record<string, string>,
    cancel_requested: row.cancel_requested === 1,
    resource_usage: row.resource_usage === null ? null : (JSON.parse(row.resource_usage) as ResourceUsage),
    network: row.network === null ? { allow: [] } : (JSON.parse(row.network) as JobNetwork),
    inputs: row.inputs === null ? {} : (JSON.parse(row.inputs) as JobInputs),
  };
}
