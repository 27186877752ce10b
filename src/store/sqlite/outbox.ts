// The webhook outbox in workcell.db: its rows are written by the triggers of the jobs table (schema.ts) in the
// transaction of each status change; claims are single statements with a lease, as jobs' are.
import type Database from 'better-sqlite3';
import type { OutboxRow, WebhookOutbox } from '../types.ts';

export class SqliteWebhookOutbox implements WebhookOutbox {
  readonly #db: Database.Database;

  constructor(db: Database.Database) {
    this.#db = db;
  }

  /**
   * Takes up to `limit` deliveries that are due, each the oldest pending one of its job, for `workerId` until
   * `leaseUntil` (Unix ms).
   */
  async claim(workerId: string, limit: number, now: number, leaseUntil: number): Promise<OutboxRow[]> {
    return this.#db
      .prepare(
        `UPDATE webhook_outbox SET locked_by = @workerId, lease_expires_at = @leaseUntil
         WHERE id IN (
           SELECT o.id FROM webhook_outbox o
           WHERE o.state = 'pending' AND o.next_attempt_at <= @now AND (o.locked_by IS NULL OR o.lease_expires_at < @now)
             AND NOT EXISTS (SELECT 1 FROM webhook_outbox p WHERE p.state = 'pending' AND p.job_id = o.job_id AND p.id < o.id)
           ORDER BY o.id LIMIT @limit)
         RETURNING *`,
      )
      .all({ workerId, leaseUntil, now, limit }) as OutboxRow[];
  }

  async delivered(id: number, workerId: string, now: Date): Promise<void> {
    this.#db
      .prepare(`UPDATE webhook_outbox SET state = 'delivered', attempts = attempts + 1, last_error = NULL, done_at = ?, locked_by = NULL, lease_expires_at = NULL WHERE id = ? AND locked_by = ?`)
      .run(now.toISOString(), id, workerId);
  }

  /** A failed attempt: tried again at `nextAttemptAt` (Unix ms), or given up (`nextAttemptAt` undefined). */
  async attemptFailed(id: number, workerId: string, error: string, nextAttemptAt: number | undefined, now: Date): Promise<void> {
    if (nextAttemptAt === undefined) {
      this.#db
        .prepare(`UPDATE webhook_outbox SET state = 'failed', attempts = attempts + 1, last_error = ?, done_at = ?, locked_by = NULL, lease_expires_at = NULL WHERE id = ? AND locked_by = ?`)
        .run(error, now.toISOString(), id, workerId);
    } else {
      this.#db
        .prepare(`UPDATE webhook_outbox SET attempts = attempts + 1, last_error = ?, next_attempt_at = ?, locked_by = NULL, lease_expires_at = NULL WHERE id = ? AND locked_by = ?`)
        .run(error, nextAttemptAt, id, workerId);
    }
  }

  /** Gives back a claim without counting an attempt (the server is stopping). */
  async release(id: number, workerId: string): Promise<void> {
    this.#db.prepare('UPDATE webhook_outbox SET locked_by = NULL, lease_expires_at = NULL WHERE id = ? AND locked_by = ?').run(id, workerId);
  }

  /** When the next pending delivery is due (Unix ms), or undefined when none is pending. */
  async nextDue(): Promise<number | undefined> {
    const row = this.#db.prepare(`SELECT min(max(next_attempt_at, COALESCE(lease_expires_at, 0))) AS due FROM webhook_outbox WHERE state = 'pending'`).get() as { due: number | null };
    return row.due ?? undefined;
  }

  /** A job's deliveries, oldest first. */
  async forJob(jobId: string): Promise<OutboxRow[]> {
    return this.#db.prepare('SELECT * FROM webhook_outbox WHERE job_id = ? ORDER BY id').all(jobId) as OutboxRow[];
  }

  /** Removes deliveries that ended (delivered or given up) before `cutoff`. */
  async prune(cutoff: Date): Promise<number> {
    return this.#db.prepare(`DELETE FROM webhook_outbox WHERE state != 'pending' AND done_at < ?`).run(cutoff.toISOString()).changes;
  }
}
