// Runs: a message to a finished job continues it (POST /jobs/:id/messages on a complete, error or cancelled job). The
// job keeps its directory: the workspace as the last run left it (copied back off its disk when that run ended; the
// next run puts it on a disk of its own again), its context store (the agent's whole history, from which every
// prompt is built: the new run's first prompt holds the earlier runs and the new message, verbatim) and its event
// log, which goes on with the new run's events. The store's row goes back to pending with `run` one more and a new
// attempt budget; wall time and max_steps count per run. The previous run's output.zip is removed: the run that
// follows makes a new one when it ends (download it first to keep it).
// Reopening is sync from the first read to the last write, so in one process two messages at once reopen the job
// once (the second is a message to the pending run); across processes the store's conditional update decides.
import { rmSync } from 'node:fs';
import type { EventLog } from './event-log.ts';
import type { JobPaths } from './job-paths.ts';
import { finishedStatuses, type Job, type JobStore } from '../store/types.ts';

export interface Reopened {
  /** The job as reopened; undefined when another process reopened it first (the message then goes to that run). */
  job: Job | undefined;
  /** The user-message event that holds the message (its SSE id). */
  messageSeq: number;
}

/**
 * Reopens the finished `job` with `text` as its next run's message, appending to its open `events`. The events come
 * first, then the row: a worker that claims the reopened job finds its message already recorded.
 */
export async function reopenJob(store: JobStore, paths: JobPaths, events: EventLog, job: Job, text: string): Promise<Reopened> {
  if (!finishedStatuses.includes(job.status)) throw new Error(`job ${job.id} is ${job.status}, not finished`);
  const run = job.run + 1;
  // A run that failed before its agent started never recorded the task: the history starts with it all the same.
  const hasTask = events.database.prepare(`SELECT 1 FROM events WHERE type = 'user-message' AND json_extract(data, '$.source') = 'task' LIMIT 1`).get() !== undefined;
  if (!hasTask) events.append('user-message', 0, { text: job.task, source: 'task' });
  const start = events.append('job-status', job.steps, { status: 'pending', reopened: true, run, previous_status: job.status }).seq;
  const messageSeq = events.append('user-message', job.steps, { text, source: 'client', run }).seq;
  const reopened = await store.reopen(job.id, { message: text, messageSeq, startSeq: start });
  // The ended run's zip goes: the new run zips the workspace again when it ends.
  if (reopened !== undefined) rmSync(paths.outputZip, { force: true });
  return { job: reopened, messageSeq };
}
