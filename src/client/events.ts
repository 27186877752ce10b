// A job's events as an async iterator over the server's Server-Sent Events (GET /jobs/:id/events), parsed with
// eventsource-parser. A dropped connection (a proxy that times out, a server restart, a network blip) is reconnected
// with Last-Event-ID = the last event yielded, so the consumer sees every event once, in order; it stops when the
// server ends the stream because the job has ended (or, with follow: false, once the log is sent). It never
// reconnects on an error answer (4xx): those are thrown.
import { EventSourceParserStream } from 'eventsource-parser/stream';
import { WorkcellApiError, WorkcellClientError } from './errors.ts';
import type { components } from './schema.d.ts';

type JobEvent = components['schemas']['JobEvent'];

export interface EventsOptions {
  /** Only events after this id (an event's `seq`): resume where you stopped. */
  after?: number;
  /** Keep following until the job ends (default), or stop once the log so far is sent. */
  follow?: boolean;
  signal?: AbortSignal;
  /** Reconnections in a row that may fail before the iterator gives up (default 10). */
  reconnectAttempts?: number;
  /** The wait before the first reconnection, doubled for each failure in a row up to 10 s (default 500 ms). */
  reconnectDelayMs?: number;
}

export interface EventSource {
  jobId: string;
  options: EventsOptions;
  /** Opens the stream after `lastEventId` (0: from the start). */
  connect(lastEventId: number, follow: boolean, signal: AbortSignal): Promise<ReadableStream<Uint8Array>>;
  /** Has the job ended (its current status is final)? */
  isFinal(signal: AbortSignal | undefined): Promise<boolean>;
}

const maxReconnectDelayMs = 10_000;

export async function* followEvents(source: EventSource): AsyncGenerator<JobEvent, void, undefined> {
  const { options } = source;
  const follow = options.follow ?? true;
  const attempts = options.reconnectAttempts ?? 10;
  const baseDelayMs = options.reconnectDelayMs ?? 500;
  let cursor = options.after ?? 0;
  let failures = 0;
  for (;;) {
    options.signal?.throwIfAborted();
    const connection = new AbortController();
    const signal = options.signal === undefined ? connection.signal : AbortSignal.any([options.signal, connection.signal]);
    let ended = false;
    let received = 0;
    let failure: unknown;
    try {
      const body = await source.connect(cursor, follow, signal);
      const reader = body.pipeThrough(new TextDecoderStream()).pipeThrough(new EventSourceParserStream()).getReader();
      try {
        for (;;) {
          const { done, value } = await reader.read();
          if (done) {
            ended = true;
            break;
          }
          const event = parseEvent(value.data, source.jobId);
          // The server never repeats an event after Last-Event-ID; this holds even if one did.
          if (event.seq <= cursor) continue;
          cursor = event.seq;
          received++;
          failures = 0;
          yield event;
        }
      } finally {
        // The consumer stopped early, or the stream failed: close the connection either way.
        connection.abort();
        await reader.cancel().catch(() => undefined);
      }
    } catch (error) {
      if (options.signal?.aborted === true) throw options.signal.reason;
      // An error answer is the server's word (no such job, a revoked key): reconnecting cannot change it.
      if (error instanceof WorkcellApiError && error.status < 500) throw error;
      if (error instanceof WorkcellClientError && error.code === 'invalid_response') throw error;
      failure = error;
    }
    if (ended) {
      if (!follow) return;
      // The server ends the stream at the end of the job's run; it also ends it when it shuts down, or when a message
      // has continued the job: follow on unless the job has ended.
      if (await source.isFinal(options.signal)) return;
      if (received > 0) continue;
      failure = new WorkcellClientError('unreachable', `the server ended the event stream of job ${source.jobId} without sending anything`);
    }
    if (++failures > attempts) {
      const reason = failure instanceof Error ? failure.message : String(failure);
      throw new WorkcellClientError('unreachable', `lost the event stream of job ${source.jobId} and ${attempts} reconnections failed (${reason}): is the server up?`, { cause: failure });
    }
    await delay(Math.min(baseDelayMs * 2 ** (failures - 1), maxReconnectDelayMs), options.signal);
  }
}

function parseEvent(data: string, jobId: string): JobEvent {
  let event: unknown;
  try {
    event = JSON.parse(data);
  } catch {
    throw new WorkcellClientError('invalid_response', `an event of job ${jobId} is not JSON: is the base URL a workcell server?`);
  }
  if (event === null || typeof event !== 'object' || typeof (event as { seq?: unknown }).seq !== 'number') {
    throw new WorkcellClientError('invalid_response', `an event of job ${jobId} has no seq: is the base URL a workcell server?`);
  }
  return event as JobEvent;
}

function delay(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted === true) return reject(signal.reason as Error);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason as Error);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
