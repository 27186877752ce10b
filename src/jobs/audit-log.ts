// A job's audit log: jobs/<id>/audit.jsonl, one JSON object per line, append-only, written by the worker on the
// host (never by anything in the sandbox), served by GET /jobs/:id/audit. Two kinds of entry, each with the time
// and the agent's step it belongs to (0 before the first model turn):
//   {"type": "file", "op": "read"|"write"|"edit"|"list"|"delete"|"search", "path", "ok", "error"?, "by"?, "bytes"?, "etag"?}
//     every file operation the agent made through the file tools (the shell's commands are in the event log), and
//     every one people made through the file routes (GET/PUT/DELETE /jobs/:id/files/...): those carry `by`, the API
//     key id or "local" (no keys), and are appended by the API (appendApiFileEntry) beside the worker's writer
//   {"type": "network", "method", "url"?, "host", "port", "ip", "allowed", "reason"?, "error"?, "status",
//    "bytes_in", "bytes_out", "duration_ms", "by"?}
//     every connection attempt through the egress proxy, written when it ends (refusals at once); `by` says who made
//     it when it was not the sandbox: "git-clone" for the host's clone of a git input (jobs/inputs/git-clone.ts)
//   {"type": "limit", "limit": "audit_log_mb", "max_bytes", "message"}
//     the last entry when the file reaches its cap (limits.audit_log_mb): entries after it are dropped
// The file lives in the job's root directory, which the sandbox cannot reach; it is still opened O_NOFOLLOW.
// A sandbox can multiply its entries (a connection loop through the proxy), so the file is capped: the log counts
// the bytes it appends (from the file's size when it opens it: a resumed job appends to the same file) and keeps
// room for the one limit entry, so the file never grows past the cap.
// Readers get complete lines only: a line being written while a reader reads is left for the next read.
import { closeSync, constants, fstatSync, openSync, readSync, writeSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { Transform, type Readable, type TransformCallback } from 'node:stream';
import type { Logger } from 'pino';
import type { ConnectionRecord } from '../runtimes/network/egress-proxy.ts';
import { formatBytes } from '../util/bytes.ts';

export const fileOperations = ['read', 'write', 'edit', 'list', 'delete', 'search'] as const;
export type FileOperation = (typeof fileOperations)[number];

export interface FileOperationRecord {
  op: FileOperation;
  /** The path as the agent gave it (workspace-relative or absolute), refused ones included. */
  path: string;
  ok: boolean;
  /** sandboxd's error code when it failed (e.g. path_outside_workspace, not_found). */
  error?: string | undefined;
  /** Who, for operations through the API's file routes: the API key id, or "local" without keys. Absent: the agent. */
  by?: string | undefined;
  /** Bytes written (PUT) or served (GET of a file). */
  bytes?: number | undefined;
  /** The file's ETag after a write, or the one served. */
  etag?: string | undefined;
}

export interface FileAuditEntry extends FileOperationRecord {
  time: string;
  step: number;
  type: 'file';
}

export interface NetworkAuditEntry extends Omit<ConnectionRecord, 'step'> {
  step: number;
  type: 'network';
  /** Who made the connection when not the sandbox: "git-clone" (the clone of a git input, on the host). */
  by?: NetworkConnector;
}

/** Who besides the sandbox connects through a job's egress proxy. */
export type NetworkConnector = 'git-clone';

export interface LimitAuditEntry {
  time: string;
  step: number;
  type: 'limit';
  limit: 'audit_log_mb';
  max_bytes: number;
  message: string;
}

export type AuditEntry = FileAuditEntry | NetworkAuditEntry | LimitAuditEntry;

// Read-write: a resumed job's log reads its own last line once (endsWithLimitEntry).
const appendFlags = constants.O_RDWR | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW;
/** Room kept for the limit entry. */
const limitEntryBytes = 512;

export class AuditLog {
  readonly #path: string;
  readonly #currentStep: () => number;
  readonly #logger: Pick<Logger, 'error'> | undefined;
  readonly #maxBytes: number;
  readonly #onLimit: ((message: string) => void) | undefined;
  #fd: number | undefined;
  /** Bytes in the file (its size when opened, then counted). */
  #written = 0;
  #full = false;
  #closed = false;

  /**
   * `maxBytes`: the cap (limits.audit_log_mb; default 64 MB); `onLimit` is told once, with a message, when it is
   * reached.
   */
  constructor(path: string, options: { currentStep: () => number; logger?: Pick<Logger, 'error'>; maxBytes?: number; onLimit?: (message: string) => void }) {
    this.#path = path;
    this.#currentStep = options.currentStep;
    this.#logger = options.logger;
    this.#maxBytes = Math.max(options.maxBytes ?? 64 * 1024 * 1024, limitEntryBytes);
    this.#onLimit = options.onLimit;
  }

  /** Records a file operation, with the current step. */
  file(operation: FileOperationRecord): void {
    this.#append({ time: new Date().toISOString(), step: this.#currentStep(), type: 'file', ...withoutUndefined(operation) });
  }

  /** Records a proxied connection, with the step it was opened in (or the current one), and who made it if not the sandbox. */
  network(record: ConnectionRecord, by?: NetworkConnector): void {
    const { step, time, ...rest } = record;
    this.#append({ time, step: step ?? this.#currentStep(), type: 'network', ...withoutUndefined(rest), ...(by === undefined ? {} : { by }) });
  }

  /** Closes the file; later entries are dropped (the job has ended). */
  close(): void {
    this.#closed = true;
    if (this.#fd !== undefined) closeSync(this.#fd);
    this.#fd = undefined;
  }

  #append(entry: AuditEntry): void {
    if (this.#closed || this.#full) return;
    try {
      if (this.#fd === undefined) {
        this.#fd = openSync(this.#path, appendFlags, 0o600);
        this.#written = fstatSync(this.#fd).size;
        // A resumed job appends to the same file: one that ends with the limit entry stays full.
        if (endsWithLimitEntry(this.#fd, this.#written)) this.#written = this.#maxBytes;
      }
      const line = `${JSON.stringify(entry)}\n`;
      const bytes = Buffer.byteLength(line);
      if (this.#written + bytes > this.#maxBytes - limitEntryBytes) return this.#reachLimit();
      // One write per line on an O_APPEND descriptor: lines never interleave.
      writeSync(this.#fd, line);
      this.#written += bytes;
    } catch (error) {
      this.#logger?.error({ err: error, entry }, 'writing the audit log failed');
    }
  }

  /** Writes the limit entry (unless the file already has it or is over the cap) and stops. */
  #reachLimit(): void {
    this.#full = true;
    const message = `audit.jsonl reached its limit of ${formatBytes(this.#maxBytes)} (limits.audit_log_mb): later file operations and connections are not recorded`;
    const entry: LimitAuditEntry = { time: new Date().toISOString(), step: this.#currentStep(), type: 'limit', limit: 'audit_log_mb', max_bytes: this.#maxBytes, message };
    const line = `${JSON.stringify(entry)}\n`;
    if (this.#fd !== undefined && this.#written + Buffer.byteLength(line) <= this.#maxBytes) {
      writeSync(this.#fd, line);
      this.#written += Buffer.byteLength(line);
    }
    this.#onLimit?.(message);
  }
}

/**
 * Appends one file-route entry (a person's GET, PUT or DELETE through the API) to a job's audit log, from outside the
 * job's own AuditLog (the API, which may run while the worker appends too: one write per line on O_APPEND, so lines
 * never interleave). Keeps to the same cap: past `maxBytes` less the room kept for the worker's limit entry, the entry
 * is dropped. `step` is the job's step count when it happened.
 */
export async function appendApiFileEntry(path: string, record: FileOperationRecord & { by: string }, options: { step: number; maxBytes: number }): Promise<void> {
  const line = `${JSON.stringify({ time: new Date().toISOString(), step: options.step, type: 'file', ...withoutUndefined(record) })}\n`;
  const handle = await open(path, appendFlags, 0o600);
  try {
    const { size } = await handle.stat();
    if (size + Buffer.byteLength(line) > Math.max(options.maxBytes, limitEntryBytes) - limitEntryBytes) return;
    await handle.write(line);
  } finally {
    await handle.close();
  }
}

function endsWithLimitEntry(fd: number, size: number): boolean {
  const tail = Buffer.alloc(Math.min(size, limitEntryBytes));
  readSync(fd, tail, 0, tail.length, size - tail.length);
  const lines = tail.toString('utf8').trimEnd().split('\n');
  return lines.at(-1)?.includes('"type":"limit"') ?? false;
}

function withoutUndefined<T extends object>(value: T): T {
  return Object.fromEntries(Object.entries(value).filter(([, field]) => field !== undefined)) as T;
}

/**
 * The audit log's complete lines after the first `afterLine`, as a stream; an empty stream when the job has no
 * entries yet. The file's size is taken when it is opened, so a line being appended meanwhile is not cut.
 */
export async function readAuditLog(path: string, afterLine = 0): Promise<Readable> {
  let handle;
  try {
    handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return emptyStream();
    throw error;
  }
  const { size } = await handle.stat();
  if (size === 0) {
    await handle.close();
    return emptyStream();
  }
  return handle.createReadStream({ start: 0, end: size - 1, autoClose: true }).pipe(completeLinesAfter(afterLine));
}

function emptyStream(): Readable {
  return completeLinesAfter(0).end();
}

/** Passes whole lines (with their newline) after the first `skip`; holds back a last line without a newline. */
function completeLinesAfter(skip: number): Transform {
  let seen = 0;
  let rest: Buffer = Buffer.alloc(0);
  return new Transform({
    transform(chunk: Buffer, _encoding, callback: TransformCallback) {
      const data = rest.length === 0 ? chunk : Buffer.concat([rest, chunk]);
      const last = data.lastIndexOf(0x0a);
      if (last === -1) {
        rest = data;
        return callback();
      }
      rest = Buffer.from(data.subarray(last + 1));
      let start = 0;
      const out: Buffer[] = [];
      while (start <= last) {
        const end = data.indexOf(0x0a, start);
        if (++seen > skip) out.push(data.subarray(start, end + 1));
        start = end + 1;
      }
      callback(null, out.length === 0 ? undefined : Buffer.concat(out));
    },
  });
}
