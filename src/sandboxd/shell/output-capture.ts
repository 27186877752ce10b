// Bounded capture of a command's output: the first `headBytes` and the last `tailBytes` are kept, the middle is
// counted and dropped. A command that prints gigabytes costs sandboxd at most head + tail of memory; the model
// sees the start (usually the command's own header or first error) and the end (usually the result).
export class OutputCapture {
  readonly #headLimit: number;
  readonly #tailLimit: number;
  readonly #head: Buffer[] = [];
  #headSize = 0;
  #tail: Buffer[] = [];
  #tailSize = 0;
  #omitted = 0;
  /** Bytes dropped before this capture's input reached it (see countOmitted). */
  #omittedElsewhere = 0;

  constructor(headBytes: number, tailBytes: number) {
    this.#headLimit = headBytes;
    this.#tailLimit = tailBytes;
  }

  append(chunk: Buffer): void {
    if (chunk.length === 0) return;
    if (this.#headSize < this.#headLimit) {
      const take = Math.min(chunk.length, this.#headLimit - this.#headSize);
      this.#head.push(chunk.subarray(0, take));
      this.#headSize += take;
      chunk = chunk.subarray(take);
      if (chunk.length === 0) return;
    }
    // Copy: the caller may reuse its buffer, and a small subarray must not pin a large one.
    this.#tail.push(Buffer.from(chunk));
    this.#tailSize += chunk.length;
    while (this.#tailSize > this.#tailLimit) {
      const first = this.#tail[0] as Buffer;
      const excess = this.#tailSize - this.#tailLimit;
      if (first.length <= excess) {
        this.#tail.shift();
        this.#tailSize -= first.length;
        this.#omitted += first.length;
      } else {
        this.#tail[0] = first.subarray(excess);
        this.#tailSize -= excess;
        this.#omitted += excess;
      }
    }
  }

  /** Counts bytes that were dropped before they got here (when one capture's text is appended to another). */
  countOmitted(bytes: number): void {
    this.#omittedElsewhere += bytes;
  }

  /** Bytes dropped from the middle (plus the few bytes of a UTF-8 character cut in two at either edge). */
  get omittedBytes(): number {
    const edges = this.#edgeBytes();
    return this.#omittedElsewhere + this.#omitted + edges.head + edges.tail;
  }

  get totalBytes(): number {
    return this.#headSize + this.#omitted + this.#tailSize;
  }

  /** The kept output as text; when the middle was dropped, a line saying how much stands in its place. */
  text(): string {
    const head = Buffer.concat(this.#head, this.#headSize);
    if (this.#omitted === 0) return Buffer.concat([head, ...this.#tail]).toString('utf8');
    const edges = this.#edgeBytes();
    const tail = Buffer.concat(this.#tail, this.#tailSize);
    const omitted = this.#omitted + edges.head + edges.tail;
    return (
      head.subarray(0, head.length - edges.head).toString('utf8') +
      `\n[... ${omitted} bytes of output omitted ...]\n` +
      tail.subarray(edges.tail).toString('utf8')
    );
  }

  /** How many bytes to trim so that neither edge of the gap splits a UTF-8 character. */
  #edgeBytes(): { head: number; tail: number } {
    if (this.#omitted === 0) return { head: 0, tail: 0 };
    const head = Buffer.concat(this.#head.slice(-2));
    let headTrim = 0;
    // Walk back over continuation bytes to the lead byte; trim the character if it is incomplete.
    for (let i = head.length - 1; i >= 0 && i >= head.length - 4; i--) {
      const byte = head[i] as number;
      if ((byte & 0xc0) === 0x80) continue;
      const needed = byte >= 0xf0 ? 4 : byte >= 0xe0 ? 3 : byte >= 0xc0 ? 2 : 1;
      if (head.length - i < needed) headTrim = head.length - i;
      break;
    }
    const tail = this.#tail[0];
    let tailTrim = 0;
    while (tail !== undefined && tailTrim < Math.min(3, tail.length) && ((tail[tailTrim] as number) & 0xc0) === 0x80) tailTrim++;
    return { head: headTrim, tail: tailTrim };
  }
}
