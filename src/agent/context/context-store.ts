// The context store: a job's whole history in its context.db, the one source from which every prompt is built,
// from which a resumed job rebuilds its state, and from which GET /jobs/:id/events replays. Every event is stored
// whole (by the EventLog, which owns the schema), with what it adds to a prompt measured in tokens and characters.
// Tool outputs, files read and files written are cut into chunks and indexed for recall: BM25 by SQLite FTS5, and,
// when an embedding model is configured, vectors fused with BM25 by reciprocal rank fusion.
//
// It never deletes or rewrites an event: condensing a prompt only adds `context-summary` events. With a limit
// (limits.context_mb, context-budget.ts), a tool output too large for the store is kept as its beginning and end
// (`dropped_chars` on its event says how much is gone), and the owner is told when the store is full.
import type Database from 'better-sqlite3';
import type { Logger } from 'pino';
import { errorMessage } from '../../errors.ts';
import type { EventLog, EventSink, JobEvent, JobEventType } from '../../jobs/event-log.ts';
import { chunkText } from './chunking.ts';
import { ContextBudget, type ContextLimit } from './context-budget.ts';
import { loadSqliteVec, reciprocalRankFusion, vectorToBlob, type Embedder } from './embeddings.ts';
import type { ImageStore } from './images.ts';
import type { TokenCounter } from './tokens.ts';

/** An event with its measured size. */
export interface StoredEvent extends JobEvent {
  /** Tokens the event's content adds to a prompt when sent whole (see eventText). */
  tokens: number;
  chars: number;
}

export interface SearchHit {
  chunkId: number;
  step: number;
  handle: string;
  source: string;
  start: number;
  end: number;
  totalChars: number;
  text: string;
}

export interface HandlePage {
  handle: string;
  step: number;
  source: string;
  start: number;
  end: number;
  totalChars: number;
  text: string;
}

/** Event types a prompt is built from. */
const promptTypes: JobEventType[] = ['user-message', 'model-turn', 'tool-result'];
/** String arguments of a tool call longer than this are indexed (and cut in prompts) under their own handle. */
export const longArgumentChars = 200;
/** The agent's own words are worth recalling once they say something. */
const minTurnTextChars = 80;

interface EventRow {
  seq: number;
  type: JobEventType;
  step: number;
  time: string;
  data: string;
  tokens: number | null;
  chars: number | null;
}

/** The text an event contributes to a prompt, for measuring it. */
export function eventText(type: JobEventType, data: Record<string, unknown>): string {
  switch (type) {
    case 'user-message':
    case 'context-summary':
      return asText(data.text);
    case 'model-turn': {
      const calls = Array.isArray(data.tool_calls) ? (data.tool_calls as Array<{ name?: unknown; args?: unknown }>) : [];
      return [asText(data.text), ...calls.map((call) => `${asText(call.name)} ${typeof call.args === 'string' ? call.args : JSON.stringify(call.args ?? {})}`)].join('\n');
    }
    case 'tool-result':
      return asText(data.output);
    default:
      return '';
  }
}

/** How a tool call is named in recall results and stubs: "shell: ls -la", "read_file src/app.py". */
export function describeCall(name: string, args: unknown): string {
  const object = typeof args === 'object' && args !== null ? (args as Record<string, unknown>) : {};
  if (name === 'shell' && typeof object.command === 'string') return `shell: ${oneLine(object.command, 80)}`;
  if (typeof object.path === 'string') return `${name} ${oneLine(object.path, 120)}`;
  if (name === 'recall' && typeof object.query === 'string') return `recall: ${oneLine(object.query, 80)}`;
  return name;
}

export class ContextStore implements EventSink {
  readonly jobId: string;
  readonly counter: TokenCounter;
  readonly #log: EventLog;
  readonly #db: Database.Database;
  readonly #logger: Pick<Logger, 'warn'> | undefined;
  readonly #embedder: Embedder | undefined;
  readonly #budget: ContextBudget | undefined;
  #vectorsReady: Promise<boolean> | undefined;
  #embedding: Promise<void> = Promise.resolve();
  /** Tool calls seen, so that their results can be described (call_id → name and arguments). */
  readonly #calls = new Map<string, { name: string; args: unknown }>();
  /** Parsed prompt events after some seq, extended incrementally (the log is append-only). */
  #tail: StoredEvent[] = [];
  #tailAfter = -1;
  #tailThrough = 0;
  readonly #statements: {
    insertChunk: Database.Statement<[number, number, string, string, number, number, number, string]>;
    insertFts: Database.Statement<[number, string]>;
    latestSummary: Database.Statement<[], EventRow>;
    pinned: Database.Statement<[number], EventRow>;
    after: Database.Statement<[number], EventRow>;
    ofStep: Database.Statement<[number], EventRow>;
    lastStep: Database.Statement<[], { step: number | null }>;
    setSize: Database.Statement<[number, number, number]>;
    handle: Database.Statement<[string, number], { step: number; source: string; start_char: number; end_char: number; total_chars: number; text: string }>;
    search: Database.Statement<[string, number], { id: number }>;
    chunk: Database.Statement<[number], { id: number; step: number; handle: string; source: string; start_char: number; end_char: number; total_chars: number; text: string }>;
    getMeta: Database.Statement<[string], { value: string }>;
    setMeta: Database.Statement<[string, string]>;
  };

  constructor(log: EventLog, options: { counter: TokenCounter; embedder?: Embedder | undefined; logger?: Pick<Logger, 'warn'> | undefined; limit?: ContextLimit | undefined }) {
    this.jobId = log.jobId;
    this.#log = log;
    this.#db = log.database;
    this.counter = options.counter;
    this.#embedder = options.embedder;
    this.#logger = options.logger;
    const db = this.#db;
    const columns = 'seq, type, step, time, data, tokens, chars';
    this.#statements = {
      insertChunk: db.prepare('INSERT INTO chunks (seq, step, handle, source, start_char, end_char, total_chars, text) VALUES (?, ?, ?, ?, ?, ?, ?, ?)'),
      insertFts: db.prepare('INSERT INTO chunks_fts (rowid, text) VALUES (?, ?)'),
      latestSummary: db.prepare(`SELECT ${columns} FROM events WHERE type = 'context-summary' ORDER BY seq DESC LIMIT 1`),
      pinned: db.prepare(`SELECT ${columns} FROM events WHERE type = 'user-message' AND seq <= ? AND json_extract(data, '$.source') IN ('task', 'client') ORDER BY seq`),
      after: db.prepare(`SELECT ${columns} FROM events WHERE seq > ? AND type IN (${promptTypes.map((type) => `'${type}'`).join(', ')}) ORDER BY seq`),
      ofStep: db.prepare(`SELECT ${columns} FROM events WHERE step = ? AND type IN ('model-turn', 'tool-call', 'tool-result', 'user-message') ORDER BY seq`),
      lastStep: db.prepare(`SELECT max(step) AS step FROM events WHERE type = 'model-turn'`),
      setSize: db.prepare('UPDATE events SET tokens = ?, chars = ? WHERE seq = ?'),
      handle: db.prepare('SELECT step, source, start_char, end_char, total_chars, text FROM chunks WHERE handle = ? AND end_char > ? ORDER BY start_char'),
      search: db.prepare('SELECT rowid AS id FROM chunks_fts WHERE chunks_fts MATCH ? ORDER BY bm25(chunks_fts) LIMIT ?'),
      chunk: db.prepare('SELECT id, step, handle, source, start_char, end_char, total_chars, text FROM chunks WHERE id = ?'),
      getMeta: db.prepare('SELECT value FROM context_meta WHERE key = ?'),
      setMeta: db.prepare('INSERT INTO context_meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value'),
    };
    const calibrated = Number(this.getMeta('chars_per_token'));
    if (!this.counter.exact && Number.isFinite(calibrated) && calibrated > 0) this.counter.restore?.(calibrated);
    if (options.limit !== undefined) {
      const databaseBytes = db.prepare('SELECT page_count * page_size AS bytes FROM pragma_page_count(), pragma_page_size()').pluck() as Database.Statement<[], number>;
      // The images a resumed job kept before count too (their sizes are in the events that show them).
      const imageBytes = db
        .prepare(`SELECT COALESCE(sum(json_extract(image.value, '$.bytes')), 0) FROM events, json_each(events.data, '$.images') AS image WHERE events.type = 'tool-result'`)
        .pluck()
        .get() as number;
      this.#budget = new ContextBudget(options.limit, { databaseBytes: () => databaseBytes.get() ?? 0, imageBytes });
    }
  }

  /** Records an event, measured, and indexes what it holds for recall. */
  append(type: JobEventType, step: number, input: Record<string, unknown>): JobEvent {
    const data = this.#fit(type, input);
    const text = eventText(type, data);
    const size = { tokens: text === '' ? 0 : this.counter.count(text), chars: text.length };
    // The event commits (and is announced to followers) first; its chunks follow in one transaction.
    const event = this.#log.append(type, step, data, size);
    const newChunks: number[] = [];
    this.#db.transaction(() => this.#index(event, newChunks))();
    if (newChunks.length > 0 && this.#embedder !== undefined) this.#queueEmbeddings(newChunks);
    this.#budget?.check();
    return event;
  }

  /** A tool result with its output as the store can keep it (context-budget.ts). */
  #fit(type: JobEventType, data: Record<string, unknown>): Record<string, unknown> {
    if (this.#budget === undefined || type !== 'tool-result' || typeof data.output !== 'string') return data;
    const fitted = this.#budget.fitOutput(data.output);
    return fitted.droppedChars === 0 ? data : { ...data, output: fitted.output, dropped_chars: fitted.droppedChars };
  }

  /** `images` within the job's context limit: an image that does not fit is refused (the loop keeps the call's text). */
  limitImages(images: ImageStore): ImageStore {
    const budget = this.#budget;
    if (budget === undefined) return images;
    return {
      save: async (name, image) => {
        if (!budget.admitImage(image.data.length)) throw new Error(`the image ${name} was not kept: the job's context store has no room for it (limits.context_mb)`);
        return images.save(name, image);
      },
      load: (path) => images.load(path),
    };
  }

  #index(event: JobEvent, chunkIds: number[]): void {
    const { data, step, seq } = event;
    const add = (handle: string, source: string, text: string) => {
      for (const chunk of chunkText(text)) {
        const row = this.#statements.insertChunk.run(seq, step, handle, source, chunk.start, chunk.end, text.length, chunk.text);
        const id = Number(row.lastInsertRowid);
        this.#statements.insertFts.run(id, chunk.text);
        chunkIds.push(id);
      }
    };
    if (event.type === 'tool-call') {
      const name = asText(data.name);
      this.#calls.set(asText(data.call_id), { name, args: data.args });
      const handle = asText(data.handle) || `seq-${seq}`;
      if (typeof data.args === 'object' && data.args !== null) {
        for (const [key, value] of Object.entries(data.args as Record<string, unknown>)) {
          if (typeof value === 'string' && value.length > longArgumentChars) add(`${handle}-${key}`, `${describeCall(name, data.args)} (${key})`, value);
        }
      }
    } else if (event.type === 'tool-result') {
      const name = asText(data.name);
      const output = asText(data.output);
      // recall's own answers are copies of what is already indexed.
      if (name === 'recall' || output === '') return;
      const call = this.#calls.get(asText(data.call_id));
      add(asText(data.handle) || `seq-${seq}`, call ? describeCall(call.name, call.args) : name, output);
    } else if (event.type === 'model-turn') {
      const text = asText(data.text);
      if (text.length >= minTurnTextChars) add(`step-${step}-text`, 'your notes', text);
    }
  }

  #toStored(row: EventRow): StoredEvent {
    const data = JSON.parse(row.data) as Record<string, unknown>;
    let { tokens, chars } = row;
    if (tokens === null || chars === null) {
      // Written by another process (a follow-up message through the API) or before the store existed.
      const text = eventText(row.type, data);
      tokens = text === '' ? 0 : this.counter.count(text);
      chars = text.length;
      this.#statements.setSize.run(tokens, chars, row.seq);
    }
    return { seq: row.seq, job_id: this.jobId, type: row.type, step: row.step, time: row.time, data, tokens, chars };
  }

  /** The latest context-summary: it stands for every prompt event up to its `through_seq`. */
  latestSummary(): StoredEvent | undefined {
    const row = this.#statements.latestSummary.get();
    return row && this.#toStored(row);
  }

  /** The task and the user's follow-up instructions up to `throughSeq`: always in the prompt, verbatim. */
  pinnedUserMessages(throughSeq: number): StoredEvent[] {
    return this.#statements.pinned.all(throughSeq).map((row) => this.#toStored(row));
  }

  /** Prompt events (user messages, model turns, tool results) after `afterSeq`, oldest first. */
  tail(afterSeq: number): StoredEvent[] {
    if (afterSeq < this.#tailAfter) {
      this.#tail = [];
      this.#tailThrough = afterSeq;
    }
    this.#tailAfter = afterSeq;
    this.#tail = this.#tail.filter((event) => event.seq > afterSeq);
    const from = Math.max(afterSeq, this.#tailThrough);
    for (const row of this.#statements.after.all(from)) {
      this.#tail.push(this.#toStored(row));
      this.#tailThrough = row.seq;
    }
    return this.#tail;
  }

  /** The last model turn's step (0 before the first). */
  lastStep(): number {
    return this.#statements.lastStep.get()?.step ?? 0;
  }

  /** The model turn, tool calls, tool results and user messages of one step, in order. */
  eventsOfStep(step: number): StoredEvent[] {
    return this.#statements.ofStep.all(step).map((row) => this.#toStored(row));
  }

  /** Remembers the tool calls of earlier steps (after a restart), so that their results are described well. */
  rememberCall(callId: string, name: string, args: unknown): void {
    this.#calls.set(callId, { name, args });
  }

  /** Reads a stored text by its handle from character `offset`, at most `maxChars` (whole chunks, cut to fit). */
  readHandle(handle: string, offset: number, maxChars: number): HandlePage | undefined {
    const rows = this.#statements.handle.all(handle, Math.max(0, offset));
    const first = rows[0];
    if (first === undefined) {
      const any = this.#statements.handle.all(handle, -1)[0];
      if (any === undefined) return undefined;
      return { handle, step: any.step, source: any.source, start: any.total_chars, end: any.total_chars, totalChars: any.total_chars, text: '' };
    }
    const start = Math.max(offset, first.start_char);
    let text = '';
    for (const row of rows) {
      const from = Math.max(0, start - row.start_char);
      text += row.text.slice(from);
      if (text.length >= maxChars) break;
    }
    if (text.length > maxChars) {
      // End at a line break when one is near, so pages do not split lines.
      const cut = text.lastIndexOf('\n', maxChars);
      text = text.slice(0, cut > maxChars * 0.7 ? cut + 1 : maxChars);
    }
    return { handle, step: first.step, source: first.source, start, end: start + text.length, totalChars: first.total_chars, text };
  }

  /**
   * The best chunks for `query`: BM25 over FTS5, fused with vector similarity by reciprocal rank fusion when an
   * embedding model is configured (and works). `mode` says which ranking produced the answer.
   */
  async search(query: string, limit: number, signal?: AbortSignal): Promise<{ hits: SearchHit[]; mode: 'bm25' | 'hybrid' }> {
    const candidates = Math.max(limit * 4, 40);
    const lexical = this.#lexical(query, candidates);
    let semantic: number[] | undefined;
    if (this.#embedder !== undefined && (await this.#vectors())) {
      try {
        await this.flushEmbeddings(signal);
        const [vector] = await this.#embedder.embed([query], signal);
        if (vector !== undefined) {
          semantic = (
            this.#db
              .prepare('SELECT chunk_id AS id FROM chunk_vectors WHERE model = ? ORDER BY vec_distance_cosine(vector, ?) LIMIT ?')
              .all(this.#embedder.model, vectorToBlob(vector), candidates) as Array<{ id: number }>
          ).map((row) => row.id);
        }
      } catch (error) {
        signal?.throwIfAborted();
        this.#logger?.warn({ jobId: this.jobId, err: errorMessage(error) }, 'embedding the recall query failed: BM25 only');
      }
    }
    const ranked = semantic === undefined ? lexical : reciprocalRankFusion([lexical, semantic]).map((entry) => entry.item);
    const hits: SearchHit[] = [];
    for (const id of ranked.slice(0, limit)) {
      const row = this.#statements.chunk.get(id);
      if (row) hits.push({ chunkId: row.id, step: row.step, handle: row.handle, source: row.source, start: row.start_char, end: row.end_char, totalChars: row.total_chars, text: row.text });
    }
    return { hits, mode: semantic === undefined ? 'bm25' : 'hybrid' };
  }

  #lexical(query: string, limit: number): number[] {
    const expression = ftsQuery(query);
    if (expression === undefined) return [];
    return this.#statements.search.all(expression, limit).map((row) => row.id);
  }

  #vectors(): Promise<boolean> {
    this.#vectorsReady ??= loadSqliteVec(this.#db).then((problem) => {
      if (problem !== undefined) this.#logger?.warn({ jobId: this.jobId, problem }, 'sqlite-vec did not load: recall uses BM25 only');
      return problem === undefined;
    });
    return this.#vectorsReady;
  }

  #queueEmbeddings(chunkIds: number[]): void {
    this.#embedding = this.#embedding.then(() => this.#embedChunks(chunkIds)).catch(() => {});
  }

  /** Embeds every chunk that has no vector yet (after a restart too); failures leave them to BM25. */
  async flushEmbeddings(signal?: AbortSignal): Promise<void> {
    await this.#embedding;
    if (this.#embedder === undefined) return;
    const missing = (
      this.#db.prepare('SELECT id FROM chunks WHERE id NOT IN (SELECT chunk_id FROM chunk_vectors WHERE model = ?) ORDER BY id').all(this.#embedder.model) as Array<{ id: number }>
    ).map((row) => row.id);
    if (missing.length > 0) await this.#embedChunks(missing, signal);
  }

  async #embedChunks(chunkIds: number[], signal?: AbortSignal): Promise<void> {
    const embedder = this.#embedder;
    if (embedder === undefined || !(await this.#vectors())) return;
    const insert = this.#db.prepare('INSERT OR REPLACE INTO chunk_vectors (chunk_id, model, vector) VALUES (?, ?, ?)');
    for (let index = 0; index < chunkIds.length; index += 64) {
      const batch = chunkIds.slice(index, index + 64).map((id) => this.#statements.chunk.get(id)).filter((row) => row !== undefined);
      if (batch.length === 0) continue;
      try {
        const vectors = await embedder.embed(batch.map((row) => `${row.source}\n${row.text}`), signal);
        this.#db.transaction(() => batch.forEach((row, position) => vectors[position] && insert.run(row.id, embedder.model, vectorToBlob(vectors[position]))))();
      } catch (error) {
        signal?.throwIfAborted();
        this.#logger?.warn({ jobId: this.jobId, err: errorMessage(error) }, 'embedding chunks failed: they are found by BM25 only');
        return;
      }
    }
  }

  /**
   * Feeds the provider's count of a request back to an estimated counter (and keeps its calibration in the store,
   * so that a restarted job starts from it).
   */
  observeUsage(promptChars: number, reportedInputTokens: number): void {
    if (this.counter.exact) return;
    this.counter.observe(promptChars, reportedInputTokens);
    this.setMeta('chars_per_token', String(this.counter.charsPerToken));
  }

  getMeta(key: string): string | undefined {
    return this.#statements.getMeta.get(key)?.value;
  }

  setMeta(key: string, value: string): void {
    this.#statements.setMeta.run(key, value);
  }

  /** Waits for embeddings in flight (they write to the database). The EventLog is closed by its owner. */
  async drain(): Promise<void> {
    await this.#embedding;
  }
}

/** An FTS5 query from free text: every word as a quoted term, OR-ed (BM25 ranks chunks with more and rarer terms first). */
export function ftsQuery(query: string): string | undefined {
  const terms = [...new Set((query.toLowerCase().match(/[\p{L}\p{N}_]+/gu) ?? []).filter((term) => term.length > 0))].slice(0, 32);
  if (terms.length === 0) return undefined;
  return terms.map((term) => `"${term}"`).join(' OR ');
}

function asText(value: unknown): string {
  return typeof value === 'string' ? value : '';
}

function oneLine(text: string, maxChars: number): string {
  const line = text.replace(/\s+/g, ' ').trim();
  return line.length > maxChars ? `${line.slice(0, maxChars - 1)}…` : line;
}
