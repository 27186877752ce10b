// Unpacks one uploaded archive (tar, tar.gz/tgz or zip, told apart by their first bytes, not by the file name) into an
// UploadTree, which enforces the rules and limits for every entry. This module refuses what the tree cannot hold: hard
// links, devices, FIFOs, encrypted or oddly compressed zip entries, archives that are none of the three. tar streams
// (entries arrive in order, each refused or written as it comes); a zip is spooled to a file first, because its index
// is at the end. Gzip output is capped, so a gzip bomb stops at the upload's limit instead of filling anything.
import { createWriteStream } from 'node:fs';
import { Readable, Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { extract as tarExtract, type Header as TarHeader } from 'tar-stream';
import { getFileNameLowLevel, openPromise, type Entry as ZipEntry, type ZipFile } from 'yauzl';
import { WorkcellError } from '../../errors.ts';
import { fileTypeOf, unixFileType } from '../artifacts.ts';
import { refuseEntry, type UploadLimits, type UploadTree } from './upload-tree.ts';

/** Longer link text is not a path any system resolves. */
const maxSymlinkTargetBytes = 4095;
const unixHost = 3;
const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Unpacks `source` into `tree`. `spoolPath` is where a zip is kept while it is read (outside the tree; the caller
 * deletes it with its staging directory).
 */
export async function unpackArchive(source: AsyncIterable<Buffer>, tree: UploadTree, limits: UploadLimits, spoolPath: string): Promise<void> {
  const { head, rest } = await peek(source, 512);
  if (head.length === 0) throw new WorkcellError('invalid_request', 'the archive part is empty: send a tar, tar.gz or zip file');
  if (head[0] === 0x1f && head[1] === 0x8b) {
    // Headers and padding take at most about 1.5 KiB per entry beyond the content the tree counts.
    const cap = limits.maxBytes + (limits.maxEntries + 2) * 1536 + (1 << 20);
    return unpackTar(rest, tree, [createGunzip(), new ByteCap(cap)]);
  }
  if (head.subarray(0, 2).toString('latin1') === 'PK') return unpackZip(rest, tree, limits, spoolPath);
  return unpackTar(rest, tree, []);
}

async function unpackTar(source: AsyncIterable<Buffer>, tree: UploadTree, transforms: Transform[]): Promise<void> {
  const extract = tarExtract();
  const feeding = pipeline([Readable.from(source), ...transforms, extract]);
  // The feeding side's failure (a bad gzip stream, the cap) ends the iteration below; keep its reason.
  let feedError: unknown;
  feeding.catch((error: unknown) => {
    feedError = error;
  });
  try {
    for await (const entry of extract) {
      await addTarEntry(entry.header, entry as AsyncIterable<Buffer>, tree);
      entry.resume(); // whatever the entry held beyond what was read (nothing for files)
    }
    await feeding;
  } catch (error) {
    // An entry refused is the reason; otherwise what broke the feeding side (a bad gzip stream, the cap), if anything.
    const reason = error instanceof WorkcellError ? error : (feedError ?? error);
    extract.destroy();
    await feeding.catch(() => undefined);
    throw tarFailure(reason);
  }
}

async function addTarEntry(header: TarHeader, content: AsyncIterable<Buffer>, tree: UploadTree): Promise<void> {
  const name = header.name;
  const options = { mode: header.mode, mtime: header.mtime };
  switch (header.type) {
    case 'file':
    case 'contiguous-file':
      return tree.file('archive entry', name, content, { ...options, declaredSize: header.size ?? 0 });
    case 'directory':
      return tree.directory('archive entry', name, options);
    case 'symlink':
      return tree.symlink('archive entry', name, header.linkname ?? '');
    case 'link':
      throw refuseEntry('archive entry', name, `is a hard link (to ${JSON.stringify(header.linkname ?? '')}): refused (uploads hold regular files, directories and symlinks that stay inside)`);
    case 'character-device':
    case 'block-device':
      throw refuseEntry('archive entry', name, 'is a device: refused (uploads hold regular files, directories and symlinks)');
    case 'fifo':
      throw refuseEntry('archive entry', name, 'is a FIFO: refused (uploads hold regular files, directories and symlinks)');
    default:
      throw refuseEntry('archive entry', name, `has an unsupported type (${String(header.type)}): refused`);
  }
}

function tarFailure(error: unknown): unknown {
  if (error instanceof WorkcellError) return error;
  const message = error instanceof Error ? error.message : String(error);
  if (/incorrect header check|invalid|unexpected end|unknown format|header/i.test(message)) {
    return new WorkcellError('invalid_request', `the archive part is not a tar, tar.gz (tgz) or zip file, or it is damaged (${message}): send one of those (bzip2, xz and 7z are not supported)`);
  }
  return error;
}

async function unpackZip(source: AsyncIterable<Buffer>, tree: UploadTree, limits: UploadLimits, spoolPath: string): Promise<void> {
  const spool = createWriteStream(spoolPath, { flags: 'wx', mode: 0o600 });
  await pipeline(Readable.from(source), spool);
  let zip;
  try {
    // Names are decoded and checked here, so that a refusal names the entry; sizes are checked against the data.
    zip = await openPromise(spoolPath, { lazyEntries: true, autoClose: false, decodeStrings: false, validateEntrySizes: true });
  } catch (error) {
    throw new WorkcellError('invalid_request', `the zip archive cannot be read (${error instanceof Error ? error.message : String(error)}): send a complete zip file`);
  }
  try {
    if (zip.entryCount > limits.maxEntries) {
      throw new WorkcellError('payload_too_large', `the zip archive has ${zip.entryCount} entries, more than the ${limits.maxEntries} an upload may hold (WORKCELL_UPLOAD_MAX_FILES): refused`);
    }
    for await (const entry of zip.eachEntry()) await addZipEntry(zip, entry, tree);
  } catch (error) {
    if (error instanceof WorkcellError) throw error;
    throw new WorkcellError('invalid_request', `the zip archive cannot be read (${error instanceof Error ? error.message : String(error)}): refused`);
  } finally {
    zip.close();
  }
}

async function addZipEntry(zip: ZipFile, entry: ZipEntry, tree: UploadTree): Promise<void> {
  const name = getFileNameLowLevel(entry.generalPurposeBitFlag, entry.fileNameRaw, entry.extraFields, true); // strict: backslashes kept, to be refused
  const unixMode = entry.versionMadeBy >> 8 === unixHost ? entry.externalFileAttributes >>> 16 : 0;
  const type = fileTypeOf(unixMode);
  const options = { mode: unixMode === 0 ? undefined : unixMode, mtime: entry.getLastModDate() };
  if (type === unixFileType.directory || (type === 0 && name.endsWith('/'))) return tree.directory('archive entry', name, options);
  if (type !== unixFileType.file && type !== unixFileType.symlink && type !== 0) {
    throw refuseEntry('archive entry', name, `has an unsupported file type (mode ${unixMode.toString(8)}: a device, FIFO or socket): refused`);
  }
  if (entry.isEncrypted()) throw refuseEntry('archive entry', name, 'is encrypted, which is not supported: refused');
  if (!entry.canDecodeFileData()) throw refuseEntry('archive entry', name, `uses compression method ${entry.compressionMethod}, which is not supported (stored and deflate are): refused`);
  if (type === unixFileType.symlink) {
    if (entry.uncompressedSize > maxSymlinkTargetBytes) throw refuseEntry('archive entry', name, 'is a symlink with an over-long target: refused');
    const target = await readAll(await zip.openReadStreamPromise(entry), maxSymlinkTargetBytes);
    let text: string;
    try {
      text = utf8.decode(target);
    } catch {
      throw refuseEntry('archive entry', name, 'is a symlink whose target is not valid UTF-8: refused');
    }
    return tree.symlink('archive entry', name, text);
  }
  // The declared size is checked before reading; yauzl fails the stream if the data holds more (validateEntrySizes).
  // It may fail before the tree starts reading (the tree makes the file first, while zlib already inflates into
  // the stream): the error is kept by the stream and thrown by the tree's read, never left unheard (which would end
  // the process).
  const content = await zip.openReadStreamPromise(entry);
  content.on('error', () => undefined);
  try {
    await tree.file('archive entry', name, content, { ...options, declaredSize: entry.uncompressedSize });
  } catch (error) {
    if (error instanceof WorkcellError) throw error;
    throw refuseEntry('archive entry', name, `cannot be read (${error instanceof Error ? error.message : String(error)}): refused`);
  } finally {
    content.destroy();
  }
}

async function readAll(stream: AsyncIterable<Buffer>, maxBytes: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let length = 0;
  for await (const chunk of stream) {
    length += chunk.length;
    if (length > maxBytes) throw new WorkcellError('invalid_request', 'a symlink entry holds more data than it declared: refused');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

/** The first `bytes` bytes (fewer at the end of the stream) and the whole stream again, head included. */
async function peek(source: AsyncIterable<Buffer>, bytes: number): Promise<{ head: Buffer; rest: AsyncIterable<Buffer> }> {
  const iterator = source[Symbol.asyncIterator]();
  const chunks: Buffer[] = [];
  let length = 0;
  let done = false;
  while (length < bytes) {
    const next = await iterator.next();
    if (next.done === true) {
      done = true;
      break;
    }
    chunks.push(next.value);
    length += next.value.length;
  }
  const head = Buffer.concat(chunks);
  async function* rest(): AsyncGenerator<Buffer> {
    if (head.length > 0) yield head;
    if (done) return;
    for (let next = await iterator.next(); next.done !== true; next = await iterator.next()) yield next.value;
  }
  return { head: head.subarray(0, bytes), rest: rest() };
}

/** Fails a stream past `maxBytes` (decompressed archives). */
class ByteCap extends Transform {
  readonly #maxBytes: number;
  #bytes = 0;

  constructor(maxBytes: number) {
    super();
    this.#maxBytes = maxBytes;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.#bytes += chunk.length;
    if (this.#bytes > this.#maxBytes) {
      callback(new WorkcellError('payload_too_large', `the archive unpacks to more than ${this.#maxBytes} bytes (WORKCELL_UPLOAD_MAX_BYTES; is this a gzip bomb?): refused`));
      return;
    }
    callback(null, chunk);
  }
}
