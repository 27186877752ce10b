// A sandbox's log on the host, jobs/<id>/logs/sandbox.log: what sandboxd, the guest agent, the VM's console or the
// container prints. Every runtime writes it through this one writer. Whatever runs in the sandbox can print to it
// (sandboxd's own output pipes are reachable from inside through /proc), so it is capped: the writer counts the
// bytes it appends (starting from the file's size when it is opened: a resumed job's sandboxes share the file), and
// the chunk that would cross the cap is cut, followed by one line that says so; everything after is read and
// dropped, so the sandbox never blocks on a full pipe and the host's disk never fills.
// It must never stop reading, and never throw at the runtime that feeds it: write errors are dropped too.
import { closeSync, constants, fstatSync, openSync, write as writeFd, close as closeFd } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { formatBytes } from '../util/bytes.ts';

/** The cap when a sandbox spec sets none (the server's default, WORKCELL_SANDBOX_LOG_MB). */
export const defaultSandboxLogMaxBytes = 64 * 1024 * 1024;

export interface SandboxLogLimit {
  /** The most bytes sandbox.log may hold, the marker line included (a file opened within a marker's length of it may end that much over). */
  maxBytes: number;
  /** Called once, when output is first dropped. */
  onLimit?: (() => void) | undefined;
}

const appendFlags = constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW;

/** The line written where output starts being dropped. */
export function sandboxLogMarker(maxBytes: number): string {
  return `\n[workcell] sandbox.log reached its limit of ${formatBytes(maxBytes)} (limits.sandbox_log_mb): what the sandbox prints from here on is dropped\n`;
}

export class SandboxLog extends Writable {
  readonly path: string;
  /** The file's size when it was opened: where this sandbox's output starts. */
  readonly startSize: number;
  readonly #maxBytes: number;
  readonly #marker: Buffer;
  readonly #onLimit: (() => void) | undefined;
  #fd: number;
  #written: number;
  #full = false;

  constructor(logDir: string, limit?: SandboxLogLimit) {
    super({ decodeStrings: true });
    this.path = join(logDir, 'sandbox.log');
    this.#maxBytes = limit?.maxBytes ?? defaultSandboxLogMaxBytes;
    this.#marker = Buffer.from(sandboxLogMarker(this.#maxBytes));
    this.#onLimit = limit?.onLimit;
    this.#fd = openSync(this.path, appendFlags, 0o640);
    try {
      this.startSize = fstatSync(this.#fd).size;
    } catch (error) {
      closeSync(this.#fd);
      throw error;
    }
    this.#written = this.startSize;
    this.on('error', () => undefined);
  }

  /** Whether output has been dropped. */
  get full(): boolean {
    return this.#full;
  }

  /** Ends the log and resolves once the file is closed. */
  close(): Promise<void> {
    return new Promise((resolve) => {
      if (this.closed) return resolve();
      this.once('close', () => resolve());
      this.end();
    });
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (this.#full) return callback();
    const room = this.#maxBytes - this.#marker.length - this.#written;
    let data = chunk;
    if (chunk.length > room) {
      this.#full = true;
      // A file at its cap already ends with the marker (or was over it before the cap existed): nothing more.
      data = this.#written >= this.#maxBytes ? Buffer.alloc(0) : Buffer.concat([chunk.subarray(0, Math.max(0, room)), this.#marker]);
      try {
        this.#onLimit?.();
      } catch {
        // the report is the caller's business; the log carries on dropping
      }
    }
    if (data.length === 0) return callback();
    this.#written += data.length;
    this.#writeAll(data, callback);
  }

  #writeAll(data: Buffer, callback: () => void): void {
    writeFd(this.#fd, data, (error, bytes) => {
      if (error !== null || bytes >= data.length) return callback();
      this.#writeAll(data.subarray(bytes), callback);
    });
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    closeFd(this.#fd, () => callback(error));
  }
}

/**
 * The log of a sandbox started ahead of its job (the warm pool): what it prints before a job takes it is kept in
 * memory, up to `maxBytes` (the rest is dropped, so it never blocks), and written to the job's log at handover, which
 * from then on gets everything. Like SandboxLog, it never stops reading and never throws at the runtime.
 */
export class PendingLog extends Writable {
  readonly #maxBytes: number;
  readonly #held: Buffer[] = [];
  #size = 0;
  #target: SandboxLog | undefined;

  constructor(maxBytes = 64 * 1024) {
    super({ decodeStrings: true });
    this.#maxBytes = maxBytes;
    this.on('error', () => undefined);
  }

  /** What it holds (before handover), as text. */
  text(): string {
    return Buffer.concat(this.#held).toString('utf8');
  }

  /** From now on everything goes to `target`, starting with what was held. */
  handOver(target: SandboxLog): void {
    for (const chunk of this.#held.splice(0)) target.write(chunk);
    this.#target = target;
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (this.#target !== undefined) {
      this.#target.write(chunk, () => callback());
      return;
    }
    const room = this.#maxBytes - this.#size;
    if (room > 0) {
      const kept = chunk.subarray(0, room);
      this.#held.push(kept);
      this.#size += kept.length;
    }
    callback();
  }

  override _final(callback: (error?: Error | null) => void): void {
    if (this.#target === undefined) return callback();
    this.#target.end(() => callback());
  }
}
