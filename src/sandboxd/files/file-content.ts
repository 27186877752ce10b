// Content of workspace files for the file routes: ETags (the SHA-256 of the bytes, a strong validator), a cache of
// them keyed by what the file system says about a file (so a listing or a second GET does not read it again), the
// Content-Type a file is served with, and a read stream that fails rather than deliver bytes that do not match the ETag
// it was sent with (a file changed while it was being sent).
import type { BigIntStats } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { etagPattern } from '../protocol.ts';

export function etagOf(sha256Hex: string): string {
  return `"${sha256Hex}"`;
}

export function isEtag(value: string | undefined): value is string {
  return value !== undefined && etagPattern.test(value);
}

/**
 * SHA-256s of files by identity: device, inode, size, mtime and ctime (ns). ctime cannot be set by a program, so any
 * change of content gives a new key; the cache is bounded (least recently used out first).
 */
export class HashCache {
  readonly #entries = new Map<string, string>();
  readonly #capacity: number;

  constructor(capacity = 20_000) {
    this.#capacity = capacity;
  }

  static key(stats: BigIntStats): string {
    return `${stats.dev}:${stats.ino}:${stats.size}:${stats.mtimeNs}:${stats.ctimeNs}`;
  }

  get(stats: BigIntStats): string | undefined {
    const key = HashCache.key(stats);
    const hex = this.#entries.get(key);
    if (hex !== undefined) {
      this.#entries.delete(key);
      this.#entries.set(key, hex);
    }
    return hex;
  }

  set(stats: BigIntStats, hex: string): void {
    const key = HashCache.key(stats);
    this.#entries.delete(key);
    this.#entries.set(key, hex);
    if (this.#entries.size > this.#capacity) this.#entries.delete(this.#entries.keys().next().value as string);
  }
}

const chunkBytes = 1 << 20;
/** Bytes looked at to tell text from binary (as git does: a NUL in the first 8000 bytes means binary). */
export const sniffBytes = 8000;

/** Reads an open file from its start: its SHA-256 (hex) and its first bytes. Reads exactly `size` bytes at most. */
export async function hashOpenFile(handle: FileHandle, size: number): Promise<{ hex: string; head: Buffer }> {
  const hash = createHash('sha256');
  let head = Buffer.alloc(0);
  const buffer = Buffer.allocUnsafe(Math.min(chunkBytes, Math.max(size, 1)));
  let position = 0;
  while (position < size) {
    const { bytesRead } = await handle.read(buffer, 0, Math.min(buffer.length, size - position), position);
    if (bytesRead === 0) break;
    const chunk = buffer.subarray(0, bytesRead);
    if (head.length < sniffBytes) head = Buffer.concat([head, chunk.subarray(0, sniffBytes - head.length)]);
    hash.update(chunk);
    position += bytesRead;
  }
  return { hex: hash.digest('hex'), head };
}

/** The first bytes of an open file (for its Content-Type when its hash came from the cache). */
export async function readHead(handle: FileHandle, size: number): Promise<Buffer> {
  const buffer = Buffer.alloc(Math.min(size, sniffBytes));
  const { bytesRead } = await handle.read(buffer, 0, buffer.length, 0);
  return buffer.subarray(0, bytesRead);
}

const byExtension: Record<string, string> = {
  txt: 'text/plain', log: 'text/plain', md: 'text/markdown', csv: 'text/csv', tsv: 'text/tab-separated-values',
  html: 'text/html', htm: 'text/html', css: 'text/css', xml: 'application/xml', svg: 'image/svg+xml', xhtml: 'application/xhtml+xml',
  js: 'text/javascript', mjs: 'text/javascript', cjs: 'text/javascript', ts: 'text/x-typescript', tsx: 'text/x-typescript', jsx: 'text/javascript',
  json: 'application/json', ipynb: 'application/x-ipynb+json', yaml: 'application/yaml', yml: 'application/yaml', toml: 'application/toml',
  py: 'text/x-python', sh: 'text/x-shellscript', c: 'text/x-c', h: 'text/x-c', cpp: 'text/x-c++', rs: 'text/x-rust', go: 'text/x-go',
  java: 'text/x-java', rb: 'text/x-ruby', sql: 'application/sql', diff: 'text/x-diff', patch: 'text/x-diff',
  png: 'image/png', jpg: 'image/jpeg', jpeg: 'image/jpeg', gif: 'image/gif', webp: 'image/webp', ico: 'image/vnd.microsoft.icon',
  pdf: 'application/pdf', zip: 'application/zip', gz: 'application/gzip', tgz: 'application/gzip', tar: 'application/x-tar',
  wasm: 'application/wasm', mp3: 'audio/mpeg', wav: 'audio/wav', mp4: 'video/mp4', webm: 'video/webm',
};
/** Types shown as text: served with `; charset=utf-8` when their bytes are UTF-8. */
const textual = (type: string) => type.startsWith('text/') || /^application\/(json|x-ipynb\+json|yaml|toml|sql|xml|xhtml\+xml)$/.test(type) || type === 'image/svg+xml';
/** Types a browser would run (scripts, frames): served as attachments, never rendered on the API's origin. */
export const activeContentTypes: ReadonlySet<string> = new Set(['text/html', 'application/xhtml+xml', 'image/svg+xml', 'application/xml', 'application/pdf']);

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Text by git's rule (no NUL in the first 8000 bytes) and valid UTF-8 (a character cut at the end of `head` allowed). */
export function looksLikeUtf8Text(head: Buffer, complete: boolean): boolean {
  if (head.includes(0)) return false;
  for (let cut = 0; cut <= (complete ? 0 : 3) && cut <= head.length; cut++) {
    try {
      utf8.decode(head.subarray(0, head.length - cut));
      return true;
    } catch {
      // try again without a possibly cut last character
    }
  }
  return false;
}

/** The Content-Type of a file from its name's extension and its first bytes; text gets a charset. */
export function contentTypeFor(name: string, head: Buffer, size: number): string {
  const dot = name.lastIndexOf('.');
  const known = dot > 0 ? byExtension[name.slice(dot + 1).toLowerCase()] : undefined;
  const text = looksLikeUtf8Text(head, head.length >= size);
  if (known !== undefined) return textual(known) && text ? `${known}; charset=utf-8` : known;
  return text ? 'text/plain; charset=utf-8' : 'application/octet-stream';
}

/** Every Content-Type contentTypeFor can give: the host accepts no other from a sandbox. */
export const knownContentTypes: ReadonlySet<string> = new Set([
  'application/octet-stream',
  'text/plain; charset=utf-8',
  ...Object.values(byExtension),
  ...Object.values(byExtension).filter(textual).map((type) => `${type}; charset=utf-8`),
]);

/**
 * The first `size` bytes of an open file as a stream that holds each chunk back until the next one is read, and the
 * last until the whole content's SHA-256 is known: when it is not `expectedHex` (the file changed since its ETag was
 * computed) the stream fails instead of sending the rest, so a client never gets a complete body with a wrong ETag.
 * Closes the handle when done.
 */
export function verifiedReadStream(handle: FileHandle, size: number, expectedHex: string): Readable {
  const hash = createHash('sha256');
  let position = 0;
  let held: Buffer | undefined;
  const stream = new Readable({
    highWaterMark: chunkBytes,
    read() {
      void (async () => {
        try {
          for (;;) {
            if (position >= size) {
              if (hash.digest('hex') !== expectedHex) throw new Error('the file changed while it was being sent');
              if (held !== undefined) this.push(held);
              held = undefined;
              this.push(null);
              return;
            }
            const buffer = Buffer.allocUnsafe(Math.min(chunkBytes, size - position));
            const { bytesRead } = await handle.read(buffer, 0, buffer.length, position);
            if (bytesRead === 0) throw new Error('the file got shorter while it was being sent');
            const chunk = buffer.subarray(0, bytesRead);
            hash.update(chunk);
            position += bytesRead;
            const previous = held;
            held = chunk;
            if (previous !== undefined) {
              this.push(previous);
              return;
            }
          }
        } catch (error) {
          this.destroy(error instanceof Error ? error : new Error(String(error)));
        }
      })();
    },
    destroy(error, callback) {
      handle.close().then(
        () => callback(error),
        () => callback(error),
      );
    },
  });
  return stream;
}
