// sandboxd's file tools: read, write, edit, list and delete inside the workspace (search: search.ts). MUST NEVER TOUCH A PATH OUTSIDE
// THE WORKSPACE ROOT: every path goes through confine() (lexical checks, then symlinks resolved by hand and the
// result checked against realpath(root)), the tools act on the resolved path only, final components are opened
// with O_NOFOLLOW (and O_NONBLOCK, so a FIFO cannot hang a call), listings never descend into symlinks, and delete
// removes a link itself, never what it points to. Errors are SandboxdToolErrors whose messages tell the model what
// to do instead.
import { constants, type Stats } from 'node:fs';
import { lstat, mkdir, open, readdir, realpath, rm, unlink, type FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { z } from 'zod';
import { SandboxdToolError } from '../errors.ts';
import {
  maxFileBytes,
  type deleteFileRequest,
  type deleteFileResponse,
  type editFileRequest,
  type editFileResponse,
  type fileEntry,
  type listFilesRequest,
  type listFilesResponse,
  type readFileRequest,
  type readFileResponse,
  type writeFileRequest,
  type writeFileResponse,
} from '../protocol.ts';
import { confine, isInside, lexicalRelative } from './confine.ts';
import { directoryRules, ignoredBecause, type RuleStack } from './ignore-rules.ts';

export type ReadFileRequest = z.output<typeof readFileRequest>;
export type ReadFileResponse = z.output<typeof readFileResponse>;
export type WriteFileRequest = z.output<typeof writeFileRequest>;
export type WriteFileResponse = z.output<typeof writeFileResponse>;
export type EditFileRequest = z.output<typeof editFileRequest>;
export type EditFileResponse = z.output<typeof editFileResponse>;
export type ListFilesRequest = z.output<typeof listFilesRequest>;
export type ListFilesResponse = z.output<typeof listFilesResponse>;
export type DeleteFileRequest = z.output<typeof deleteFileRequest>;
export type DeleteFileResponse = z.output<typeof deleteFileResponse>;
type FileType = z.output<typeof fileEntry>['type'];

/** Most entries list_files returns; the rest is reported as `truncated`. */
export const maxListEntries = 1000;
/** Most ignored entries a listing names (all are counted). */
export const maxIgnoredEntries = 100;

const readFlags = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;
const editFlags = constants.O_RDWR | constants.O_NOFOLLOW | constants.O_NONBLOCK;
const writeFlags = constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW | constants.O_NONBLOCK;

function errnoCode(error: unknown): string | undefined {
  return typeof error === 'object' && error !== null && 'code' in error && typeof error.code === 'string' ? error.code : undefined;
}

function fileType(stats: Stats): FileType {
  if (stats.isFile()) return 'file';
  if (stats.isDirectory()) return 'directory';
  if (stats.isSymbolicLink()) return 'symlink';
  return 'other';
}

function quoted(path: string): string {
  return JSON.stringify(path);
}

/** Turns a file-system error into one the model can act on; errors that are not about the file are rethrown. */
function fileSystemError(error: unknown, path: string, action: string): unknown {
  if (error instanceof SandboxdToolError) return error;
  switch (errnoCode(error)) {
    case 'ENOENT':
      return new SandboxdToolError('not_found', `${quoted(path)} does not exist; use list_files to see what is in the workspace`);
    case 'ENOTDIR':
      return new SandboxdToolError('not_a_directory', `a parent of ${quoted(path)} is a file, not a directory`);
    case 'EISDIR':
      return new SandboxdToolError('not_a_file', `${quoted(path)} is a directory; use list_files to see what it contains`);
    case 'ELOOP':
      return new SandboxdToolError('path_outside_workspace', `${quoted(path)} is a symbolic link that changed while it was being opened; try again`);
    case 'EACCES':
    case 'EPERM':
    case 'EROFS':
      return new SandboxdToolError('invalid_request', `permission denied: cannot ${action} ${quoted(path)}`);
    case 'ENOSPC':
    case 'EDQUOT':
      return new SandboxdToolError('too_large', `no space left in the workspace to ${action} ${quoted(path)}; delete files that are no longer needed`);
    case 'ENXIO':
      return new SandboxdToolError('not_a_file', `${quoted(path)} is not a regular file`);
    default:
      return error;
  }
}

function notAFile(path: string, stats: Stats): SandboxdToolError {
  if (stats.isDirectory()) return new SandboxdToolError('not_a_file', `${quoted(path)} is a directory; use list_files to see what it contains`);
  return new SandboxdToolError('not_a_file', `${quoted(path)} is not a regular file (it is a ${fileType(stats) === 'symlink' ? 'symbolic link' : 'device, socket or pipe'})`);
}

function tooLarge(path: string, size: number): SandboxdToolError {
  return new SandboxdToolError(
    'too_large',
    `${quoted(path)} is ${size} bytes, more than the ${maxFileBytes} bytes the file tools handle; use the shell tool to work with parts of it, e.g. \`head -c 100000 ${path}\`, \`sed -n '1,200p' ${path}\` or \`grep -n PATTERN ${path}\``,
  );
}

/** Reads at most `limit` bytes from the start of the file. */
async function readUpTo(handle: FileHandle, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  while (total < limit) {
    const chunk = Buffer.allocUnsafe(Math.min(1 << 20, limit - total));
    const { bytesRead } = await handle.read(chunk, 0, chunk.length, total);
    if (bytesRead === 0) break;
    chunks.push(chunk.subarray(0, bytesRead));
    total += bytesRead;
  }
  return Buffer.concat(chunks, total);
}

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** Reads an open file as UTF-8 text, refusing directories, special files, files over the limit and binary files. */
async function readText(handle: FileHandle, path: string): Promise<{ content: string; size: number }> {
  const stats = await handle.stat();
  if (!stats.isFile()) throw notAFile(path, stats);
  if (stats.size > maxFileBytes) throw tooLarge(path, stats.size);
  const bytes = await readUpTo(handle, maxFileBytes + 1);
  if (bytes.length > maxFileBytes) throw tooLarge(path, bytes.length);
  const binary = () =>
    new SandboxdToolError(
      'binary_file',
      `${quoted(path)} is a binary file (${bytes.length} bytes), not UTF-8 text; inspect it with the shell tool, e.g. \`file ${path}\` or \`xxd ${path} | head -n 20\``,
    );
  if (bytes.includes(0)) throw binary();
  try {
    return { content: utf8.decode(bytes), size: bytes.length };
  } catch {
    throw binary();
  }
}

/** Where `needle` starts in `haystack`, counting overlapping occurrences (an overlap is as ambiguous as two matches). */
function occurrences(haystack: string, needle: string): number[] {
  const found: number[] = [];
  for (let at = haystack.indexOf(needle); at !== -1; at = haystack.indexOf(needle, at + 1)) found.push(at);
  return found;
}

/** Compares workspace-relative paths component by component, so a directory's entries follow it directly. */
function comparePaths(a: string, b: string): number {
  const left = a.split('/');
  const right = b.split('/');
  for (let i = 0; i < Math.min(left.length, right.length); i++) {
    const x = left[i] as string;
    const y = right[i] as string;
    if (x !== y) return x < y ? -1 : 1;
  }
  return left.length - right.length;
}

export class WorkspaceFiles {
  /** The workspace root as sandboxd was given it (default /workspace). */
  readonly root: string;

  constructor(root = '/workspace') {
    this.root = root;
  }

  async #confine(path: string, followFinalSymlink: boolean) {
    try {
      return await confine(this.root, path, { followFinalSymlink });
    } catch (error) {
      // A directory on the way that cannot be searched; anything else (a missing workspace root) is a real failure.
      const code = errnoCode(error);
      throw code === 'EACCES' || code === 'EPERM' ? fileSystemError(error, path, 'reach') : error;
    }
  }

  async read(request: ReadFileRequest): Promise<ReadFileResponse> {
    const target = await this.#confine(request.path, true);
    let handle: FileHandle | undefined;
    try {
      handle = await open(target.real, readFlags);
      const { content, size } = await readText(handle, target.relative);
      return { path: target.relative, content, size };
    } catch (error) {
      throw fileSystemError(error, target.relative, 'read');
    } finally {
      await handle?.close();
    }
  }

  async write(request: WriteFileRequest): Promise<WriteFileResponse> {
    const target = await this.#confine(request.path, true);
    if (target.relative === '.') throw new SandboxdToolError('not_a_file', 'the workspace root is a directory; give the path of a file inside it');
    const bytes = Buffer.from(request.content, 'utf8');
    if (bytes.length > maxFileBytes) throw tooLarge(target.relative, bytes.length);
    let handle: FileHandle | undefined;
    try {
      let created = true;
      try {
        const stats = await lstat(target.real);
        if (!stats.isFile()) throw notAFile(target.relative, stats);
        created = false;
      } catch (error) {
        if (errnoCode(error) !== 'ENOENT') throw error;
      }
      const parent = dirname(target.real);
      await mkdir(parent, { recursive: true });
      // The parent did not all exist when confine() looked; make sure what mkdir walked through is still ours.
      if (!isInside(target.rootReal, await realpath(parent))) {
        throw new SandboxdToolError('path_outside_workspace', `${quoted(target.relative)} changed to lead outside the workspace while it was being written`);
      }
      handle = await open(target.real, writeFlags, 0o666);
      await handle.writeFile(bytes);
      return { path: target.relative, size: bytes.length, created };
    } catch (error) {
      throw fileSystemError(error, target.relative, 'write');
    } finally {
      await handle?.close();
    }
  }

  async edit(request: EditFileRequest): Promise<EditFileResponse> {
    const target = await this.#confine(request.path, true);
    let handle: FileHandle | undefined;
    try {
      handle = await open(target.real, editFlags);
      const { content } = await readText(handle, target.relative);
      const found = occurrences(content, request.old_string);
      if (found.length === 0) {
        throw new SandboxdToolError(
          'no_match',
          `old_string was not found in ${quoted(target.relative)}; it must match the file's text exactly, including whitespace, indentation and line breaks: read the file again and copy the text to replace`,
        );
      }
      if (found.length > 1) {
        throw new SandboxdToolError(
          'multiple_matches',
          `old_string occurs ${found.length} times in ${quoted(target.relative)} but must occur exactly once; add surrounding lines to old_string (and new_string) so that it matches only the place to change`,
        );
      }
      const at = found[0] as number;
      const bytes = Buffer.from(content.slice(0, at) + request.new_string + content.slice(at + request.old_string.length), 'utf8');
      if (bytes.length > maxFileBytes) throw tooLarge(target.relative, bytes.length);
      await handle.truncate(0);
      await handle.write(bytes, 0, bytes.length, 0);
      return { path: target.relative, size: bytes.length };
    } catch (error) {
      throw fileSystemError(error, target.relative, 'edit');
    } finally {
      await handle?.close();
    }
  }

  async list(request: Pick<ListFilesRequest, 'path' | 'depth'> & { include_ignored?: boolean }): Promise<ListFilesResponse> {
    const target = await this.#confine(request.path, true);
    try {
      const stats = await lstat(target.real);
      if (!stats.isDirectory()) {
        throw new SandboxdToolError('not_a_directory', `${quoted(target.relative)} is a file, not a directory; use read_file to read it`);
      }
    } catch (error) {
      throw fileSystemError(error, target.relative, 'list');
    }
    const entries: ListFilesResponse['entries'] = [];
    const ignored: ListFilesResponse['ignored'] = [];
    let ignoredCount = 0;
    let truncated = false;
    // Ignore rules are matched against where things really are (below the workspace's real root); the listing shows
    // paths as the caller named them.
    const realRelative = target.real === target.rootReal ? '.' : target.real.slice(target.rootReal.length + 1);
    const rules = request.include_ignored ? [] : await this.#rulesDownTo(target.rootReal, realRelative);
    // Breadth first, so that a cut at maxListEntries keeps the shallow levels, which say the most about a tree.
    const queue: { real: string; relative: string; realRelative: string; level: number; rules: RuleStack }[] = [
      { real: target.real, relative: target.relative, realRelative, level: 1, rules },
    ];
    for (let item = queue.shift(); item !== undefined && !truncated; item = queue.shift()) {
      let names: string[];
      try {
        names = (await readdir(item.real)).sort();
      } catch (error) {
        if (item.level === 1) throw fileSystemError(error, target.relative, 'list');
        continue; // removed or unreadable since it was seen: list what can be listed
      }
      for (const name of names) {
        const real = join(item.real, name);
        let entryStats: Stats;
        try {
          entryStats = await lstat(real);
        } catch {
          continue;
        }
        const relative = item.relative === '.' ? name : `${item.relative}/${name}`;
        const entryRealRelative = item.realRelative === '.' ? name : `${item.realRelative}/${name}`;
        const type = fileType(entryStats);
        if (!request.include_ignored) {
          const reason = ignoredBecause(item.rules, entryRealRelative, name, type === 'directory');
          if (reason !== undefined) {
            if (ignoredCount++ < maxIgnoredEntries) ignored.push({ path: relative, type, reason });
            continue;
          }
        }
        if (entries.length >= maxListEntries) {
          truncated = true;
          break;
        }
        entries.push({ path: relative, type, size: type === 'file' || type === 'symlink' ? entryStats.size : 0 });
        // Symlinks are listed, never followed: a link may point anywhere.
        if (type === 'directory' && item.level < request.depth) {
          const own = request.include_ignored ? undefined : await directoryRules(real, entryRealRelative);
          queue.push({ real, relative, realRelative: entryRealRelative, level: item.level + 1, rules: own === undefined ? item.rules : [...item.rules, own] });
        }
      }
    }
    entries.sort((a, b) => comparePaths(a.path, b.path));
    ignored.sort((a, b) => comparePaths(a.path, b.path));
    return { path: target.relative, entries, truncated, ignored, ignored_count: ignoredCount };
  }

  /** The ignore rules of every directory from the workspace root down to `realRelative` (inclusive), outermost first. */
  async #rulesDownTo(rootReal: string, realRelative: string): Promise<RuleStack> {
    const parts = realRelative === '.' ? [] : realRelative.split('/');
    const stack = [];
    for (let depth = 0; depth <= parts.length; depth++) {
      const relative = depth === 0 ? '.' : parts.slice(0, depth).join('/');
      const rules = await directoryRules(depth === 0 ? rootReal : join(rootReal, relative), relative);
      if (rules !== undefined) stack.push(rules);
    }
    return stack;
  }

  async delete(request: DeleteFileRequest): Promise<DeleteFileResponse> {
    const { relative } = await lexicalRelative(this.root, request.path);
    if (relative === '.') {
      throw new SandboxdToolError('invalid_request', 'refusing to delete the workspace root; delete the entries inside it instead (list_files shows them)');
    }
    const target = await this.#confine(request.path, false);
    if (target.real === target.rootReal) throw new SandboxdToolError('invalid_request', 'refusing to delete the workspace root');
    try {
      const stats = await lstat(target.real);
      const type = fileType(stats);
      // rm does not follow symlinks inside the tree; unlink removes a link itself.
      if (type === 'directory') await rm(target.real, { recursive: true });
      else await unlink(target.real);
      return { path: target.relative, type };
    } catch (error) {
      throw fileSystemError(error, target.relative, 'delete');
    }
  }
}
