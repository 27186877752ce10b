// The Postgres job store: the jobs and job_runs tables (schema.ts), shared by every API replica and worker on every
// host. Claims, heartbeats, finishing and requeueing are single conditional statements; the few changes that take
// more than one statement (create, requestCancel, reopen) are transactions on one connection. It must never leave a
// job claimed by two workers, nor two jobs for one idempotency key.
//
// The queue is this table, claimed with FOR UPDATE SKIP LOCKED, rather than a queue library (pg-boss,
// graphile-worker): a queued item here is the job itself, with its lease, attempts, runs, cancel flag and reopening,
// and the outbox rows its triggers write in the same transaction. A separate queue would keep a second copy of that
// state, and every change would have to be made in both consistently.
import type { Pool } from 'pg';
import type { HostFileLimit } from '../../jobs/job-limits.ts';
import {
  finishedStatuses,
  type CancelResult,
  type Job,
  type JobInputs,
  type JobNetwork,
  type JobProgress,
  type JobRun,
  type JobStatus,
  type JobStore,
  type NewJob,
  type ResourceUsage,
} from '../types.ts';
import { transaction } from './pool.ts';

interface JobRow extends Omit<Job, 'resource_usage' | 'network' | 'inputs'> {
  resource_usage: ResourceUsage | null;
  network: JobNetwork | null;
  inputs: JobInputs | null;
  lease_expires_at: number | null;
  idempotency_key: string | null;
  /** The job's hooks go to the server's WORKCELL_CALLBACK_URL (it had one, and the job gave none). */
  callback_default: boolean;
}

/** The columns update() may set (JobProgress); anything else is never put into SQL. */
const progressColumns = new Set<string>(['runtime_used', 'isolation', 'model_used', 'steps', 'input_tokens', 'output_tokens']);

export class PostgresJobStore implements JobStore {
  readonly #pool: Pool;

  constructor(pool: Pool) {
    this.#pool = pool;
  }

  /**
   * Inserts a pending job, or returns the existing one when the idempotency key was used before. Two requests with
   * one key at once: the unique index makes the second insert wait for the first and then do nothing, and it returns
   * the first's job.
   */
  async create(input: NewJob, now = new Date()): Promise<{ job: Job; created: boolean }> {
    const key = input.idempotencyKey === undefined ? null : scopedKey(input.idempotencyKey, input.owner ?? null);
    return transaction(this.#pool, async (client) => {
      const inserted = await client.query(
        `INSERT INTO jobs (id, status, task, model, runtime, limits, metadata, idempotency_key, created_at, owner, network, context_window, inputs)
         VALUES ($1, 'pending', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (idempotency_key) DO NOTHING`,
        [
          input.id,
          input.task,
          input.model ?? null,
          input.runtime,
          JSON.stringify(input.limits),
          JSON.stringify(input.metadata ?? {}),
          key,
          now.toISOString(),
          input.owner ?? null,
          input.network === undefined || input.network.allow.length === 0 ? null : JSON.stringify(input.network),
          input.contextWindow ?? null,
          input.inputs === undefined || Object.keys(input.inputs).length === 0 ? null : JSON.stringify(input.inputs),
        ],
      );
      if (inserted.rowCount === 0) {
        const { rows } = await client.query<JobRow>('SELECT * FROM jobs WHERE idempotency_key = $1', [key]);
        return { job: toJob(rows[0]!), created: false };
      }
      // Set apart from the insert: a hook set on a job is told its status at once (the webhook_hook_set trigger).
      if (input.callbackUrl !== undefined || input.callbackDefault === true || input.forkedFrom !== undefined) {
        await client.query('UPDATE jobs SET callback_url = $1, callback_default = $2, forked_from = $3 WHERE id = $4', [
          input.callbackUrl ?? null,
          input.callbackDefault === true,
          input.forkedFrom ?? null,
          input.id,
        ]);
      }
      const { rows } = await client.query<JobRow>('SELECT * FROM jobs WHERE id = $1', [input.id]);
      return { job: toJob(rows[0]!), created: true };
    });
  }

  /** Idempotency keys are per owner: two API keys may use the same one without seeing each other's jobs. */
  async findByIdempotencyKey(key: string, owner: string | null): Promise<Job | undefined> {
    return this.#one('SELECT * FROM jobs WHERE idempotency_key = $1', [scopedKey(key, owner)]);
  }

  async get(id: string): Promise<Job | undefined> {
    return this.#one('SELECT * FROM jobs WHERE id = $1', [id]);
  }

  /** Newest first; `cursor` is the last id of the previous page; `owner` (when given) only that key's jobs. */
  async list(options: { status?: JobStatus | undefined; limit: number; cursor?: string | undefined; owner?: string | undefined }): Promise<{ jobs: Job[]; nextCursor: string | null }> {
    const where: string[] = [];
    const params: unknown[] = [];
    const condition = (sql: string, value: unknown) => {
      params.push(value);
      where.push(sql.replace('?', `$${params.length}`));
    };
    if (options.owner !== undefined) condition('owner = ?', options.owner);
    if (options.status) condition('status = ?', options.status);
    if (options.cursor) condition('id < ?', options.cursor);
    params.push(options.limit + 1);
    const sql = `SELECT * FROM jobs ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY id DESC LIMIT $${params.length}`;
    const rows = await this.#all(sql, params);
    const jobs = rows.slice(0, options.limit);
    return { jobs, nextCursor: rows.length > options.limit ? jobs.at(-1)!.id : null };
  }

  /**
   * Atomically takes the oldest pending job for `workerId`, marking it running with a lease. SKIP LOCKED: claimers
   * on other connections pass over the row one of them is taking instead of waiting for it, and the row is checked
   * again once locked, so a job another worker took a moment ago is never taken twice.
   */
  async claim(workerId: string, leaseMs: number, now = Date.now()): Promise<Job | undefined> {
    return this.#one(
      `UPDATE jobs SET status = 'running', locked_by = $1, lease_expires_at = $2, attempts = attempts + 1,
         started_at = COALESCE(started_at, $3)
       WHERE id = (SELECT id FROM jobs WHERE status = 'pending' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
       RETURNING *`,
      [workerId, now + leaseMs, new Date(now).toISOString()],
    );
  }

  /** Extends the lease; returns whether the worker still holds the job and whether a cancel was requested. */
  async heartbeat(id: string, workerId: string, leaseMs: number, now = Date.now()): Promise<{ held: boolean; cancelRequested: boolean }> {
    const { rows } = await this.#pool.query<{ cancel_requested: boolean }>(
      `UPDATE jobs SET lease_expires_at = $1 WHERE id = $2 AND locked_by = $3 AND status = 'running' RETURNING cancel_requested`,
      [now + leaseMs, id, workerId],
    );
    return { held: rows.length === 1, cancelRequested: rows[0]?.cancel_requested === true };
  }

  /** Records what the job actually runs on and its progress. */
  async update(id: string, fields: JobProgress): Promise<void> {
    const entries = Object.entries(fields).filter(([column]) => progressColumns.has(column));
    if (entries.length === 0) return;
    const assignments = entries.map(([column], index) => `${column} = $${index + 2}`);
    await this.#pool.query(`UPDATE jobs SET ${assignments.join(', ')} WHERE id = $1`, [id, ...entries.map(([, value]) => value as unknown)]);
  }

  /** Records what the job's sandbox used (CPU time, peak memory), over what was recorded before. */
  async recordResourceUsage(id: string, usage: ResourceUsage): Promise<void> {
    await this.#pool.query(`UPDATE jobs SET resource_usage = COALESCE(resource_usage, '{}'::jsonb) || $1::jsonb WHERE id = $2`, [JSON.stringify(usage), id]);
  }

  /** Adds a cap the job ran into to its resource usage (once each). */
  async recordLimitReached(id: string, limit: HostFileLimit): Promise<void> {
    await this.#pool.query(
      `UPDATE jobs SET resource_usage = jsonb_set(COALESCE(resource_usage, '{}'::jsonb), '{limits_reached}',
         COALESCE(resource_usage -> 'limits_reached', '[]'::jsonb) || jsonb_build_array($1::text))
       WHERE id = $2 AND NOT COALESCE(resource_usage -> 'limits_reached' @> jsonb_build_array($1::text), false)`,
      [limit, id],
    );
  }

  /** Ends a job the worker holds (or any unclaimed job when workerId is null). No-op if it already ended. */
  async finish(id: string, workerId: string | null, outcome: { status: 'complete' | 'error' | 'cancelled'; error?: string | undefined; summary?: string | undefined }, now = new Date()): Promise<boolean> {
    const result = await this.#pool.query(
      `UPDATE jobs SET status = $1, error = $2, summary = $3, finished_at = $4, locked_by = NULL, lease_expires_at = NULL
       WHERE id = $5 AND status IN ('pending', 'running') AND (locked_by IS NOT DISTINCT FROM $6::text OR $6::text IS NULL)`,
      [outcome.status, outcome.error ?? null, outcome.summary ?? null, now.toISOString(), id, workerId],
    );
    return result.rowCount === 1;
  }

  /** A pending job is cancelled at once; a running one is flagged for its worker, which stops it at its next heartbeat. */
  async requestCancel(id: string, now = new Date()): Promise<CancelResult> {
    return transaction(this.#pool, async (client): Promise<CancelResult> => {
      const { rows } = await client.query<{ status: JobStatus }>('SELECT status FROM jobs WHERE id = $1 FOR UPDATE', [id]);
      const status = rows[0]?.status;
      if (status === undefined || finishedStatuses.includes(status)) return 'already-finished';
      if (status === 'pending') {
        await client.query(`UPDATE jobs SET status = 'cancelled', error = 'cancelled before it started', finished_at = $1 WHERE id = $2`, [now.toISOString(), id]);
        return 'cancelled';
      }
      await client.query('UPDATE jobs SET cancel_requested = true WHERE id = $1', [id]);
      return 'requested';
    });
  }

  /**
   * Puts a running job whose worker died back in the queue (it resumes from its context store); only if
   * `lockedBy` still holds it, so that of several workers sweeping at once exactly one requeues it.
   */
  async requeue(id: string, lockedBy: string | null): Promise<boolean> {
    const result = await this.#pool.query(
      `UPDATE jobs SET status = 'pending', locked_by = NULL, lease_expires_at = NULL WHERE id = $1 AND status = 'running' AND locked_by IS NOT DISTINCT FROM $2::text`,
      [id, lockedBy],
    );
    return result.rowCount === 1;
  }

  /** Running jobs whose worker stopped renewing its lease. */
  async expiredLeases(now = Date.now()): Promise<Job[]> {
    return this.#all(`SELECT * FROM jobs WHERE status = 'running' AND lease_expires_at < $1 ORDER BY id`, [now]);
  }

  /**
   * Continues a finished job with another run: back to pending, `run` one more, a fresh attempt budget, and the
   * previous run's times and outcome cleared from the row (job_runs keeps them). `start` is where the run begins in
   * the job's event log and the message that starts it. Undefined when the job is not finished (gone, or reopened
   * by another request first: of two at once exactly one reopens it).
   */
  async reopen(id: string, start: { message: string; messageSeq: number; startSeq: number }, now = new Date()): Promise<Job | undefined> {
    return transaction(this.#pool, async (client) => {
      const { rows } = await client.query<JobRow>(
        `UPDATE jobs SET status = 'pending', run = run + 1, started_at = NULL, finished_at = NULL, error = NULL, summary = NULL,
           attempts = 0, cancel_requested = false, locked_by = NULL, lease_expires_at = NULL
         WHERE id = $1 AND status IN ('complete', 'error', 'cancelled')
         RETURNING *`,
        [id],
      );
      const row = rows[0];
      if (row === undefined) return undefined;
      await client.query(
        `INSERT INTO job_runs (job_id, run, status, message, message_seq, start_seq, steps_before, created_at) VALUES ($1, $2, 'pending', $3, $4, $5, $6, $7)`,
        [id, row.run, start.message, start.messageSeq, start.startSeq, row.steps, now.toISOString()],
      );
      return toJob(row);
    });
  }

  /** The job's runs, first to last. */
  async runs(id: string): Promise<JobRun[]> {
    return (await this.#pool.query<JobRun>('SELECT * FROM job_runs WHERE job_id = $1 ORDER BY run', [id])).rows;
  }

  /** One run of the job. */
  async getRun(id: string, run: number): Promise<JobRun | undefined> {
    return (await this.#pool.query<JobRun>('SELECT * FROM job_runs WHERE job_id = $1 AND run = $2', [id, run])).rows[0];
  }

  /** Deletes a finished job's row (and its runs); false when it is not there or not finished (never a live job). */
  async deleteFinished(id: string): Promise<boolean> {
    return (await this.#pool.query(`DELETE FROM jobs WHERE id = $1 AND status IN ('complete', 'error', 'cancelled')`, [id])).rowCount === 1;
  }

  /** Finished jobs that ended before `cutoff`, oldest first. */
  async finishedBefore(cutoff: Date, limit: number): Promise<Job[]> {
    return this.#all(`SELECT * FROM jobs WHERE status IN ('complete', 'error', 'cancelled') AND finished_at < $1 ORDER BY finished_at LIMIT $2`, [cutoff.toISOString(), limit]);
  }

  async #one(sql: string, params: unknown[]): Promise<Job | undefined> {
    const row = (await this.#pool.query<JobRow>(sql, params)).rows[0];
    return row && toJob(row);
  }

  async #all(sql: string, params: unknown[]): Promise<Job[]> {
    return (await this.#pool.query<JobRow>(sql, params)).rows.map(toJob);
  }
}

const scopedKey = (key: string, owner: string | null) => `${owner ?? '-'}:${key}`;

/** The row as the SQLite store returns it: the same fields, in the same order, with the same empty values. */
function toJob(row: JobRow): Job {
  const { lease_expires_at: _lease, idempotency_key: _key, callback_default: _hookDefault, ...rest } = row;
  return {
    ...rest,
    network: row.network ?? { allow: [] },
    inputs: row.inputs ?? {},
  };
}
