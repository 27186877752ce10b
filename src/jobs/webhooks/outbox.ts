// The webhook outbox: one row per status change of a job with a hook, written by the job store's triggers in the same
// transaction as the change (jobs/job-store.ts), so a crash or a restart loses none. Deliveries are claimed in SQL
// with a lease, as jobs are, so several servers on one store never send the same attempt twice at once and a dead
// server's claims expire. Order per job: a row is claimed only when no earlier row of its job is still pending, so a
// receiver hears a job's changes in the order they happened, each retried until it is delivered or given up.
// This module only reads and writes rows; webhook-sender.ts does the HTTP.
import type Database from 'better-sqlite3';
import type { JobStatus } from '../job-store.ts';

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

export class WebhookOutbox {
  readonly #db: Database.Database;

  constructor(db: Database.Database) {
    this.#db = db;
  }

  /**
   * Takes up to `limit` deliveries that are due, each the oldest pending one of its job, for `workerId` until
   * `leaseUntil` (Unix ms).
   */
  claim(workerId: string, limit: number, now: number, leaseUntil: number): OutboxRow[] {
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

  delivered(id: number, workerId: string, now: Date): void {
    this.#db
      .prepare(`UPDATE webhook_outbox SET state = 'delivered', attempts = attempts + 1, last_error = NULL, done_at = ?, locked_by = NULL, lease_expires_at = NULL WHERE id = ? AND locked_by = ?`)
      .run(now.toISOString(), id, workerId);
  }

  /** A failed attempt: tried again at `nextAttemptAt` (Unix ms), or given up (`nextAttemptAt` undefined). */
  attemptFailed(id: number, workerId: string, error: string, nextAttemptAt: number | undefined, now: Date): void {
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
  release(id: number, workerId: string): void {
    this.#db.prepare('UPDATE webhook_outbox SET locked_by = NULL, lease_expires_at = NULL WHERE id = ? AND locked_by = ?').run(id, workerId);
  }

  /** When the next pending delivery is due (Unix ms), or undefined when none is pending. */
  nextDue(): number | undefined {
    const row = this.#db.prepare(`SELECT min(max(next_attempt_at, COALESCE(lease_expires_at, 0))) AS due FROM webhook_outbox WHERE state = 'pending'`).get() as { due: number | null };
    return row.due ?? undefined;
  }

  /** A job's deliveries, oldest first. */
  forJob(jobId: string): OutboxRow[] {
    return this.#db.prepare('SELECT * FROM webhook_outbox WHERE job_id = ? ORDER BY id').all(jobId) as OutboxRow[];
  }

  /** Removes deliveries that ended (delivered or given up) before `cutoff`. */
  prune(cutoff: Date): number {
    return this.#db.prepare(`DELETE FROM webhook_outbox WHERE state != 'pending' AND done_at < ?`).run(cutoff.toISOString()).changes;
  }
}
