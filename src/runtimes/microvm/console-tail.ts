// The last lines a microVM's console printed (the guest kernel, its init, the guest agent, and the VMM's own stderr),
// kept in memory while the VM starts, so that a guest that does not come up says why in its error: the whole console
// is in the job's sandbox.log, but the error is what people read first. It only reads the streams it is given.
import type { Readable } from 'node:stream';

// eslint-disable-next-line no-control-regex -- matching escape sequences is the point
const ansiSequence = /\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>]/g;

export class ConsoleTail {
  readonly #maxLines: number;
  readonly #maxChars: number;
  #text = '';
  readonly #ended: Array<Promise<void>> = [];

  constructor(options: { maxLines?: number; maxChars?: number } = {}) {
    this.#maxLines = options.maxLines ?? 25;
    this.#maxChars = options.maxChars ?? 3000;
  }

  /** Keeps the end of what `stream` carries (alongside whatever else reads it). */
  attach(stream: Readable): void {
    stream.on('data', (chunk: Buffer | string) => this.write(chunk));
    this.#ended.push(
      new Promise((resolveEnd) => {
        stream.once('close', () => resolveEnd());
        stream.once('end', () => resolveEnd());
        stream.once('error', () => resolveEnd());
      }),
    );
  }

  write(chunk: Buffer | string): void {
    this.#text += typeof chunk === 'string' ? chunk : chunk.toString('utf8');
    // Room for the longest lines the tail can hold; the rest is in sandbox.log.
    if (this.#text.length > this.#maxChars * 4) this.#text = this.#text.slice(-this.#maxChars * 2);
  }

  /** Waits until the attached streams have ended (what the VMM wrote before it exited is read), at most `timeoutMs`. */
  async settled(timeoutMs: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all(this.#ended), new Promise((resolveWait) => (timer = setTimeout(resolveWait, timeoutMs)))]);
    clearTimeout(timer);
  }

  /** The last non-empty lines, without terminal control sequences; '' when the console printed nothing. */
  lines(): string[] {
    const lines = this.#text
      .replace(ansiSequence, '')
      .split(/\r?\n|\r/)
      // eslint-disable-next-line no-control-regex -- so are the other control characters
      .map((line) => line.replace(/[\x00-\x08\x0b-\x1f\x7f]/g, '').trimEnd())
      .filter((line) => line.trim() !== '');
    const tail = lines.slice(-this.#maxLines);
    while (tail.length > 1 && tail.join('\n').length > this.#maxChars) tail.shift();
    return tail.map((line) => (line.length > this.#maxChars ? `…${line.slice(-this.#maxChars)}` : line));
  }

  /** For an error message: the tail, indented, or a note that the console stayed empty. */
  describe(): string {
    const lines = this.lines();
    if (lines.length === 0) return 'its console printed nothing (see sandbox.log in the job\'s logs)';
    return `the last lines of its console (all of it is in sandbox.log in the job's logs):\n${lines.map((line) => `  ${line}`).join('\n')}`;
  }
}
