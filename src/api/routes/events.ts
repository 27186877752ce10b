// GET /jobs/:id/events: the job's steps as Server-Sent Events. Replays from the job's event log (after
// Last-Event-ID or ?after=), then follows live until the job ends. `id:` is the event's seq, `event:` its type.
import type { ServerResponse } from 'node:http';
import { z } from 'zod';
import type { JobEvent } from '../../jobs/event-log.ts';
import { finishedStatuses, type Job, type JobStatus } from '../../store/types.ts';
import { invalidRequest } from '../../errors.ts';
import type { ApiContext, ZodApp } from '../server.ts';
import { problemResponses, response } from '../openapi.ts';
import { eventsQuery, jobEvent, jobIdParams } from '../schemas.ts';
import { requireJob } from './jobs.ts';

const keepAliveMs = 15_000;
/** Catches events written by workers in other processes, which the in-process bus does not see. */
const pollMs = 1000;
/** How long after the row's end its final event may still be on its way from the worker. */
const endGraceMs = 5000;

function write(raw: ServerResponse, event: JobEvent): void {
  raw.write(`id: ${event.seq}\nevent: ${event.type}\ndata: ${JSON.stringify(event)}\n\n`);
}

const isEnd = (event: JobEvent) => event.type === 'job-status' && finishedStatuses.includes(event.data.status as JobStatus);

export function registerEventRoutes(app: ZodApp, context: ApiContext): void {
  app.get(
    '/jobs/:id/events',
    {
      schema: {
        operationId: 'streamEvents',
        tags: ['events'],
        summary: "Follow a job's steps (Server-Sent Events)",
        description:
          'Replays the job\'s event log from the start (or after `Last-Event-ID` / `?after=`), then follows it live. Each event: `id` (its seq: reconnect with ' +
          'Last-Event-ID and nothing is lost or repeated), `event` (its type), `data` (the JobEvent as JSON). With follow (the default) the stream ends after the ' +
          "final job-status (complete, error, cancelled) of the job's latest run (a job that a message continued goes on with the next run's events; " +
          'a reconnect whose Last-Event-ID is that final event ends at once); with follow=false, once the log is sent. Comment lines keep the connection alive.',
        params: jobIdParams,
        querystring: eventsQuery,
        headerParams: z.object({ 'last-event-id': z.string().optional().describe('Only events after this id: the id of the last event received (reconnecting)') }),
        response: {
          200: response('text/event-stream: one SSE event per JobEvent, whose `data` is the JobEvent as JSON', jobEvent, { mediaType: 'text/event-stream' }),
          ...problemResponses({ 400: 'Last-Event-ID or a query parameter is invalid', 404: 'No job with this id (or not one of this key\'s)' }),
        },
      },
    },
    async (request, reply) => {
      const job = await requireJob(context, request);
      const header = request.headers['last-event-id'];
      const lastEventId = typeof header === 'string' && header !== '' ? Number(header) : undefined;
      if (lastEventId !== undefined && !(Number.isInteger(lastEventId) && lastEventId >= 0)) throw invalidRequest('Last-Event-ID must be a non-negative integer');
      let cursor = request.query.after ?? lastEventId ?? 0;
      const follow = request.query.follow === 'true';

      const log = context.jobs.openEvents(job);
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
            // The end of the latest run; a job that a message continued has the next run's events after it.
            if (isEnd(event) && log.list(event.seq, 1).length === 0) return true;
          }
          if (batch.length < 500) return false;
        }
      };

      request.raw.on('close', close);
      // A revoked key ends its streams.
      forget = context.connections.add(request.owner, close);
      unsubscribe = context.jobs.bus.subscribe(job.id, () => {
        if (drain()) close();
      });
      // A client that has read up to the end already (Last-Event-ID is the final event) gets no more to wait for.
      const atEnd = () => {
        const last = cursor > 0 ? log.list(cursor - 1, 2) : [];
        return last.length === 1 && last[0]!.seq === cursor && isEnd(last[0]!);
      };
      // The final event follows the row's final status within moments; one a crash lost is written from the row.
      // Returns whether the row's run ended a while ago (so that nothing more will come).
      const repairLostEnd = (row: Job): boolean => {
        if (!finishedStatuses.includes(row.status) || row.finished_at === null || Date.now() - Date.parse(row.finished_at) <= endGraceMs) return false;
        try {
          context.jobs.repairEnd(row);
        } catch (error) {
          request.log.warn({ err: error, jobId: row.id }, 'writing the lost final event failed');
        }
        return true;
      };
      const ended = repairLostEnd(job);
      if (drain() || !follow || atEnd() || ended) return close();
      timers.push(
        setInterval(() => {
          if (drain()) return close();
          void context.jobs.store.get(job.id).then(
            (row) => {
              if (closed || row === undefined || !repairLostEnd(row)) return;
              drain();
              close();
            },
            () => undefined, // the store is unreachable: the next poll asks again
          );
        }, pollMs),
        setInterval(() => raw.write(': keep-alive\n\n'), keepAliveMs),
      );
    },
  );
}
