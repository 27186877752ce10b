// Workspace files as raw bytes for people (GET/PUT/DELETE /jobs/:id/files/<path>): read a file or list a directory,
// create or replace a file, delete a file, a symlink or an empty directory, each with a strong ETag (the content's
// SHA-256) and If-Match / If-None-Match, so a person and the agent do not overwrite each other blindly. The same class
// serves sandboxd's /workspace while a job runs and the host's jobs/<id>/workspace after it ended.
// MUST NEVER TOUCH ANYTHING OUTSIDE THE ROOT: every path goes through no-follow.ts (names checked lexically, each
// directory opened relative to its parent's descriptor, no symbolic link ever followed); only regular files are opened
// for reading (O_NOFOLLOW | O_NONBLOCK, after an lstat that saw a regular file, and checked to be that same file), so a
// FIFO cannot block, a device is never opened; writes go to a new temporary file beside the target, renamed over it
// only once the body is complete and the preconditions still hold, so a failed or refused upload leaves nothing.
import { randomBytes, createHash } from 'node:crypto';
import { constants, type BigIntStats } from 'node:fs';
import { open, readdir, readlink, rename, rmdir, unlink, type FileHandle } from 'node:fs/promises';
import { Readable } from 'node:stream';
import type { z } from 'zod';
import { SandboxdToolError } from '../errors.ts';
import { maxRawListingEntries, type rawDirectoryListing, type rawEntryType, type rawFileDeleteResponse, type rawFileWriteResponse, type rawListingEntry } from '../protocol.ts';
import { contentTypeFor, etagOf, hashOpenFile, HashCache, readHead, verifiedReadStream } from './file-content.ts';
import { at, describeType, errnoCode, lstatAt, openDirectory, openRoot, parseWorkspacePath, symlinkRefused } from './no-follow.ts';

export type RawDirectoryListing = z.infer<typeof rawDirectoryListing>;
export type RawListingEntry = z.infer<typeof rawListingEntry>;
export type RawEntryType = z.infer<typeof rawEntryType>;
export type RawFileWriteResponse = z.infer<typeof rawFileWriteResponse>;
export type RawFileDeleteResponse = z.infer<typeof rawFileDeleteResponse>;

export type RawGetResult =
  | { kind: 'file'; path: string; etag: string; size: number; mtime: string; mode: number; contentType: string; body: Readable }
  | { kind: 'directory'; path: string; etag: string; listing: RawDirectoryListing }
  | { kind: 'not-modified'; path: string; etag: string };

/** A 412 that says what the file's ETag is now (absent when nothing is there). */
export class PreconditionFailed extends SandboxdToolError {
  readonly etag: string | undefined;
  constructor(message: string, etag: string | undefined) {
    super('precondition_failed', message);
    this.etag = etag;
  }
}

export interface Preconditions {
  /** If-Match: `*` or ETags; the operation happens only if the target exists and (unless `*`) has one of them. */
  ifMatch?: string | undefined;
  /** If-None-Match: `*` or ETags; the operation happens only if nothing is there (`*`) or it has none of them. */
  ifNoneMatch?: string | undefined;
}

/** Bytes a listing hashes at most for its ETags (files already hashed are free); the rest get `etag: null`. */
export const listingHashBudgetBytes = 64 * 1024 * 1024;

const readFlags = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK | constants.O_NOCTTY;
const createFlags = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW | constants.O_NOCTTY;
const utf8 = new TextDecoder('utf-8', { fatal: true });

function quoted(path: string): string {
  return JSON.stringify(path);
}

function typeOf(stats: BigIntStats): RawEntryType {
  if (stats.isFile()) return 'file';
  if (stats.isDirectory()) return 'directory';
  if (stats.isSymbolicLink()) return 'symlink';
  return 'other';
}

function sameFile(a: BigIntStats, b: BigIntStats): boolean {
  return a.dev === b.dev && a.ino === b.ino;
}

/** The ETags of an If-Match / If-None-Match header ('*' stays '*'); weak ones keep their W/ (never strongly equal). */
export function parseEtagList(header: string): string[] {
  if (header.trim() === '*') return ['*'];
  return header.split(',').map((part) => part.trim()).filter((part) => part !== '');
}

/** Throws PreconditionFailed unless the target's state (its ETag, or undefined when nothing is there) meets them. */
export function checkPreconditions(path: string, current: string | undefined, conditions: Preconditions): void {
  if (conditions.ifMatch !== undefined) {
    const wanted = parseEtagList(conditions.ifMatch);
    if (current === undefined) throw new PreconditionFailed(`${quoted(path)} does not exist, and If-Match asks for ${conditions.ifMatch.trim()}: it was deleted or never made; GET the directory to see what is there`, undefined);
    if (!wanted.includes('*') && !wanted.includes(current)) {
      throw new PreconditionFailed(`${quoted(path)} changed (its ETag is now ${current}, If-Match has ${conditions.ifMatch.trim()}): someone else, perhaps the agent, wrote it since you read it; GET it again, merge, and retry with the new ETag`, current);
    }
  }
  if (conditions.ifNoneMatch !== undefined && current !== undefined) {
    const refused = parseEtagList(conditions.ifNoneMatch);
    if (refused.includes('*')) throw new PreconditionFailed(`${quoted(path)} already exists (If-None-Match: * creates only new files); GET it, then replace it with If-Match: ${current}`, current);
    if (refused.some((etag) => etag.replace(/^W\//, '') === current)) throw new PreconditionFailed(`${quoted(path)} has an ETag If-None-Match refuses (${current})`, current);
  }
}

/** Does an If-None-Match header match (GET: 304)? Weak comparison, as RFC 9110 says for GET. */
function noneMatchHits(header: string | undefined, current: string): boolean {
  if (header === undefined) return false;
  const listed = parseEtagList(header);
  return listed.includes('*') || listed.some((etag) => etag.replace(/^W\//, '') === current);
}

/** Turns a file-system failure into a clear error; anything unexpected is rethrown. */
function fileSystemError(error: unknown, path: string, action: string): unknown {
  if (error instanceof SandboxdToolError) return error;
  switch (errnoCode(error)) {
    case 'ENOENT':
      return new SandboxdToolError('not_found', `${quoted(path)} does not exist`);
    case 'ENOTDIR':
      return new SandboxdToolError('not_a_directory', `a parent of ${quoted(path)} is not a directory`);
    case 'EISDIR':
      return new SandboxdToolError('not_a_file', `${quoted(path)} is a directory`);
    case 'ELOOP':
      return symlinkRefused(path);
    case 'ENOTEMPTY':
    case 'EEXIST':
      return new SandboxdToolError('not_empty', `${quoted(path)} is a directory that is not empty: the file API deletes only files and empty directories; delete what it holds first (GET it to see)`);
    case 'EACCES':
    case 'EPERM':
    case 'EROFS':
      return new SandboxdToolError('invalid_request', `permission denied: cannot ${action} ${quoted(path)}`);
    case 'ENOSPC':
    case 'EDQUOT':
      return new SandboxdToolError('too_large', `no space left in the workspace to ${action} ${quoted(path)} (the job's disk, limits.disk_mb, is full): delete files first`);
    case 'ENAMETOOLONG':
      return new SandboxdToolError('invalid_request', `${quoted(path)} is too long a path`);
    default:
      return error;
  }
}

export class WorkspaceRawFiles {
  readonly root: string;
  readonly #hashes: HashCache;
  /** One writer per path at a time: the precondition check and the rename happen together. */
  readonly #locks = new Map<string, Promise<void>>();

  constructor(root: string, options: { hashes?: HashCache } = {}) {
    this.root = root;
    this.#hashes = options.hashes ?? new HashCache();
  }

  /** A file's bytes (a stream the caller must consume or destroy) or a directory's listing; 304 when If-None-Match hits. */
  async get(path: string, options: { ifNoneMatch?: string | undefined; etags?: 'budget' | 'all'; headOnly?: boolean } = {}): Promise<RawGetResult> {
    const names = parseWorkspacePath(path);
    const shown = names.join('/');
    const root = await openRoot(this.root);
    try {
      if (names.length === 0) return await this.#directoryResult(root, '', options);
      const parent = await openDirectory(root, names.slice(0, -1));
      try {
        const name = names.at(-1) as string;
        const stats = await lstatAt(parent, name);
        if (stats === undefined) throw new SandboxdToolError('not_found', `${quoted(shown)} does not exist`);
        if (stats.isSymbolicLink()) throw symlinkRefused(shown);
        if (stats.isDirectory()) {
          const directory = await openDirectory(parent, [name]);
          try {
            return await this.#directoryResult(directory, shown, options);
          } finally {
            await directory.close();
          }
        }
        if (!stats.isFile()) throw new SandboxdToolError('not_a_file', `${quoted(shown)} is ${describeType(stats)}, not a regular file: only files and directories can be read`);
        const { handle, stats: opened } = await this.#openFile(parent, name, shown, stats);
        let handed = false;
        try {
          const size = Number(opened.size);
          const { hex, head } = await this.#hash(handle, opened);
          const etag = etagOf(hex);
          if (noneMatchHits(options.ifNoneMatch, etag)) return { kind: 'not-modified', path: shown, etag };
          const contentType = contentTypeFor(name, head, size);
          const result = { kind: 'file' as const, path: shown, etag, size, mtime: opened.mtime.toISOString(), mode: Number(opened.mode) & 0o7777, contentType };
          if (options.headOnly === true) return { ...result, body: emptyBody() };
          handed = true;
          return { ...result, body: verifiedReadStream(handle, size, hex) };
        } finally {
          if (!handed) await handle.close();
        }
      } finally {
        await parent.close();
      }
    } catch (error) {
      throw fileSystemError(error, shown, 'read');
    } finally {
      await root.close();
    }
  }

  /**
   * Creates or replaces the file at `path` with `body` (at most `maxBytes`), making missing parent directories. The
   * body goes to a temporary file in the same directory, renamed over the target once complete; the preconditions are
   * checked before the body is read and again just before the rename. A replaced file keeps its permission bits.
   */
  async put(path: string, body: AsyncIterable<Buffer | Uint8Array | string>, options: Preconditions & { maxBytes: number; declaredBytes?: number | undefined }): Promise<RawFileWriteResponse> {
    const names = parseWorkspacePath(path);
    const shown = names.join('/');
    if (names.length === 0) throw new SandboxdToolError('not_a_file', 'the workspace root is a directory; PUT a file inside it, e.g. "data/input.csv"');
    if (options.declaredBytes !== undefined && options.declaredBytes > options.maxBytes) throw tooLarge(shown, options.maxBytes);
    const name = names.at(-1) as string;
    const root = await openRoot(this.root);
    let temporary: { parent: FileHandle; name: string } | undefined;
    try {
      // Early: no need to take a body the preconditions refuse anyway.
      const before = await this.#currentState(root, names);
      checkPreconditions(shown, before.etag, options);
      const parent = await openDirectory(root, names.slice(0, -1), { create: true });
      try {
        const existing = await lstatAt(parent, name);
        refuseAsTarget(shown, existing);
        const mode = existing?.isFile() ? Number(existing.mode) & 0o777 : 0o644;
        const temporaryName = `.workcell-upload-${randomBytes(8).toString('hex')}.tmp`;
        const handle = await open(at(parent, temporaryName), createFlags, mode);
        temporary = { parent, name: temporaryName };
        let size = 0;
        const hash = createHash('sha256');
        try {
          for await (const piece of body) {
            const chunk = typeof piece === 'string' ? Buffer.from(piece) : piece;
            size += chunk.length;
            if (size > options.maxBytes) throw tooLarge(shown, options.maxBytes);
            hash.update(chunk);
            await handle.write(chunk);
          }
          await handle.chmod(mode);
        } finally {
          await handle.close();
        }
        const etag = etagOf(hash.digest('hex'));
        const created = await this.#locked(shown, async () => {
          const now = await lstatAt(parent, name);
          refuseAsTarget(shown, now);
          checkPreconditions(shown, now === undefined ? undefined : await this.#fileEtag(parent, name, now, shown), options);
          await rename(at(parent, temporaryName), at(parent, name));
          temporary = undefined;
          return now === undefined;
        });
        return { path: shown, size, etag, created };
      } finally {
        if (temporary !== undefined) await unlink(at(temporary.parent, temporary.name)).catch(() => undefined);
        await parent.close();
      }
    } catch (error) {
      throw fileSystemError(error, shown, 'write');
    } finally {
      await root.close();
    }
  }

  /** Deletes a file, a symlink (the link itself) or an empty directory; a non-empty directory is refused (409). */
  async delete(path: string, options: Preconditions = {}): Promise<RawFileDeleteResponse> {
    const names = parseWorkspacePath(path);
    const shown = names.join('/');
    if (names.length === 0) throw new SandboxdToolError('invalid_request', 'refusing to delete the workspace root; delete the entries inside it instead');
    const name = names.at(-1) as string;
    const root = await openRoot(this.root);
    try {
      const parent = await openDirectory(root, names.slice(0, -1));
      try {
        return await this.#locked(shown, async () => {
          const stats = await lstatAt(parent, name);
          if (stats === undefined) {
            checkPreconditions(shown, undefined, options);
            throw new SandboxdToolError('not_found', `${quoted(shown)} does not exist`);
          }
          const type = typeOf(stats);
          const conditional = options.ifMatch !== undefined || options.ifNoneMatch !== undefined;
          let etag: string | undefined;
          if (conditional) {
            if (type === 'file') etag = await this.#fileEtag(parent, name, stats, shown);
            else if (type === 'directory') {
              const directory = await openDirectory(parent, [name]);
              try {
                etag = (await this.#directoryResult(directory, shown, {})).etag;
              } finally {
                await directory.close();
              }
            } else if (options.ifMatch !== undefined && options.ifMatch.trim() !== '*') {
              throw new PreconditionFailed(`${quoted(shown)} is ${describeType(stats)}, which has no ETag: use If-Match: * to delete it`, undefined);
            } else etag = '"*"';
          }
          if (conditional) checkPreconditions(shown, etag, options);
          if (type === 'directory') await rmdir(at(parent, name));
          else await unlink(at(parent, name));
          return { path: shown, type };
        });
      } finally {
        await parent.close();
      }
    } catch (error) {
      throw fileSystemError(error, shown, 'delete');
    } finally {
      await root.close();
    }
  }

  /** The ETag of what is at `names` now, or undefined when nothing is (a missing parent counts as nothing). */
  async #currentState(root: FileHandle, names: string[]): Promise<{ etag: string | undefined }> {
    let parent: FileHandle;
    try {
      parent = await openDirectory(root, names.slice(0, -1));
    } catch (error) {
      if (error instanceof SandboxdToolError && error.code === 'not_found') return { etag: undefined };
      throw error;
    }
    try {
      const name = names.at(-1) as string;
      const stats = await lstatAt(parent, name);
      const shown = names.join('/');
      refuseAsTarget(shown, stats);
      return { etag: stats === undefined ? undefined : await this.#fileEtag(parent, name, stats, shown) };
    } finally {
      await parent.close();
    }
  }

  async #fileEtag(parent: FileHandle, name: string, stats: BigIntStats, shown: string): Promise<string> {
    const cached = this.#hashes.get(stats);
    if (cached !== undefined) return etagOf(cached);
    const { handle, stats: opened } = await this.#openFile(parent, name, shown, stats);
    try {
      return etagOf((await this.#hash(handle, opened)).hex);
    } finally {
      await handle.close();
    }
  }

  /** Opens the regular file the lstat saw, and only that: O_NOFOLLOW, O_NONBLOCK, then the same inode checked. */
  async #openFile(parent: FileHandle, name: string, shown: string, seen: BigIntStats): Promise<{ handle: FileHandle; stats: BigIntStats }> {
    const handle = await open(at(parent, name), readFlags);
    try {
      const stats = await handle.stat({ bigint: true });
      if (!stats.isFile() || !sameFile(stats, seen)) throw new SandboxdToolError('not_a_file', `${quoted(shown)} was replaced while it was being opened; try again`);
      return { handle, stats };
    } catch (error) {
      await handle.close();
      throw error;
    }
  }

  async #hash(handle: FileHandle, stats: BigIntStats): Promise<{ hex: string; head: Buffer }> {
    const size = Number(stats.size);
    const cached = this.#hashes.get(stats);
    if (cached !== undefined) return { hex: cached, head: await readHead(handle, size) };
    const result = await hashOpenFile(handle, size);
    // Keyed by what fstat said before the read: a file changed during it gets a new ctime, so a new key.
    this.#hashes.set(stats, result.hex);
    return result;
  }

  async #directoryResult(directory: FileHandle, shown: string, options: { ifNoneMatch?: string | undefined; etags?: 'budget' | 'all' }): Promise<RawGetResult> {
    const listing = await this.#list(directory, shown, options.etags ?? 'budget');
    const etag = etagOf(createHash('sha256').update(JSON.stringify(listing)).digest('hex'));
    if (noneMatchHits(options.ifNoneMatch, etag)) return { kind: 'not-modified', path: shown, etag };
    return { kind: 'directory', path: shown, etag, listing };
  }

  async #list(directory: FileHandle, shown: string, etags: 'budget' | 'all'): Promise<RawDirectoryListing> {
    const raw = await readdir(at(directory, '.'), { encoding: 'buffer' });
    const names: string[] = [];
    let invalidNames = 0;
    for (const bytes of raw) {
      try {
        names.push(utf8.decode(bytes));
      } catch {
        invalidNames++;
      }
    }
    names.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    const truncated = names.length > maxRawListingEntries;
    let budget = etags === 'all' ? Number.POSITIVE_INFINITY : listingHashBudgetBytes;
    const entries: RawListingEntry[] = [];
    for (const name of names.slice(0, maxRawListingEntries)) {
      const stats = await lstatAt(directory, name).catch(() => undefined);
      if (stats === undefined) continue; // gone since readdir
      const type = typeOf(stats);
      const entry: RawListingEntry = { name, type, size: type === 'file' || type === 'symlink' ? Number(stats.size) : 0, mtime: stats.mtime.toISOString(), mode: Number(stats.mode) & 0o7777 };
      if (type === 'symlink') entry.target = await readlink(at(directory, name)).catch(() => '');
      if (type === 'file') {
        const cached = this.#hashes.get(stats);
        if (cached !== undefined) entry.etag = etagOf(cached);
        else if (Number(stats.size) <= budget) {
          budget -= Number(stats.size);
          entry.etag = await this.#fileEtag(directory, name, stats, shown === '' ? name : `${shown}/${name}`).catch(() => null);
        } else entry.etag = null;
      }
      entries.push(entry);
    }
    return { path: shown, type: 'directory', entries, truncated, invalid_names: invalidNames };
  }

  async #locked<T>(key: string, work: () => Promise<T>): Promise<T> {
    const previous = this.#locks.get(key) ?? Promise.resolve();
    const run = previous.then(work);
    const settled = run.then(
      () => undefined,
      () => undefined,
    );
    this.#locks.set(key, settled);
    try {
      return await run;
    } finally {
      if (this.#locks.get(key) === settled) this.#locks.delete(key);
    }
  }
}

function tooLarge(path: string, maxBytes: number): SandboxdToolError {
  return new SandboxdToolError('too_large', `the body for ${quoted(path)} is larger than the ${maxBytes} bytes allowed (WORKCELL_FILES_MAX_BYTES, and the room left on the job's disk)`);
}

/** A PUT replaces regular files only: not a directory, a link (DELETE it first) or a FIFO, socket or device. */
function refuseAsTarget(shown: string, stats: BigIntStats | undefined): void {
  if (stats === undefined || stats.isFile()) return;
  if (stats.isSymbolicLink()) throw symlinkRefused(shown);
  if (stats.isDirectory()) throw new SandboxdToolError('not_a_file', `${quoted(shown)} is a directory; PUT a file inside it`);
  throw new SandboxdToolError('not_a_file', `${quoted(shown)} is ${describeType(stats)}, not a regular file: DELETE it first to put a file there`);
}

function emptyBody(): Readable {
  return Readable.from([]);
}
