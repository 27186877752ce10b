// The cap on a job's history on the host (limits.context_mb): context.db, where every event and every tool output is
// kept, and the images tools return (logs/screenshots/). What a tool prints is up to the sandbox, so the store cannot
// take outputs whole without bound. The rules, all here:
//   - one tool output keeps at most a sixteenth of the cap: its beginning and its end, with a line in the middle
//     that says how much was dropped and why; an image larger than that share is not kept;
//   - the store is full once what it holds reaches the cap: the output that fills it is cut to the room left, and
//     the job ends (like at its wall-time limit) with an error naming the limit. Nothing is ever deleted.
// What the store holds is counted, not measured with stat: SQLite's own page count of the database (page_count ×
// page_size) plus the bytes of the images kept. An output costs about three times its size in the database (the
// event, its chunks for recall and their full-text index), so room for an output is a third of what is left.
import { formatBytes } from '../../util/bytes.ts';

export interface ContextLimit {
  /** The most the job's history may take: context.db and its images (limits.context_mb, in bytes). */
  maxBytes: number;
  /** Told once per kind: the first output cut, the first image dropped, and the store full (the job must end). */
  onLimit?: ((reached: ContextLimitReached) => void) | undefined;
}

export interface ContextLimitReached {
  kind: 'output-cut' | 'image-dropped' | 'full';
  message: string;
}

/** One output's share of the cap. */
const outputShare = 1 / 16;
/** Bytes the database takes per byte of a tool output (measured: event, chunks and FTS index). */
const storeFactor = 3;

export class ContextBudget {
  readonly #maxBytes: number;
  readonly #shareBytes: number;
  readonly #databaseBytes: () => number;
  readonly #onLimit: ContextLimit['onLimit'];
  #imageBytes: number;
  /** An output was cut to the room left: the store is full once it is stored. */
  #filling = false;
  #full = false;
  readonly #reported = new Set<ContextLimitReached['kind']>();

  constructor(limit: ContextLimit, measure: { databaseBytes: () => number; imageBytes: number }) {
    this.#maxBytes = limit.maxBytes;
    this.#shareBytes = Math.floor(limit.maxBytes * outputShare);
    this.#onLimit = limit.onLimit;
    this.#databaseBytes = measure.databaseBytes;
    this.#imageBytes = measure.imageBytes;
  }

  /** What the history holds now, in bytes. */
  get usedBytes(): number {
    return this.#databaseBytes() + this.#imageBytes;
  }

  get full(): boolean {
    return this.#full;
  }

  /** A tool output as the store keeps it: whole, or its beginning and end around a line saying what was dropped. */
  fitOutput(output: string): { output: string; droppedChars: number } {
    const room = Math.max(0, Math.floor((this.#maxBytes - this.usedBytes) / storeFactor));
    const allowedBytes = Math.min(this.#shareBytes, room);
    const bytes = Buffer.byteLength(output);
    if (bytes <= allowedBytes) return { output, droppedChars: 0 };
    const forRoom = room < this.#shareBytes;
    const limitText = `limits.context_mb is ${formatBytes(this.#maxBytes)}`;
    const why = forRoom
      ? `the job's context store is full (${limitText})`
      : `the job's context store keeps at most ${formatBytes(this.#shareBytes)} of one tool output (${limitText})`;
    // Characters in proportion to bytes, less room for the marker line.
    const keepChars = Math.max(0, Math.floor((allowedBytes * output.length) / bytes) - 200);
    let headEnd = Math.ceil(keepChars / 2);
    let tailStart = output.length - (keepChars - headEnd);
    // Never split a surrogate pair.
    if (isLowSurrogate(output.charCodeAt(headEnd))) headEnd--;
    if (isLowSurrogate(output.charCodeAt(tailStart))) tailStart++;
    const droppedChars = tailStart - headEnd;
    const cut = `${output.slice(0, headEnd)}\n\n[... ${droppedChars} characters of this output were not kept: ${why} ...]\n\n${output.slice(tailStart)}`;
    if (forRoom) this.#filling = true;
    else this.#report('output-cut', `a tool output of ${formatBytes(bytes)} was kept as its first and last ${formatBytes(allowedBytes / 2)}: ${why}`);
    return { output: cut, droppedChars };
  }

  /** Whether an image of `bytes` may be kept; counts it when it may. */
  admitImage(bytes: number): boolean {
    if (bytes <= this.#shareBytes && this.usedBytes + bytes <= this.#maxBytes) {
      this.#imageBytes += bytes;
      return true;
    }
    this.#report('image-dropped', `an image of ${formatBytes(bytes)} was not kept: ${bytes > this.#shareBytes ? `the job's context store keeps at most ${formatBytes(this.#shareBytes)} of one output` : "the job's context store is full"} (limits.context_mb is ${formatBytes(this.#maxBytes)})`);
    return false;
  }

  /** Called after each event is stored: reports the store full once it is. */
  check(): void {
    if (this.#full) return;
    const used = this.usedBytes;
    if (!this.#filling && used < this.#maxBytes) return;
    this.#full = true;
    this.#report('full', `the job's context store reached its limit of ${formatBytes(this.#maxBytes)} (limits.context_mb): context.db and the job's images hold ${formatBytes(used)}, and the job cannot record more steps`);
  }

  #report(kind: ContextLimitReached['kind'], message: string): void {
    if (this.#reported.has(kind)) return;
    this.#reported.add(kind);
    this.#onLimit?.({ kind, message });
  }
}

function isLowSurrogate(code: number): boolean {
  return code >= 0xdc00 && code <= 0xdfff;
}
