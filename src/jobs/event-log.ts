// A job's event log: every step (status change, model turn, tool call, tool result, ...) in order, persisted in the
// job's context.db and announced on the event bus (src/bus) so that followers (SSE streams, the watchdog) see it at once. The log is append-only;
// `seq` is the SSE event id, so `Last-Event-ID` resumes exactly where a client left off.
import Database from 'better-sqlite3';
import type { EventBus } from '../bus/types.ts';
import { finishedStatuses, type JobStatus } from '../store/types.ts';
import { migrate, useWal } from '../util/sqlite.ts';

export const eventTypes = [
  'job-status',
  'sandbox-ready',
  'user-message',
  'model-turn',
  'model-retry',
  'tool-call',
  'tool-result',
  'context-summary',
  'log',
] as const;
export type JobEventType = (typeof eventTypes)[number];


export interface JobEvent {
  seq: number;
  job_id: string;
  type: JobEventType;
  /** The model turn this event belongs to (0 before the first turn). */
  step: number;
  time: string;
  data: Record<string, unknown>;
}

/** What the agent loop and the worker need to record events. */
export interface EventSink {
  append(type: JobEventType, step: number, data: Record<string, unknown>): JobEvent;
}

const migrations = [
  `CREATE TABLE events (
     seq INTEGER PRIMARY KEY AUTOINCREMENT,
     type TEXT NOT NULL,
     step INTEGER NOT NULL,
     time TEXT NOT NULL,
     data TEXT NOT NULL
   )`,
  // The context store (src/agent/context/context-store.ts) shares this database; its schema lives here so that one
  // module owns every table of context.db. `tokens` and `chars` measure what the event adds to a prompt whole.
  `ALTER TABLE events ADD COLUMN tokens INTEGER;
   ALTER TABLE events ADD COLUMN chars INTEGER;
   CREATE INDEX events_by_type ON events (type, seq)`,
  // Chunks of tool outputs, files read and files written, tiling each text (no overlap) so that a handle's text can
  // be read back in order; indexed for BM25 by FTS5 (external content: the text is stored once, in chunks).
  `CREATE TABLE chunks (
     id INTEGER PRIMARY KEY,
     seq INTEGER NOT NULL,
     step INTEGER NOT NULL,
     handle TEXT NOT NULL,
     source TEXT NOT NULL,
     start_char INTEGER NOT NULL,
     end_char INTEGER NOT NULL,
     total_chars INTEGER NOT NULL,
     text TEXT NOT NULL
   );
   CREATE INDEX chunks_by_handle ON chunks (handle, start_char);
   CREATE VIRTUAL TABLE chunks_fts USING fts5 (text, content = 'chunks', content_rowid = 'id', tokenize = 'porter unicode61');
   CREATE TABLE chunk_vectors (
     chunk_id INTEGER PRIMARY KEY,
     model TEXT NOT NULL,
     vector BLOB NOT NULL
   );
   CREATE TABLE context_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)`,
];

export class EventLog implements EventSink {
  readonly jobId: string;
  readonly #db: Database.Database;
  readonly #insert: Database.Statement<[string, number, string, string, number | null, number | null]>;
  readonly #after: Database.Statement<[number, number], { seq: number; type: JobEventType; step: number; time: string; data: string }>;
  readonly #bus: EventBus | undefined;

  /**
   * `bus`: where appended events are announced (a log only read, or one nobody follows, needs none). `first`: the
   * event a new log starts with (the job's pending status, made from its row: whoever opens the log first writes the
   * same one), written only into a log that has none.
   */
  constructor(jobId: string, dbPath: string, options: { readonly?: boolean; bus?: EventBus; first?: { time: string; data: Record<string, unknown> } } = {}) {
    this.jobId = jobId;
    this.#bus = options.bus;
    this.#db = new Database(dbPath, { readonly: options.readonly ?? false, fileMustExist: options.readonly ?? false });
    this.#db.pragma('busy_timeout = 5000');
    if (!options.readonly) {
      useWal(this.#db);
      migrate(this.#db, migrations);
      if (options.first !== undefined) {
        this.#db
          .prepare(`INSERT INTO events (type, step, time, data) SELECT 'job-status', 0, ?, ? WHERE NOT EXISTS (SELECT 1 FROM events)`)
          .run(options.first.time, JSON.stringify(options.first.data));
      }
    }
    this.#insert = this.#db.prepare('INSERT INTO events (type, step, time, data, tokens, chars) VALUES (?, ?, ?, ?, ?, ?) RETURNING seq');
    this.#after = this.#db.prepare('SELECT seq, type, step, time, data FROM events WHERE seq > ? ORDER BY seq LIMIT ?');
  }

  /** `size`: what the event adds to a prompt, when the caller measured it (the context store does). */
  append(type: JobEventType, step: number, data: Record<string, unknown>, size?: { tokens: number; chars: number }): JobEvent {
    return this.#announce(this.#write(type, step, data, size));
  }

  /**
   * Appends a run's final job-status (`data.status` complete, error or cancelled) unless the latest job-status already
   * is one: checked and written in one write transaction, so that of several processes recording the same end (the
   * worker that ended the job, a replica repairing an end a crash lost) exactly one writes it. Returns the event
   * written, or undefined when the run had ended already.
   */
  appendEnd(step: number, data: Record<string, unknown> & { status: string }): JobEvent | undefined {
    const event = this.#db
      .transaction(() => {
        const latest = this.#db.prepare(`SELECT data FROM events WHERE type = 'job-status' ORDER BY seq DESC LIMIT 1`).get() as { data: string } | undefined;
        const status = latest === undefined ? undefined : (JSON.parse(latest.data) as { status?: JobStatus }).status;
        return status !== undefined && finishedStatuses.includes(status) ? undefined : this.#write('job-status', step, data);
      })
      .immediate();
    // Announced once committed: a follower woken by it reads the log through another connection.
    return event && this.#announce(event);
  }

  #write(type: JobEventType, step: number, data: Record<string, unknown>, size?: { tokens: number; chars: number }): JobEvent {
    const time = new Date().toISOString();
    const row = this.#insert.get(type, step, time, JSON.stringify(data), size?.tokens ?? null, size?.chars ?? null) as { seq: number };
    return { seq: row.seq, job_id: this.jobId, type, step, time, data };
  }

  #announce(event: JobEvent): JobEvent {
    this.#bus?.publish({ job_id: this.jobId, seq: event.seq, type: event.type });
    return event;
  }

  /** Events with seq greater than `afterSeq`, oldest first. */
  list(afterSeq = 0, limit = 1000): JobEvent[] {
    return this.#after.all(afterSeq, limit).map((row) => ({ ...row, job_id: this.jobId, data: JSON.parse(row.data) as Record<string, unknown> }));
  }

  /** The job's context.db, for the context store, which keeps its tables in it. */
  get database(): Database.Database {
    return this.#db;
  }

  close(): void {
    this.#db.close();
  }
}
