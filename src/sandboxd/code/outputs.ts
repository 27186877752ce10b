// What one run_code execution produced, collected from the kernel's messages in the order they came, with caps: a
// loop that prints gigabytes or displays thousands of plots costs sandboxd a bounded amount of memory and the caller a
// bounded response. Stream text keeps its first `headBytes` in order and the last `tailBytes` of what follows (per
// stream); results, displays and errors are cut head and tail one by one; images beyond `maxImages` or larger than
// `maxImageBytes` are dropped and counted. ANSI escapes are removed from all text (tracebacks come coloured).
import type { CodeOutput } from '../protocol.ts';
import { OutputCapture } from '../shell/output-capture.ts';

export interface OutputCaps {
  /** Stream text kept in order from the start. */
  headBytes: number;
  /** Stream text kept from the end of what overflowed the head, per stream. */
  tailBytes: number;
  /** Text of one result, display or traceback. */
  partBytes: number;
  /** Results, displays, errors and images kept in all. */
  maxParts: number;
  maxImages: number;
  /** Base64 characters of one image. */
  maxImageBytes: number;
}

export const defaultOutputCaps: OutputCaps = {
  headBytes: 512 * 1024,
  tailBytes: 256 * 1024,
  partBytes: 64 * 1024,
  maxParts: 200,
  maxImages: 8,
  maxImageBytes: 4 * 1024 * 1024,
};

const imageTypes = ['image/png', 'image/jpeg', 'image/gif'] as const;

// CSI sequences (colours, cursor moves), OSC sequences (titles, links), character set selections and the remaining
// two-byte escapes.
// eslint-disable-next-line no-control-regex -- matching escape characters is the point
const ansiPattern = /\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()*+#][0-9A-Za-z]|\x1b[@-Z\\-_]/g;

export function stripAnsi(text: string): string {
  return text.replace(ansiPattern, '');
}

/** Jupyter's MIME bundle: text values may come as a string or as a list of lines. */
export type MimeBundle = Record<string, unknown>;

function bundleText(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (Array.isArray(value) && value.every((line) => typeof line === 'string')) return value.join('');
  return undefined;
}

export class OutputCollector {
  readonly #caps: OutputCaps;
  readonly #outputs: CodeOutput[] = [];
  #headUsed = 0;
  readonly #tails = new Map<'stdout' | 'stderr', OutputCapture>();
  #omittedBytes = 0;
  #omittedOutputs = 0;
  #parts = 0;
  #images = 0;
  /** Why images were left out (said once, at the end). */
  readonly #imagesLeftOut = new Set<string>();

  constructor(caps: OutputCaps = defaultOutputCaps) {
    this.#caps = caps;
  }

  stream(name: 'stdout' | 'stderr', raw: string): void {
    const text = stripAnsi(raw);
    if (text === '') return;
    const bytes = Buffer.byteLength(text);
    if (this.#tails.size === 0 && this.#headUsed + bytes <= this.#caps.headBytes) {
      this.#headUsed += bytes;
      const last = this.#outputs.at(-1);
      if (last?.type === 'stream' && last.name === name) last.text += text;
      else this.#outputs.push({ type: 'stream', name, text });
      return;
    }
    // The head is full: fill it to the brim, and the rest goes to this stream's tail.
    let rest = Buffer.from(text);
    if (this.#tails.size === 0) {
      const room = this.#caps.headBytes - this.#headUsed;
      const fits = utf8Prefix(rest, room);
      if (fits.length > 0) this.stream(name, fits.toString('utf8'));
      rest = rest.subarray(fits.length);
      this.#headUsed = this.#caps.headBytes;
    }
    let tail = this.#tails.get(name);
    if (tail === undefined) this.#tails.set(name, (tail = new OutputCapture(0, this.#caps.tailBytes)));
    tail.append(rest);
  }

  /** execute_result: its text/plain (the value's repr). */
  result(data: MimeBundle): void {
    this.#rich(data, 'result');
  }

  /** display_data / update_display_data, or a help page: an image when it has one, else its text. */
  display(data: MimeBundle): void {
    this.#rich(data, 'display');
  }

  error(name: string, message: string, traceback: readonly string[]): void {
    if (!this.#roomForPart()) return;
    this.#outputs.push({
      type: 'error',
      name: stripAnsi(name),
      message: this.#capText(stripAnsi(message)),
      traceback: this.#capText(stripAnsi(traceback.join('\n'))),
    });
  }

  get omittedBytes(): number {
    let tailOmitted = 0;
    for (const tail of this.#tails.values()) tailOmitted += tail.omittedBytes;
    return this.#omittedBytes + tailOmitted;
  }

  get omittedOutputs(): number {
    return this.#omittedOutputs;
  }

  get hasError(): boolean {
    return this.#outputs.some((output) => output.type === 'error');
  }

  /** The outputs in order; the tails of overflowing streams last, each starting with a note of what was left out. */
  outputs(): CodeOutput[] {
    const outputs = this.#outputs.map((output) => ({ ...output }));
    // A capture with no head: its text is the kept tail, after a note of what was left out (if anything was).
    for (const [name, tail] of this.#tails) outputs.push({ type: 'stream', name, text: tail.text() });
    if (this.#imagesLeftOut.size > 0) {
      outputs.push({ type: 'stream', name: 'stderr', text: `[images were left out: ${[...this.#imagesLeftOut].join('; ')}. Save figures to files (plt.savefig) instead]\n` });
    }
    return outputs;
  }

  #rich(data: MimeBundle, kind: 'result' | 'display'): void {
    const plain = bundleText(data['text/plain']);
    const image = imageTypes.find((type) => typeof data[type] === 'string');
    if (image !== undefined) {
      const base64 = (data[image] as string).replace(/\s+/g, '');
      const tooMany = this.#images >= this.#caps.maxImages;
      if (tooMany || base64.length > this.#caps.maxImageBytes) {
        this.#omittedOutputs++;
        this.#imagesLeftOut.add(tooMany ? `more than ${this.#caps.maxImages} images in one call` : `larger than ${this.#caps.maxImageBytes} bytes of base64`);
        return;
      }
      if (!this.#roomForPart()) return;
      this.#images++;
      this.#outputs.push({ type: 'image', mime_type: image, data_base64: base64, ...(plain === undefined ? {} : { text: this.#capText(stripAnsi(plain)) }) });
      return;
    }
    if (!this.#roomForPart()) return;
    let text = plain === undefined ? undefined : stripAnsi(plain);
    if (text === undefined) {
      const types = Object.keys(data);
      if (types.length === 0) return;
      text = `[output of type ${types.join(', ')}, which has no text form]`;
    }
    this.#outputs.push({ type: kind, text: this.#capText(text) });
  }

  #roomForPart(): boolean {
    if (this.#parts >= this.#caps.maxParts) {
      this.#omittedOutputs++;
      return false;
    }
    this.#parts++;
    return true;
  }

  #capText(text: string): string {
    if (Buffer.byteLength(text) <= this.#caps.partBytes) return text;
    const capture = new OutputCapture(this.#caps.partBytes / 2, this.#caps.partBytes / 2);
    capture.append(Buffer.from(text));
    this.#omittedBytes += capture.omittedBytes;
    return capture.text();
  }
}

/** The longest prefix of `buffer` of at most `limit` bytes that does not end inside a UTF-8 character. */
function utf8Prefix(buffer: Buffer, limit: number): Buffer {
  if (buffer.length <= limit) return buffer;
  let end = Math.max(0, limit);
  while (end > 0 && ((buffer[end] as number) & 0xc0) === 0x80) end--;
  return buffer.subarray(0, end);
}
