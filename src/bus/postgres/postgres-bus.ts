// The event bus across processes and hosts: Postgres LISTEN/NOTIFY on one channel. Any API replica can then stream
// any job's events, whichever worker appends them (the events themselves are read from the job's log on the shared
// job files; a notice only says there is more). A notice is delivered at once to this process's own subscribers and
// sent to the others through NOTIFY (each process skips its own). NOTIFY is not durable: a notice sent while this
// process's listening connection was down is lost, so after reconnecting every subscribed job gets a `resync` notice,
// on which followers read their logs from where they left off, as on any notice.
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import pg from 'pg';
import type { EventBus, EventNotice } from '../types.ts';

const channel = 'workcell_events';
const maxBackoffMs = 5000;

interface Payload {
  /** The process that published it. */
  i: string;
  j: string;
  s: number;
  t: string;
}

export class PostgresEventBus implements EventBus {
  readonly #url: string;
  readonly #onError: (error: Error) => void;
  readonly #instance = randomBytes(8).toString('hex');
  readonly #emitter = new EventEmitter().setMaxListeners(0);
  readonly #pool: pg.Pool;
  #listener: pg.Client | undefined;
  #closed = false;
  #retry: NodeJS.Timeout | undefined;
  #backoffMs = 100;

  /** Connects and listens; resolves once notices from other processes arrive. */
  static async open(url: string, options: { onError?: (error: Error) => void } = {}): Promise<PostgresEventBus> {
    const bus = new PostgresEventBus(url, options.onError ?? (() => {}));
    try {
      await bus.#listen();
    } catch (error) {
      await bus.close();
      throw error;
    }
    return bus;
  }

  private constructor(url: string, onError: (error: Error) => void) {
    this.#url = url;
    this.#onError = onError;
    // One connection: notices leave in the order they were published.
    this.#pool = new pg.Pool({ connectionString: url, max: 1, connectionTimeoutMillis: 30_000 });
    this.#pool.on('error', () => undefined); // an idle connection the server closed: dropped, the next query opens another
  }

  publish(notice: EventNotice): void {
    this.#emitter.emit(notice.job_id, notice);
    if (this.#closed) return;
    const payload: Payload = { i: this.#instance, j: notice.job_id, s: notice.seq, t: notice.type };
    this.#pool.query('SELECT pg_notify($1, $2)', [channel, JSON.stringify(payload)]).catch((error: unknown) => this.#onError(asError(error)));
  }

  subscribe(jobId: string, listener: (notice: EventNotice) => void): () => void {
    this.#emitter.on(jobId, listener);
    return () => this.#emitter.off(jobId, listener);
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#retry);
    this.#emitter.removeAllListeners();
    const listener = this.#listener;
    this.#listener = undefined;
    await listener?.end().catch(() => undefined);
    await this.#pool.end().catch(() => undefined);
  }

  async #listen(): Promise<void> {
    const client = new pg.Client({ connectionString: this.#url, keepAlive: true, connectionTimeoutMillis: 30_000 });
    const lost = (error?: Error) => {
      if (this.#listener !== client) return;
      this.#listener = undefined;
      client.end().catch(() => undefined);
      if (error !== undefined) this.#onError(error);
      this.#reconnectLater();
    };
    client.on('error', lost);
    client.on('end', () => lost());
    client.on('notification', (message) => {
      if (message.channel !== channel || message.payload === undefined) return;
      let payload: Payload;
      try {
        payload = JSON.parse(message.payload) as Payload;
      } catch {
        return; // not ours
      }
      if (payload.i === this.#instance || typeof payload.j !== 'string') return;
      this.#emitter.emit(payload.j, { job_id: payload.j, seq: payload.s, type: payload.t } satisfies EventNotice);
    });
    this.#listener = client;
    try {
      await client.connect();
      await client.query(`LISTEN ${channel}`);
    } catch (error) {
      if (this.#listener === client) this.#listener = undefined;
      await client.end().catch(() => undefined);
      throw error;
    }
    if (this.#closed) await client.end().catch(() => undefined);
  }

  #reconnectLater(): void {
    if (this.#closed || this.#retry !== undefined) return;
    this.#retry = setTimeout(() => {
      this.#retry = undefined;
      this.#listen().then(
        () => {
          this.#backoffMs = 100;
          // What was published while this process was not listening is lost: every follower reads its log again.
          for (const jobId of this.#emitter.eventNames()) {
            if (typeof jobId === 'string') this.#emitter.emit(jobId, { job_id: jobId, seq: 0, type: 'resync' } satisfies EventNotice);
          }
        },
        (error: unknown) => {
          this.#onError(asError(error));
          this.#backoffMs = Math.min(this.#backoffMs * 2, maxBackoffMs);
          this.#reconnectLater();
        },
      );
    }, this.#backoffMs);
  }
}

function asError(error: unknown): Error {
  return error instanceof Error ? error : new Error(String(error));
}
