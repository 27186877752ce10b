// GET /jobs/:id/events: the job's steps as Server-Sent Events. Replays from the job's event log (after
// Last-Event-ID or ?after=), then follows live until the job ends. `id:` is the event's seq, `event:` its type.
import type { ServerResponse } from 'node:http';
import { EventLog, onJobEvent, type JobEvent } from '../../jobs/event-log.ts';
import { finishedStatuses, type JobStatus } from '../../jobs/job-store.ts';
import { invalidRequest } from '../../errors.ts';
import type { ApiContext, ZodApp } from '../server.ts';
import { eventsQuery, jobIdParams, problem } from '../schemas.ts';
import { requireJob } from './jobs.ts';

const keepAliveMs = 15_000;
/** Catches events written by workers in other processes, which the in-process bus does not see. */
const pollMs = 1000;

function write(raw: ServerResponse, event: JobEvent): void {
  raw.write(`id: ${event.seq}\nevent: ${event.type}\ndata: ${JSON.stringify(event)}\n\n`);
}

const isEnd = (event: JobEvent) => event.type === 'job-status' && finishedStatuses.includes(event.data.status as JobStatus);

export function registerEventRoutes(app: ZodApp, context: ApiContext): void {
  app.get(
    '/jobs/:id/events',
    {
      schema: {
        summary: "Follow a job's steps (Server-Sent Events)",
        description: 'Each event: `id` (resume with Last-Event-ID), `event` (job-status, model-turn, tool-call, tool-result, ...), `data` (JSON). The stream ends after the final job-status.',
        params: jobIdParams,
        querystring: eventsQuery,
        response: { 400: problem, 404: problem },
      },
    },
    async (request, reply) => {
      const job = requireJob(context, request);
      const header = request.headers['last-event-id'];
      const lastEventId = typeof header === 'string' && header !== '' ? Number(header) : undefined;
      if (lastEventId !== undefined && !(Number.isInteger(lastEventId) && lastEventId >= 0)) throw invalidRequest('Last-Event-ID must be a non-negative integer');
      let cursor = request.query.after ?? lastEventId ?? 0;
      const follow = request.query.follow === 'true';

      const log = new EventLog(job.id, context.jobs.paths(job.id).contextDb);
      reply.hijack();
      const raw = reply.raw;
      raw.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache, no-transform', connection: 'keep-alive', 'x-accel-buffering': 'no' });
      raw.write(': workcell events\n\n');

      let closed = false;
      const timers: NodeJS.Timeout[] = [];
      let unsubscribe = () => {};
      let forget = () => {};
      const close = () => {
        if (closed) return;
        closed = true;
        unsubscribe();
        forget();
        for (const timer of timers) clearInterval(timer);
        log.close();
        raw.end();
      };
      /** Sends everything after the cursor; returns true once the final status has been sent. */
      const drain = (): boolean => {
        if (closed) return true;
        for (;;) {
          const batch = log.list(cursor, 500);
          for (const event of batch) {
            write(raw, event);
            cursor = event.seq;
            if (isEnd(event)) return true;
          }
          if (batch.length < 500) return false;
        }
      };

      request.raw.on('close', close);
      // A revoked key ends its streams.
      forget = context.connections.add(request.owner, close);
      unsubscribe = onJobEvent(job.id, () => {
        if (drain()) close();
      });
      if (drain() || !follow) return close();
      // The final event follows the row's final status within moments; if a crash lost it, stop waiting after a few polls.
      let endedPolls = 0;
      timers.push(
        setInterval(() => {
          if (drain()) return close();
          const status = context.jobs.store.get(job.id)?.status;
          if (status && finishedStatuses.includes(status) && ++endedPolls > 5) close();
        }, pollMs),
        setInterval(() => raw.write(': keep-alive\n\n'), keepAliveMs),
      );
    },
  );
}
