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
  resource_usage: ResourceUsage | null;
  /** The model context window the client set for this job (tokens); null: the server's or the model's. */
  context_window: number | null;
  /** The job's own egress allow-list (normalized); the server's WORKCELL_NETWORK_ALLOW is added when it runs. */
  network: JobNetwork;
}

export interface JobNetwork {
  allow: string[];
}

interface JobRow extends Omit<Job, 'limits' | 'metadata' | 'cancel_requested' | 'resource_usage' | 'network'> {
  resource_usage: string | null;
  network: string | null;
  limits: string;
  metadata: string;
  cancel_requested: number;
  lease_expires_at: number | null;
  idempotency_key: string | null;
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
  network?: JobNetwork | undefined;
  contextWindow?: number | undefined;
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
          `INSERT INTO jobs (id, status, task, model, runtime, limits, metadata, idempotency_key, created_at, owner, network, context_window)
           VALUES (?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
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
        );
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
  const { lease_expires_at: _lease, idempotency_key: _key, ...rest } = row;
  return {
    ...rest,
    limits: JSON.parse(row.limits) as JobLimits,
    metadata: JSON.parse(row.metadata) as Record<string, string>,
    cancel_requested: row.cancel_requested === 1,
    resource_usage: row.resource_usage === null ? null : (JSON.parse(row.resource_usage) as ResourceUsage),
    network: row.network === null ? { allow: [] } : (JSON.parse(row.network) as JobNetwork),
  };
}
