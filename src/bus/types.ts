// The event bus: how whoever follows a job (an SSE stream, the watchdog) learns at once that the job's event log
// has a new event. A notice is a wake-up, not the event: followers read the events themselves from the job's log,
// from where they left off, so a notice lost or repeated costs nothing but a moment. One implementation per folder:
// `local/` (one process), `postgres/` (LISTEN/NOTIFY: every process on every host that shares the database).

export interface EventNotice {
  job_id: string;
  /** The new event's seq in the job's log. */
  seq: number;
  type: string;
}

export interface EventBus {
  /** Announces an event that has been written to its job's log. Never throws. */
  publish(notice: EventNotice): void;
  /** Calls `listener` with each notice of the job from now on; returns the function that unsubscribes. */
  subscribe(jobId: string, listener: (notice: EventNotice) => void): () => void;
  close(): Promise<void>;
}

/**
 * The topic (in place of a job id; no job id looks like it) on which the queue's changes are announced to workers:
 * `pending` (a job can be claimed) and `cancel` (a running job's cancel was requested).
 */
export const queueTopic = 'queue';
export type QueueNotice = 'pending' | 'cancel';
