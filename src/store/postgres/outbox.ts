// The webhook outbox in the Postgres store: its rows are written by the triggers of the jobs table (schema.ts) in
// the transaction of each status change; claims are single statements with a lease, as jobs' are, and skip rows
// another sender is claiming at that moment (FOR UPDATE SKIP LOCKED) rather than wait for them.
import type { Pool } from 'pg';
import type { OutboxRow, WebhookOutbox } from '../types.ts';

export class PostgresWebhookOutbox implements WebhookOutbox {
  readonly #pool: Pool;

  constructor(pool: Pool) {
    this.#pool = pool;
  }

  /**
   * Takes up to `limit` deliveries that are due, each the oldest pending one of its job, for `workerId` until
   * `leaseUntil` (Unix ms). A row another sender holds locked still counts as pending for its job's later rows, so
   * those wait: a receiver hears a job's changes in order.
   */
  async claim(workerId: string, limit: number, now: number, leaseUntil: number): Promise<OutboxRow[]> {
    const { rows } = await this.#pool.query<OutboxRow>(
      `WITH claimed AS (
         UPDATE webhook_outbox SET locked_by = $1, lease_expires_at = $2
         WHERE id IN (
           SELECT o.id FROM webhook_outbox o
           WHERE o.state = 'pending' AND o.next_attempt_at <= $3 AND (o.locked_by IS NULL OR o.lease_expires_at < $3)
             AND NOT EXISTS (SELECT 1 FROM webhook_outbox p WHERE p.state = 'pending' AND p.job_id = o.job_id AND p.id < o.id)
           ORDER BY o.id LIMIT $4
           FOR UPDATE SKIP LOCKED)
         RETURNING *)
       SELECT * FROM claimed ORDER BY id`,
      [workerId, leaseUntil, now, limit],
    );
    return rows;
  }

  async delivered(id: number, workerId: string, now: Date): Promise<void> {
    await this.#pool.query(
      `UPDATE webhook_outbox SET state = 'delivered', attempts = attempts + 1, last_error = NULL, done_at = $1, locked_by = NULL, lease_expires_at = NULL WHERE id = $2 AND locked_by = $3`,
      [now.toISOString(), id, workerId],
    );
  }

  /** A failed attempt: tried again at `nextAttemptAt` (Unix ms), or given up (`nextAttemptAt` undefined). */
  async attemptFailed(id: number, workerId: string, error: string, nextAttemptAt: number | undefined, now: Date): Promise<void> {
    if (nextAttemptAt === undefined) {
      await this.#pool.query(
        `UPDATE webhook_outbox SET state = 'failed', attempts = attempts + 1, last_error = $1, done_at = $2, locked_by = NULL, lease_expires_at = NULL WHERE id = $3 AND locked_by = $4`,
        [error, now.toISOString(), id, workerId],
      );
    } else {
      await this.#pool.query(
        `UPDATE webhook_outbox SET attempts = attempts + 1, last_error = $1, next_attempt_at = $2, locked_by = NULL, lease_expires_at = NULL WHERE id = $3 AND locked_by = $4`,
        [error, nextAttemptAt, id, workerId],
      );
    }
  }

  /** Gives back a claim without counting an attempt (the server is stopping). */
  async release(id: number, workerId: string): Promise<void> {
    await this.#pool.query('UPDATE webhook_outbox SET locked_by = NULL, lease_expires_at = NULL WHERE id = $1 AND locked_by = $2', [id, workerId]);
  }

  /** When the next pending delivery is due (Unix ms), or undefined when none is pending. */
  async nextDue(): Promise<number | undefined> {
    const { rows } = await this.#pool.query<{ due: number | null }>(
      `SELECT min(GREATEST(next_attempt_at, COALESCE(lease_expires_at, 0))) AS due FROM webhook_outbox WHERE state = 'pending'`,
    );
    return rows[0]?.due ?? undefined;
  }

  /** A job's deliveries, oldest first. */
  async forJob(jobId: string): Promise<OutboxRow[]> {
    return (await this.#pool.query<OutboxRow>('SELECT * FROM webhook_outbox WHERE job_id = $1 ORDER BY id', [jobId])).rows;
  }

  /** Removes deliveries that ended (delivered or given up) before `cutoff`. */
  async prune(cutoff: Date): Promise<number> {
    return (await this.#pool.query(`DELETE FROM webhook_outbox WHERE state <> 'pending' AND done_at < $1`, [cutoff.toISOString()])).rowCount ?? 0;
  }
}
