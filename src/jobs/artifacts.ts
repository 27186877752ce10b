// Zips a job's workspace into output.zip on the way out of a job (DESIGN §3). The workspace was written by untrusted
// code and the server runs as root, so this module must never follow a symlink, never open anything but a regular
// file (a FIFO would block, a device could hang or leak), never read a file that is not inside the workspace, and
// never write an entry name that climbs out of the archive root. Anything odd is skipped and reported, not fatal; only
// the size limit and cancellation stop the whole archive. The archive streams: no file is ever read whole.
//
// The naming rules for entries and symlink targets live here too, because the CLI's extractor (cli/extract.ts) must
// enforce exactly the rules this side promises.
import type { BigIntStats } from 'node:fs';
import { constants, existsSync } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { lstat, open, readdir, readlink, realpath, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { once } from 'node:events';
import { finished, pipeline } from 'node:stream/promises';
import { ZipFile } from 'yazl';
import { WorkcellError } from '../errors.ts';

export interface ZipWorkspaceOptions {
  signal?: AbortSignal;
  /** Upper bound on the bytes of file content read from the workspace (default 10 GiB). */
  maxBytes?: number;
  /**
   * Files of the server's own added at the archive's root after the workspace (e.g. changes.patch). Each takes the
   * first of its `names` that no workspace entry has; when all are taken it is left out (reported as skipped).
   */
  extraFiles?: Array<{ names: string[]; path: string }>;
}

export interface SkippedEntry {
  /** Workspace-relative path, forward slashes. */
  path: string;
  reason: string;
}

export interface ZipWorkspaceResult {
  /** Entries written: directories, regular files and symlinks. */
  entries: number;
  /** Bytes of file content archived (uncompressed). */
  bytes: number;
  /** Size of the finished zip file. */
  zipBytes: number;
  /** What was left out and why; capped at `maxSkippedListed` items, see `skippedTotal`. */
  skipped: SkippedEntry[];
  skippedTotal: number;
}

export const defaultMaxWorkspaceBytes = 10 * 1024 ** 3;
/** A hostile workspace could hold millions of FIFOs; the report lists the first ones and counts the rest. */
export const maxSkippedListed = 1000;
/** Longest entry name a zip header can hold (the name length field is 16 bits). */
const maxEntryNameBytes = 0xffff;

const fileTypeMask = 0o170000;
export const unixFileType = { file: 0o100000, directory: 0o040000, symlink: 0o120000 } as const;

// ---------------------------------------------------------------------------------------------------------------
// Naming rules shared with the extractor.

/**
 * Why an archive entry name (forward slashes, no trailing slash) is unsafe to write or extract, or undefined when it
 * is fine. Names may hold spaces, quotes, unicode and even newlines; they may not be absolute, start with a drive
 * letter, contain a `..` segment, a backslash (a separator to some tools, so `a\..\..\x` climbs out there) or NUL.
 */
export function archiveNameProblem(name: string): string | undefined {
  if (name === '') return 'the name is empty';
  if (name.includes('\0')) return 'the name contains a NUL byte';
  if (name.includes('\\')) return 'the name contains a backslash, which some tools read as a path separator';
  if (name.startsWith('/')) return 'the name is an absolute path';
  if (/^[a-zA-Z]:/.test(name)) return 'the name starts with a drive letter';
  if (name.split('/').includes('..')) return "the name has a '..' segment";
  if (Buffer.byteLength(name) > maxEntryNameBytes) return 'the name is longer than a zip entry name can be';
  return undefined;
}

/**
 * Why a symlink stored at `linkName` (a checked archive name) with text `target` could point outside the root, or
 * undefined when it cannot. The target is resolved lexically against the link's own directory. Beyond that, a `..`
 * may only lead the target: after a name it would apply to whatever that name resolves to, and `x -> .` followed by
 * `y -> x/..` lands outside the root although `y`'s text looks harmless.
 */
export function symlinkTargetProblem(linkName: string, target: string, rootLabel: string): string | undefined {
  if (target === '') return 'the link target is empty';
  if (target.includes('\0')) return 'the link target contains a NUL byte';
  if (target.includes('\\')) return 'the link target contains a backslash';
  if (target.startsWith('/')) return `the link target is an absolute path, outside ${rootLabel}`;
  if (/^[a-zA-Z]:/.test(target)) return 'the link target starts with a drive letter';
  let depth = linkName.split('/').length - 1;
  let descended = false;
  for (const segment of target.split('/')) {
    if (segment === '' || segment === '.') continue;
    if (segment !== '..') {
      descended = true;
      depth += 1;
      continue;
    }
    if (descended) return "the link target has a '..' after a name, so it could climb out through another symlink";
    depth -= 1;
    if (depth < 0) return `the link target points outside ${rootLabel}`;
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------------------------
// Opening workspace files without being tricked.

const utf8 = new TextDecoder('utf-8', { fatal: true });

function errorCode(error: unknown): string | undefined {
  return error instanceof Error && 'code' in error && typeof error.code === 'string' ? error.code : undefined;
}

function sameFile(a: BigIntStats, b: BigIntStats): boolean {
  return a.dev === b.dev && a.ino === b.ino;
}

function isInside(realPath: string, rootReal: string): boolean {
  return realPath === rootReal || realPath.startsWith(rootReal.endsWith('/') ? rootReal : `${rootReal}/`);
}

/**
 * Where an open descriptor really is, from /proc (race-free, unlike any path check). Undefined where there is no
 * /proc; then the O_NOFOLLOW open and the device/inode match against the walk's lstat are the guard.
 */
async function openedRealPath(handle: FileHandle): Promise<string | undefined> {
  try {
    return await readlink(`/proc/self/fd/${handle.fd}`);
  } catch {
    return undefined;
  }
}

let procFdAvailable: boolean | undefined;
function hasProcFd(): boolean {
  procFdAvailable ??= existsSync('/proc/self/fd');
  return procFdAvailable;
}

type Opened = { handle: FileHandle; stats: BigIntStats } | { skip: string };

/**
 * Opens `absolutePath` only if it is still the regular file (or directory) the walk saw with lstat and still inside
 * the workspace. O_NOFOLLOW refuses a file swapped for a symlink; O_NONBLOCK means one swapped for a FIFO cannot
 * block the open; fstat then refuses anything but the expected type. Exported for tests.
 */
export async function openWorkspaceEntry(
  absolutePath: string,
  seen: BigIntStats,
  rootReal: string,
  kind: 'file' | 'directory',
): Promise<Opened> {
  const flags =
    constants.O_RDONLY |
    constants.O_NOFOLLOW |
    constants.O_NONBLOCK |
    constants.O_NOCTTY |
    (kind === 'directory' ? constants.O_DIRECTORY : 0);
  let handle: FileHandle;
  try {
    handle = await open(absolutePath, flags);
  } catch (error) {
    const code = errorCode(error);
    if (code === 'ELOOP') return { skip: `it was replaced by a symlink while the workspace was zipped` };
    if (code === 'ENOTDIR') return { skip: 'it was replaced by something that is not a directory' };
    return { skip: `it could not be opened (${code ?? 'error'})` };
  }
  try {
    const stats = await handle.stat({ bigint: true });
    const typeOk = kind === 'directory' ? stats.isDirectory() : stats.isFile();
    if (!typeOk || !sameFile(stats, seen)) {
      await handle.close();
      return { skip: 'it was replaced by another file while the workspace was zipped' };
    }
    const real = await openedRealPath(handle);
    if (real !== undefined && !isInside(real, rootReal)) {
      await handle.close();
      return { skip: 'it resolves outside the workspace' };
    }
    return { handle, stats };
  } catch (error) {
    await handle.close();
    return { skip: `it could not be read (${errorCode(error) ?? 'error'})` };
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The walk: depth first, children sorted, lstat only.

export type WalkItem =
  | { kind: 'directory' | 'file'; name: string; absolutePath: string; stats: BigIntStats }
  | { kind: 'symlink'; name: string; target: string; stats: BigIntStats };

interface WalkContext {
  root: string;
  rootReal: string;
  skip: (name: string, reason: string) => void;
  signal: AbortSignal | undefined;
}

function compareNames(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function describeType(stats: BigIntStats): string {
  if (stats.isFIFO()) return 'a FIFO';
  if (stats.isSocket()) return 'a socket';
  if (stats.isCharacterDevice()) return 'a character device';
  if (stats.isBlockDevice()) return 'a block device';
  return 'not a regular file, directory or symlink';
}

async function listDirectory(context: WalkContext, absolutePath: string, name: string, seen: BigIntStats) {
  const opened = await openWorkspaceEntry(absolutePath, seen, context.rootReal, 'directory');
  if ('skip' in opened) {
    context.skip(name === '' ? '.' : name, opened.skip);
    return undefined;
  }
  try {
    // Reading through the descriptor lists the directory that was checked, whatever its path now points to.
    const listed = hasProcFd() ? `/proc/self/fd/${opened.handle.fd}` : absolutePath;
    return await readdir(listed, { encoding: 'buffer' });
  } catch (error) {
    context.skip(name === '' ? '.' : name, `its listing could not be read (${errorCode(error) ?? 'error'})`);
    return undefined;
  } finally {
    await opened.handle.close();
  }
}

async function* walk(context: WalkContext, directoryName: string, seen: BigIntStats): AsyncGenerator<WalkItem> {
  const directoryPath = directoryName === '' ? context.root : path.join(context.root, directoryName);
  const rawNames = await listDirectory(context, directoryPath, directoryName, seen);
  if (rawNames === undefined) return;
  const names: string[] = [];
  for (const raw of rawNames) {
    try {
      names.push(utf8.decode(raw));
    } catch {
      const shown = raw.toString('utf8');
      context.skip(directoryName === '' ? shown : `${directoryName}/${shown}`, 'the name is not valid UTF-8');
    }
  }
  names.sort(compareNames);
  for (const child of names) {
    context.signal?.throwIfAborted();
    const name = directoryName === '' ? child : `${directoryName}/${child}`;
    const problem = archiveNameProblem(name);
    if (problem !== undefined) {
      context.skip(name, problem);
      continue;
    }
    const absolutePath = path.join(directoryPath, child);
    let stats: BigIntStats;
    try {
      stats = await lstat(absolutePath, { bigint: true });
    } catch (error) {
      context.skip(name, `it could not be examined (${errorCode(error) ?? 'error'})`);
      continue;
    }
    if (stats.isDirectory()) {
      yield { kind: 'directory', name, absolutePath, stats };
      yield* walk(context, name, stats);
    } else if (stats.isFile()) {
      yield { kind: 'file', name, absolutePath, stats };
    } else if (stats.isSymbolicLink()) {
      let target: string;
      try {
        target = await readlink(absolutePath);
      } catch (error) {
        context.skip(name, `the symlink could not be read (${errorCode(error) ?? 'error'})`);
        continue;
      }
      const targetProblem = symlinkTargetProblem(name, target, 'the workspace');
      if (targetProblem !== undefined) context.skip(name, `symlink to '${target}': ${targetProblem}`);
      else yield { kind: 'symlink', name, target, stats };
    } else {
      context.skip(name, `it is ${describeType(stats)}; only files, directories and symlinks are archived`);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------

function tooLarge(maxBytes: number): WorkcellError {
  return new WorkcellError(
    'payload_too_large',
    `the workspace holds more than ${maxBytes} bytes of files, the limit for output.zip; ` +
      'delete large or generated files from the workspace (or raise the limit) and try again',
    { details: { maxBytes } },
  );
}

/**
 * Writes `workspaceDir` as a zip to `outFile` (via `outFile.tmp`, renamed when complete). A workspace that does not
 * exist gives an empty archive. Rejects with a `payload_too_large` WorkcellError past `maxBytes`, or with the abort
 * reason when `signal` fires; either way the temporary file is removed and `outFile` is left as it was.
 */
export async function zipWorkspace(
  workspaceDir: string,
  outFile: string,
  options: ZipWorkspaceOptions = {},
): Promise<ZipWorkspaceResult> {
  const { signal } = options;
  const maxBytes = options.maxBytes ?? defaultMaxWorkspaceBytes;
  signal?.throwIfAborted();

  const skipped: SkippedEntry[] = [];
  let skippedTotal = 0;
  const skip = (name: string, reason: string) => {
    skippedTotal += 1;
    if (skipped.length < maxSkippedListed) skipped.push({ path: name, reason });
  };

  const tmpFile = `${outFile}.tmp`;
  const zip = new ZipFile();
  // The job directory is the server's, not the sandbox's; O_NOFOLLOW is only hygiene.
  const output = await open(tmpFile, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW, 0o644);
  const writeStream = output.createWriteStream({ flush: true });
  const written = pipeline(zip.outputStream, writeStream);
  // Any of these ends the archive: yazl's own errors, a failed write, cancellation.
  const failure = Promise.withResolvers<never>();
  failure.promise.catch(() => undefined);
  written.catch(failure.reject);
  zip.on('error', failure.reject);
  const onAbort = () => failure.reject(signal?.reason);
  signal?.addEventListener('abort', onAbort, { once: true });

  let entries = 0;
  let bytes = 0;
  let current: Readable | undefined;
  const rootNames = new Set<string>();
  try {
    const root = await inspectRoot(workspaceDir, skip);
    if (root !== undefined) {
      const context: WalkContext = { root: workspaceDir, rootReal: root.real, skip, signal };
      for await (const item of walk(context, '', root.stats)) {
        signal?.throwIfAborted();
        if (!item.name.includes('/')) rootNames.add(item.name);
        const mtime = item.stats.mtime;
        const permissions = Number(item.stats.mode) & 0o777;
        if (item.kind === 'directory') {
          zip.addEmptyDirectory(item.name, { mtime, mode: unixFileType.directory | permissions });
        } else if (item.kind === 'symlink') {
          zip.addBuffer(Buffer.from(item.target), item.name, {
            mtime,
            mode: unixFileType.symlink | 0o777,
            compress: false,
          });
        } else {
          const opened = await openWorkspaceEntry(item.absolutePath, item.stats, root.real, 'file');
          if ('skip' in opened) {
            skip(item.name, opened.skip);
            continue;
          }
          const size = Number(opened.stats.size);
          if (bytes + size > maxBytes) {
            await opened.handle.close();
            throw tooLarge(maxBytes);
          }
          bytes += size;
          const fileOptions = { mtime, mode: unixFileType.file | (Number(opened.stats.mode) & 0o777) };
          if (size === 0) {
            await opened.handle.close();
            zip.addBuffer(Buffer.alloc(0), item.name, fileOptions);
          } else {
            // Read exactly the size fstat saw, so a file that grows cannot outrun the size check.
            const stream = opened.handle.createReadStream({ start: 0, end: size - 1 });
            current = stream;
            zip.addReadStream(stream, item.name, fileOptions);
            // One file open at a time; the pipe into the zip carries back-pressure from the output file.
            await Promise.race([finished(stream), failure.promise]);
            // Closed, not just read: the workspace's disk is unmounted next, which a descriptor still open would block.
            if (!stream.closed) await Promise.race([once(stream, 'close'), failure.promise]);
            current = undefined;
          }
        }
        entries += 1;
      }
    }
    for (const extra of options.extraFiles ?? []) {
      const name = extra.names.find((candidate) => !rootNames.has(candidate));
      if (name === undefined) {
        skip(extra.names[0] ?? '', 'the workspace has files of every name it could take');
        continue;
      }
      rootNames.add(name);
      zip.addFile(extra.path, name, { mode: unixFileType.file | 0o644 });
      entries += 1;
    }
    signal?.throwIfAborted();
    zip.end();
    await Promise.race([written, failure.promise]);
    if (!writeStream.closed) await once(writeStream, 'close');
    const zipBytes = writeStream.bytesWritten;
    await rename(tmpFile, outFile);
    return { entries, bytes, zipBytes, skipped, skippedTotal };
  } catch (error) {
    current?.destroy();
    writeStream.destroy();
    // Wait for the descriptor to close (ignoring the stream's own complaints) before removing the file.
    if (!writeStream.closed) await new Promise<void>((resolve) => writeStream.once('close', () => resolve()));
    await rm(tmpFile, { force: true });
    throw error;
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
}

/**
 * The workspace's entries by the zip's rules, depth first: nothing followed through a symlink, links that could point
 * outside and anything but files, directories and links left out (told to `skip`). Files must still be opened with
 * openWorkspaceEntry (against `rootReal`). For copies of a workspace that must keep the zip's promises (a fork).
 * Undefined when there is no workspace directory.
 */
export async function walkWorkspace(
  workspaceDir: string,
  skip: (name: string, reason: string) => void,
  signal?: AbortSignal,
): Promise<{ rootReal: string; items: AsyncGenerator<WalkItem> } | undefined> {
  const root = await inspectRoot(workspaceDir, skip);
  if (root === undefined) return undefined;
  return { rootReal: root.real, items: walk({ root: workspaceDir, rootReal: root.real, skip, signal }, '', root.stats) };
}

/** The workspace root itself: absent gives an empty archive, and anything but a real directory is not walked. */
async function inspectRoot(
  workspaceDir: string,
  skip: (name: string, reason: string) => void,
): Promise<{ stats: BigIntStats; real: string } | undefined> {
  let stats: BigIntStats;
  try {
    stats = await lstat(workspaceDir, { bigint: true });
  } catch (error) {
    if (errorCode(error) === 'ENOENT') return undefined;
    throw error;
  }
  if (!stats.isDirectory()) {
    skip('.', 'the workspace is not a directory (a symlink or file was found in its place)');
    return undefined;
  }
  return { stats, real: await realpath(workspaceDir) };
}

/** The file type bits of a unix mode, for readers of the archive. */
export function fileTypeOf(mode: number): number {
  return mode & fileTypeMask;
}
