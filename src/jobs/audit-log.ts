// A job's audit log: jobs/<id>/audit.jsonl, one JSON object per line, append-only, written by the worker on the
// host (never by anything in the sandbox), served by GET /jobs/:id/audit. Two kinds of entry, each with the time
// and the agent's step it belongs to (0 before the first model turn):
//   {"type": "file", "op": "read"|"write"|"edit"|"list"|"delete"|"search", "path", "ok", "error"?}
//     every file operation the agent made through the file tools (the shell's commands are in the event log)
//   {"type": "network", "method", "url"?, "host", "port", "ip", "allowed", "reason"?, "error"?, "status",
//    "bytes_in", "bytes_out", "duration_ms"}
//     every connection attempt through the egress proxy, written when it ends (refusals at once)
// The file lives in the job's root directory, which the sandbox cannot reach; it is still opened O_NOFOLLOW.
// Readers get complete lines only: a line being written while a reader reads is left for the next read.
import { closeSync, constants, openSync, writeSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { Transform, type Readable, type TransformCallback } from 'node:stream';
import type { Logger } from 'pino';
import type { ConnectionRecord } from '../runtimes/network/egress-proxy.ts';

export const fileOperations = ['read', 'write', 'edit', 'list', 'delete', 'search'] as const;
export type FileOperation = (typeof fileOperations)[number];

export interface FileOperationRecord {
  op: FileOperation;
  /** The path as the agent gave it (workspace-relative or absolute), refused ones included. */
  path: string;
  ok: boolean;
  /** sandboxd's error code when it failed (e.g. path_outside_workspace, not_found). */
  error?: string | undefined;
}

export interface FileAuditEntry extends FileOperationRecord {
  time: string;
  step: number;
  type: 'file';
}

export interface NetworkAuditEntry extends Omit<ConnectionRecord, 'step'> {
  step: number;
  type: 'network';
}

export type AuditEntry = FileAuditEntry | NetworkAuditEntry;

const appendFlags = constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW;

export class AuditLog {
  readonly #path: string;
  readonly #currentStep: () => number;
  readonly #logger: Pick<Logger, 'error'> | undefined;
  #fd: number | undefined;
  #closed = false;

  constructor(path: string, options: { currentStep: () => number; logger?: Pick<Logger, 'error'> }) {
    this.#path = path;
    this.#currentStep = options.currentStep;
    this.#logger = options.logger;
  }

  /** Records a file operation, with the current step. */
  file(operation: FileOperationRecord): void {
    this.#append({ time: new Date().toISOString(), step: this.#currentStep(), type: 'file', ...withoutUndefined(operation) });
  }

  /** Records a proxied connection, with the step it was opened in (or the current one). */
  network(record: ConnectionRecord): void {
    const { step, time, ...rest } = record;
    this.#append({ time, step: step ?? this.#currentStep(), type: 'network', ...withoutUndefined(rest) });
  }

  /** Closes the file; later entries are dropped (the job has ended). */
  close(): void {
    this.#closed = true;
    if (this.#fd !== undefined) closeSync(this.#fd);
    this.#fd = undefined;
  }

  #append(entry: AuditEntry): void {
    if (this.#closed) return;
    try {
      this.#fd ??= openSync(this.#path, appendFlags, 0o600);
      // One write per line on an O_APPEND descriptor: lines never interleave.
      writeSync(this.#fd, `${JSON.stringify(entry)}\n`);
    } catch (error) {
      this.#logger?.error({ err: error, entry }, 'writing the audit log failed');
    }
  }
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
