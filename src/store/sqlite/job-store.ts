// The SQLite job store: the jobs and job_runs tables of workcell.db (schema.ts). Claims, heartbeats, finishing and
// requeueing are single conditional statements, so several workers on one data dir never run a job twice.
import type Database from 'better-sqlite3';
import type { HostFileLimit } from '../../jobs/job-limits.ts';
import {
  finishedStatuses,
  type CancelResult,
  type Job,
  type JobInputs,
  type JobLimits,
  type JobNetwork,
  type JobProgress,
  type JobStatus,
  type JobRun,
  type JobStore,
  type NewJob,
  type ResourceUsage,
} from '../types.ts';

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

export class SqliteJobStore implements JobStore {
  readonly #db: Database.Database;

  constructor(db: Database.Database) {
    this.#db = db;
  }

  /** Inserts a pending job, or returns the existing one when the idempotency key was used before. */
  async create(input: NewJob, now = new Date()): Promise<{ job: Job; created: boolean }> {
    return this.#db.transaction(() => {
      if (input.idempotencyKey !== undefined) {
        const existing = this.#byIdempotencyKey(input.idempotencyKey, input.owner ?? null);
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
      return { job: this.#get(id)!, created: true };
    })();
  }

  /** Idempotency keys are per owner: two API keys may use the same one without seeing each other's jobs. */
  async findByIdempotencyKey(key: string, owner: string | null): Promise<Job | undefined> {
    return this.#byIdempotencyKey(key, owner);
  }

  async get(id: string): Promise<Job | undefined> {
    return this.#get(id);
  }

  #byIdempotencyKey(key: string, owner: string | null): Job | undefined {
    const row = this.#db.prepare('SELECT * FROM jobs WHERE idempotency_key = ?').get(scopedKey(key, owner)) as JobRow | undefined;
    return row && toJob(row);
  }

  #get(id: string): Job | undefined {
    const row = this.#db.prepare('SELECT * FROM jobs WHERE id = ?').get(id) as JobRow | undefined;
    return row && toJob(row);
  }

  /** Newest first; `cursor` is the last id of the previous page; `owner` (when given) only that key's jobs. */
  async list(options: { status?: JobStatus | undefined; limit: number; cursor?: string | undefined; owner?: string | undefined }): Promise<{ jobs: Job[]; nextCursor: string | null }> {
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
  async claim(workerId: string, leaseMs: number, now = Date.now()): Promise<Job | undefined> {
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
  async heartbeat(id: string, workerId: string, leaseMs: number, now = Date.now()): Promise<{ held: boolean; cancelRequested: boolean }> {
    const row = this.#db
      .prepare(`UPDATE jobs SET lease_expires_at = ? WHERE id = ? AND locked_by = ? AND status = 'running' RETURNING cancel_requested`)
      .get(now + leaseMs, id, workerId) as { cancel_requested: number } | undefined;
    return { held: row !== undefined, cancelRequested: row?.cancel_requested === 1 };
  }

  /** Records what the job actually runs on and its progress. */
  async update(id: string, fields: JobProgress): Promise<void> {
    const keys = Object.keys(fields) as Array<keyof typeof fields>;
    if (keys.length === 0) return;
    this.#db.prepare(`UPDATE jobs SET ${keys.map((k) => `${k} = @${k}`).join(', ')} WHERE id = @id`).run({ ...fields, id });
  }

  /** Records what the job's sandbox used (CPU time, peak memory), over what was recorded before. */
  async recordResourceUsage(id: string, usage: ResourceUsage): Promise<void> {
    this.#db.prepare(`UPDATE jobs SET resource_usage = json_patch(COALESCE(resource_usage, '{}'), ?) WHERE id = ?`).run(JSON.stringify(usage), id);
  }

  /** Adds a cap the job ran into to its resource usage (once each). */
  async recordLimitReached(id: string, limit: HostFileLimit): Promise<void> {
    this.#db
      .prepare(
        `UPDATE jobs SET resource_usage = json_set(COALESCE(resource_usage, '{}'), '$.limits_reached', json_insert(COALESCE(json_extract(resource_usage, '$.limits_reached'), '[]'), '$[#]', @limit))
         WHERE id = @id AND NOT EXISTS (SELECT 1 FROM json_each(jobs.resource_usage, '$.limits_reached') WHERE value = @limit)`,
      )
      .run({ limit, id });
  }

  /** Ends a job the worker holds (or any unclaimed job when workerId is null). No-op if it already ended. */
  async finish(id: string, workerId: string | null, outcome: { status: 'complete' | 'error' | 'cancelled'; error?: string | undefined; summary?: string | undefined }, now = new Date()): Promise<boolean> {
    const result = this.#db
      .prepare(
        `UPDATE jobs SET status = ?, error = ?, summary = ?, finished_at = ?, locked_by = NULL, lease_expires_at = NULL
         WHERE id = ? AND status IN ('pending', 'running') AND (locked_by IS ? OR ? IS NULL)`,
      )
      .run(outcome.status, outcome.error ?? null, outcome.summary ?? null, now.toISOString(), id, workerId, workerId);
    return result.changes === 1;
  }

  /** A pending job is cancelled at once; a running one is flagged for its worker, which stops it at its next heartbeat. */
  async requestCancel(id: string, now = new Date()): Promise<CancelResult> {
    return this.#db.transaction((): CancelResult => {
      const job = this.#get(id);
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
  async requeue(id: string, lockedBy: string | null): Promise<boolean> {
    const result = this.#db
      .prepare(`UPDATE jobs SET status = 'pending', locked_by = NULL, lease_expires_at = NULL WHERE id = ? AND status = 'running' AND locked_by IS ?`)
      .run(id, lockedBy);
    return result.changes === 1;
  }

  /** Running jobs whose worker stopped renewing its lease. */
  async expiredLeases(now = Date.now()): Promise<Job[]> {
    return (this.#db.prepare(`SELECT * FROM jobs WHERE status = 'running' AND lease_expires_at < ?`).all(now) as JobRow[]).map(toJob);
  }

  /**
   * Continues a finished job with another run: back to pending, `run` one more, a fresh attempt budget, and the
   * previous run's times and outcome cleared from the row (job_runs keeps them). `start` is where the run begins in
   * the job's event log and the message that starts it. Undefined when the job is not finished (gone, or reopened
   * by another request first: of two at once exactly one reopens it).
   */
  async reopen(id: string, start: { message: string; messageSeq: number; startSeq: number }, now = new Date()): Promise<Job | undefined> {
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
  async runs(id: string): Promise<JobRun[]> {
    return this.#db.prepare('SELECT * FROM job_runs WHERE job_id = ? ORDER BY run').all(id) as JobRun[];
  }

  /** One run of the job. */
  async getRun(id: string, run: number): Promise<JobRun | undefined> {
    return this.#db.prepare('SELECT * FROM job_runs WHERE job_id = ? AND run = ?').get(id, run) as JobRun | undefined;
  }

  /** Deletes a finished job's row (and its runs); false when it is not there or not finished (never a live job). */
  async deleteFinished(id: string): Promise<boolean> {
    return this.#db.prepare(`DELETE FROM jobs WHERE id = ? AND status IN ('complete', 'error', 'cancelled')`).run(id).changes === 1;
  }

  /** Finished jobs that ended before `cutoff`, oldest first. */
  async finishedBefore(cutoff: Date, limit: number): Promise<Job[]> {
    const rows = this.#db
      .prepare(`SELECT * FROM jobs WHERE status IN ('complete', 'error', 'cancelled') AND finished_at < ? ORDER BY finished_at LIMIT ?`)
      .all(cutoff.toISOString(), limit) as JobRow[];
    return rows.map(toJob);
  }

}

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
