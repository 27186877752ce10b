// Unpacks a job's output.zip for `workcell download --extract`. The zip's contents were made by an agent, so this must
// never write outside the destination: every entry name is checked before anything is written (one bad name refuses
// the whole zip), nothing is written through a symlink (neither one in the zip nor one already in the destination),
// symlinks are created last and only when their target stays inside, and the total size is capped against zip bombs.
import { constants } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { lstat, mkdir, open, realpath, symlink, unlink } from 'node:fs/promises';
import path from 'node:path';
import { Transform } from 'node:stream';
import type { TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { getFileNameLowLevel, openPromise } from 'yauzl';
import type { Entry, ZipFile } from 'yauzl';
import { WorkcellError } from '../errors.ts';
import { archiveNameProblem, fileTypeOf, symlinkTargetProblem, unixFileType } from '../jobs/artifacts.ts';
import { terminalSafe } from './terminal-safe.ts';

export interface ExtractZipOptions {
  /** Cap on the total uncompressed size (default 20 GiB). */
  maxBytes?: number;
  /** Cap on the number of entries (default 1,000,000). */
  maxEntries?: number;
  signal?: AbortSignal;
}

export interface ExtractZipResult {
  files: number;
  directories: number;
  symlinks: number;
}

export const defaultMaxExtractBytes = 20 * 1024 ** 3;
export const defaultMaxExtractEntries = 1_000_000;
/** Longer link text is not a path any system would resolve. */
const maxSymlinkTargetBytes = 4095;
const unixHost = 3;
const utf8 = new TextDecoder('utf-8', { fatal: true });

interface PlannedEntry {
  /** Normalised: no `.` or empty segments, no trailing slash. */
  name: string;
  kind: 'file' | 'directory' | 'symlink';
  /** Permission bits only: set-id and sticky bits from an archive are never applied. */
  mode: number;
  mtime: Date;
  entry: Entry;
  target?: string;
}

/**
 * Control characters shown escaped (JSON's escapes, then terminalSafe for DEL, C1 and bidi controls, which JSON leaves),
 * so that an entry name can neither forge lines nor send escape sequences to a terminal.
 */
function shown(name: string): string {
  return terminalSafe(JSON.stringify(name).slice(1, -1).replaceAll('\\"', '"'));
}

function refuse(name: string, why: string, code: 'invalid_request' | 'payload_too_large' = 'invalid_request') {
  return new WorkcellError(code, `zip entry '${shown(name)}' ${why}`, { details: { entry: name } });
}

function errorCode(error: unknown): string | undefined {
  return error instanceof Error && 'code' in error && typeof error.code === 'string' ? error.code : undefined;
}

/**
 * Extracts `zipFile` into `destDir` (created if missing). Refuses the whole zip, before writing anything, if any
 * entry name could escape the destination, a symlink entry points outside it, an entry lies under a symlink or file
 * entry, a name repeats, or the declared total size is over `maxBytes`. Existing regular files and symlinks in the
 * way are replaced (a symlink is unlinked, never written through); an existing symlink as a parent directory stops
 * the extraction with an error.
 */
export async function extractZip(
  zipFile: string,
  destDir: string,
  options: ExtractZipOptions = {},
): Promise<ExtractZipResult> {
  options.signal?.throwIfAborted();
  const zip = await openPromise(zipFile, {
    lazyEntries: true,
    autoClose: false,
    // Names are decoded and checked here, so that the refusal names the entry and says why.
    decodeStrings: false,
    validateEntrySizes: true,
  });
  try {
    const planned = await planEntries(zip, options);
    return await writeEntries(zip, planned, destDir, options);
  } finally {
    zip.close();
  }
}

async function planEntries(zip: ZipFile, options: ExtractZipOptions): Promise<PlannedEntry[]> {
  const maxBytes = options.maxBytes ?? defaultMaxExtractBytes;
  const maxEntries = options.maxEntries ?? defaultMaxExtractEntries;
  const planned: PlannedEntry[] = [];
  const kinds = new Map<string, PlannedEntry['kind']>();
  let totalBytes = 0;

  // First pass: names, types and sizes from the central directory; nothing is read or written yet.
  for await (const entry of zip.eachEntry()) {
    options.signal?.throwIfAborted();
    const rawName = getFileNameLowLevel(entry.generalPurposeBitFlag, entry.fileNameRaw, entry.extraFields, true);
    if (planned.length >= maxEntries) {
      throw refuse(rawName, `is past the limit of ${maxEntries} entries: refused (is this a zip bomb?)`, 'payload_too_large');
    }
    const looksLikeDirectory = rawName.endsWith('/');
    const problem = archiveNameProblem(rawName);
    if (problem !== undefined) throw refuse(rawName, `would escape the destination: refused (${problem})`);
    const name = rawName
      .split('/')
      .filter((segment) => segment !== '' && segment !== '.')
      .join('/');

    const isUnix = entry.versionMadeBy >> 8 === unixHost;
    const unixMode = isUnix ? entry.externalFileAttributes >>> 16 : 0;
    const type = fileTypeOf(unixMode);
    let kind: PlannedEntry['kind'];
    if (type === unixFileType.symlink) kind = 'symlink';
    else if (looksLikeDirectory || type === unixFileType.directory) kind = 'directory';
    else if (type === unixFileType.file || type === 0) kind = 'file';
    else throw refuse(rawName, `has an unsupported file type (mode ${unixMode.toString(8)}): refused`);
    if (name === '') {
      if (kind === 'directory') continue; // `./` is the destination itself
      throw refuse(rawName, 'has no name: refused');
    }
    if (kinds.has(name)) throw refuse(rawName, 'appears twice in the zip: refused');
    if (entry.isEncrypted()) throw refuse(rawName, 'is encrypted, which is not supported: refused');
    if (kind !== 'directory' && !entry.canDecodeFileData()) {
      throw refuse(rawName, `uses compression method ${entry.compressionMethod}, which is not supported: refused`);
    }
    if (kind === 'symlink' && entry.uncompressedSize > maxSymlinkTargetBytes) {
      throw refuse(rawName, 'is a symlink with an over-long target: refused');
    }
    totalBytes += entry.uncompressedSize;
    if (totalBytes > maxBytes) {
      throw refuse(
        rawName,
        `takes the zip past ${maxBytes} uncompressed bytes: refused (is this a zip bomb? pass a larger limit if not)`,
        'payload_too_large',
      );
    }
    const permissions = unixMode & 0o777;
    const mode = permissions !== 0 ? permissions : kind === 'directory' ? 0o755 : 0o644;
    planned.push({ name, kind, mode, mtime: entry.getLastModDate(), entry });
    kinds.set(name, kind);
  }

  for (const item of planned) {
    // An entry under a symlink entry would be written through the link; one under a file entry cannot exist.
    const segments = item.name.split('/');
    for (let depth = 1; depth < segments.length; depth += 1) {
      const parent = segments.slice(0, depth).join('/');
      const parentKind = kinds.get(parent);
      if (parentKind === 'symlink') {
        throw refuse(item.name, `lies under the symlink entry '${shown(parent)}' and would be written through it: refused`);
      }
      if (parentKind === 'file') throw refuse(item.name, `lies under '${shown(parent)}', which is a file: refused`);
    }
    if (item.kind === 'symlink') {
      const text = await readSmallEntry(zip, item.entry);
      let target: string;
      try {
        target = utf8.decode(text);
      } catch {
        throw refuse(item.name, 'is a symlink whose target is not valid UTF-8: refused');
      }
      const targetProblem = symlinkTargetProblem(item.name, target, 'the destination');
      if (targetProblem !== undefined) {
        throw refuse(item.name, `is a symlink to '${shown(target)}' that would escape the destination: refused (${targetProblem})`);
      }
      item.target = target;
    }
  }
  return planned;
}

async function readSmallEntry(zip: ZipFile, entry: Entry): Promise<Buffer> {
  const stream = await zip.openReadStreamPromise(entry);
  const chunks: Buffer[] = [];
  let length = 0;
  for await (const chunk of stream) {
    const buffer = chunk as Buffer;
    length += buffer.length;
    if (length > maxSymlinkTargetBytes) {
      stream.destroy();
      throw new WorkcellError('invalid_request', 'a symlink entry holds more data than it declared: refused');
    }
    chunks.push(buffer);
  }
  return Buffer.concat(chunks);
}

/** Counts bytes as they stream, failing past the cap even if an entry lied about its size. */
class ByteLimit extends Transform {
  readonly counter: { bytes: number };
  readonly maxBytes: number;

  constructor(counter: { bytes: number }, maxBytes: number) {
    super();
    this.counter = counter;
    this.maxBytes = maxBytes;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.counter.bytes += chunk.length;
    if (this.counter.bytes > this.maxBytes) {
      callback(new WorkcellError('payload_too_large', `the zip holds more than ${this.maxBytes} uncompressed bytes: refused`));
      return;
    }
    callback(null, chunk);
  }
}

async function writeEntries(
  zip: ZipFile,
  planned: PlannedEntry[],
  destDir: string,
  options: ExtractZipOptions,
): Promise<ExtractZipResult> {
  const { signal } = options;
  await mkdir(destDir, { recursive: true });
  const root = await realpath(destDir);
  const verifiedDirectories = new Set<string>(['']);
  const counter = { bytes: 0 };
  const maxBytes = options.maxBytes ?? defaultMaxExtractBytes;
  const result: ExtractZipResult = { files: 0, directories: 0, symlinks: 0 };

  /** Makes sure every directory from the root down to `name` is a real directory, creating missing ones. */
  const ensureDirectory = async (name: string): Promise<void> => {
    if (verifiedDirectories.has(name)) return;
    const parent = name.includes('/') ? name.slice(0, name.lastIndexOf('/')) : '';
    await ensureDirectory(parent);
    const target = path.join(root, name);
    try {
      await mkdir(target, 0o755);
    } catch (error) {
      if (errorCode(error) !== 'EEXIST') throw error;
    }
    const stats = await lstat(target);
    if (!stats.isDirectory()) {
      throw new WorkcellError(
        'conflict',
        `'${shown(name)}' in the destination is ${stats.isSymbolicLink() ? 'a symlink' : 'not a directory'}, ` +
          'so nothing is written under it; move it away or extract elsewhere',
        { details: { entry: name } },
      );
    }
    verifiedDirectories.add(name);
  };
  const parentOf = (name: string) => (name.includes('/') ? name.slice(0, name.lastIndexOf('/')) : '');

  /** Clears a leaf path for a new file or symlink: a regular file or symlink there is removed, anything else refused. */
  const clearLeaf = async (name: string, replaceFiles: boolean): Promise<void> => {
    const target = path.join(root, name);
    let stats;
    try {
      stats = await lstat(target);
    } catch (error) {
      if (errorCode(error) === 'ENOENT') return;
      throw error;
    }
    // Unlinking a symlink removes the link itself; it never touches what the link points to.
    if (stats.isSymbolicLink() || (replaceFiles && stats.isFile())) await unlink(target);
    else if (!stats.isFile()) {
      throw new WorkcellError(
        'conflict',
        `'${shown(name)}' already exists in the destination and is not a regular file; move it away or extract elsewhere`,
        { details: { entry: name } },
      );
    }
  };

  const directories: PlannedEntry[] = [];
  for (const item of planned) {
    signal?.throwIfAborted();
    if (item.kind === 'directory') {
      await ensureDirectory(item.name);
      directories.push(item);
      result.directories += 1;
    } else if (item.kind === 'file') {
      await ensureDirectory(parentOf(item.name));
      await clearLeaf(item.name, false);
      await writeFile(zip, item, path.join(root, item.name), new ByteLimit(counter, maxBytes), signal);
      result.files += 1;
    }
  }
  // Symlinks last, so that no entry of this zip can be written through one.
  for (const item of planned) {
    if (item.kind !== 'symlink' || item.target === undefined) continue;
    signal?.throwIfAborted();
    await ensureDirectory(parentOf(item.name));
    await clearLeaf(item.name, true);
    await symlink(item.target, path.join(root, item.name));
    result.symlinks += 1;
  }
  // Directory modes last too (deepest first), so that a read-only directory does not stop its own contents.
  directories.sort((a, b) => b.name.split('/').length - a.name.split('/').length);
  for (const item of directories) {
    const handle = await open(path.join(root, item.name), constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
    try {
      await handle.chmod(item.mode);
      await handle.utimes(item.mtime, item.mtime);
    } finally {
      await handle.close();
    }
  }
  return result;
}

async function writeFile(
  zip: ZipFile,
  item: PlannedEntry,
  target: string,
  limit: ByteLimit,
  signal: AbortSignal | undefined,
): Promise<void> {
  // O_NOFOLLOW: a symlink that appeared in the meantime fails the open instead of being written through.
  // O_NONBLOCK: a FIFO in the way fails (or opens) at once instead of blocking; fstat then refuses it.
  const flags =
    constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW | constants.O_NONBLOCK | constants.O_NOCTTY;
  let handle: FileHandle;
  try {
    handle = await open(target, flags, 0o600);
  } catch (error) {
    if (errorCode(error) === 'ELOOP') throw refuse(item.name, 'would be written through a symlink in the destination: refused');
    throw error;
  }
  try {
    const stats = await handle.stat();
    if (!stats.isFile()) throw refuse(item.name, 'would be written over something that is not a regular file: refused');
    const input = await zip.openReadStreamPromise(item.entry);
    // Written by hand rather than through handle.createWriteStream(): the descriptor must stay open for the
    // chmod and utimes below, and a FileHandle stream that does not close its handle keeps close() waiting forever.
    await pipeline(input, limit, async (source: AsyncIterable<Buffer>) => {
      for await (const chunk of source) await writeAll(handle, chunk);
    }, { signal });
    await handle.chmod(item.mode);
    await handle.utimes(item.mtime, item.mtime);
  } finally {
    await handle.close();
  }
}

async function writeAll(handle: FileHandle, chunk: Buffer): Promise<void> {
  let offset = 0;
  while (offset < chunk.length) {
    const { bytesWritten } = await handle.write(chunk, offset, chunk.length - offset);
    offset += bytesWritten;
  }
}
