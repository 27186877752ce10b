// The tree an upload builds before it becomes a job's workspace (multipart POST /schedule: `files` parts and the
// entries of one archive). Every entry goes through here, so the rules are enforced once, with the artifacts
// extractor's naming rules (jobs/artifacts.ts): no absolute paths, no `..`, no backslashes or NUL; no name twice; no
// entry under a file or a symlink; symlinks only when their target stays inside the tree (created last, so nothing is
// ever written through one); regular files, directories and symlinks only (the archive readers refuse hard links,
// devices and FIFOs); permission bits only (set-id and sticky bits dropped) with the owner's read and write added, so
// the sandbox user, who gets the tree, can use every file; limits on entries, bytes and the size of each file.
// The tree is fresh and written only by this class: it never follows a link and never replaces anything. It must never
// leave a partial tree anyone uses: the caller deletes the whole staging directory on any error.
import { constants } from 'node:fs';
import { mkdir, open, symlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { WorkcellError } from '../../errors.ts';
import { archiveNameProblem, symlinkTargetProblem } from '../artifacts.ts';

export interface UploadLimits {
  /** Bytes of file content in all (WORKCELL_UPLOAD_MAX_BYTES). */
  maxBytes: number;
  /** Entries: files, directories (those made for a file's path too) and symlinks (WORKCELL_UPLOAD_MAX_FILES). */
  maxEntries: number;
  /** Bytes of one file (WORKCELL_UPLOAD_MAX_FILE_BYTES). */
  maxFileBytes: number;
}

/** Where an entry came from, as messages name it: `files part "src/a.txt"`, `archive entry "x/../y"`. */
export type EntryOrigin = 'files part' | 'archive entry';

type Kind = 'file' | 'directory' | 'symlink';

/** Longest path (bytes) and path component the tree accepts: what Linux resolves (PATH_MAX, NAME_MAX). */
const maxPathBytes = 4095;
const maxComponentBytes = 255;
/** File system block: the disk estimate rounds every file up to it and counts one per directory and symlink. */
const blockBytes = 4096;

/** The 4xx for an entry that breaks a rule: names the entry (JSON-quoted: NUL and controls show escaped) and why. */
export function refuseEntry(origin: EntryOrigin, name: string, why: string, code: 'invalid_request' | 'payload_too_large' = 'invalid_request'): WorkcellError {
  return new WorkcellError(code, `${origin} ${JSON.stringify(name)} ${why}`, { details: { entry: name } });
}

export class UploadTree {
  readonly #root: string;
  readonly #limits: UploadLimits;
  readonly #kinds = new Map<string, Kind>();
  /** Directories whose mode and time are applied at the end (so a read-only one does not stop its own content). */
  readonly #directories = new Map<string, { mode: number; mtime: Date | undefined }>();
  readonly #symlinks: Array<{ name: string; target: string }> = [];
  #bytes = 0;
  #diskBytes = 0;

  /** `root` must be a new, empty directory that nothing else writes to. */
  constructor(root: string, limits: UploadLimits) {
    this.#root = root;
    this.#limits = limits;
  }

  get entries(): number {
    return this.#kinds.size;
  }

  /** Bytes of file content. */
  get bytes(): number {
    return this.#bytes;
  }

  /** About what the tree takes on a file system: files rounded up to 4 KiB blocks, a block per directory and symlink. */
  get diskBytes(): number {
    return this.#diskBytes;
  }

  /** A directory entry (`a/b/` or `a/b`); one the tree already made for a file's path is fine. */
  async directory(origin: EntryOrigin, rawName: string, options: { mode?: number | undefined; mtime?: Date | undefined } = {}): Promise<void> {
    const name = this.#checkName(origin, rawName, true);
    if (name === '') return; // `./`: the root itself
    const existing = this.#kinds.get(name);
    if (existing !== undefined && existing !== 'directory') throw refuseEntry(origin, rawName, `appears twice in the upload (once as a ${existing}): refused`);
    await this.#makeParents(origin, rawName, name);
    if (existing === undefined) await this.#makeDirectory(origin, rawName, name);
    this.#directories.set(name, { mode: directoryMode(options.mode), mtime: options.mtime });
  }

  /**
   * A regular file with its content. `declaredSize` (an archive header's) is checked against the limits before a byte
   * is read; the content is counted as it streams whatever was declared.
   */
  async file(origin: EntryOrigin, rawName: string, content: AsyncIterable<Buffer>, options: { declaredSize?: number | undefined; mode?: number | undefined; mtime?: Date | undefined } = {}): Promise<void> {
    const name = this.#checkName(origin, rawName, false);
    this.#claimLeaf(origin, rawName, name, 'file');
    if (options.declaredSize !== undefined) this.#checkSize(origin, rawName, options.declaredSize, options.declaredSize);
    await this.#makeParents(origin, rawName, name);
    let handle: FileHandle;
    try {
      // O_EXCL and O_NOFOLLOW: nothing is ever replaced or written through a link (there are none yet anyway).
      handle = await open(join(this.#root, name), constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
    } catch (error) {
      throw this.#fileSystemRefusal(origin, rawName, error);
    }
    let size = 0;
    try {
      for await (const chunk of content) {
        size += chunk.length;
        this.#checkSize(origin, rawName, size, chunk.length);
        this.#bytes += chunk.length;
        await writeAll(handle, chunk);
      }
      await handle.chmod(fileMode(options.mode));
      if (options.mtime !== undefined) await handle.utimes(options.mtime, options.mtime);
    } finally {
      await handle.close();
    }
    this.#diskBytes += Math.max(blockBytes, Math.ceil(size / blockBytes) * blockBytes);
  }

  /** A symlink; refused unless its target stays inside the tree. Made by finish(), after every file. */
  async symlink(origin: EntryOrigin, rawName: string, target: string): Promise<void> {
    const name = this.#checkName(origin, rawName, false);
    const problem = symlinkTargetProblem(name, target, 'the workspace');
    if (problem !== undefined) throw refuseEntry(origin, rawName, `is a symlink to ${JSON.stringify(target)}, which would lead out of the workspace: refused (${problem}; links may only point inside)`);
    this.#claimLeaf(origin, rawName, name, 'symlink');
    await this.#makeParents(origin, rawName, name);
    this.#symlinks.push({ name, target });
    this.#diskBytes += blockBytes;
  }

  /** Makes the symlinks, then gives the directories their modes (deepest first). Call once every entry is in. */
  async finish(): Promise<void> {
    for (const { name, target } of this.#symlinks) await symlink(target, join(this.#root, name));
    const deepestFirst = [...this.#directories].sort(([a], [b]) => b.split('/').length - a.split('/').length);
    for (const [name, { mode, mtime }] of deepestFirst) {
      const handle = await open(join(this.#root, name), constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
      try {
        await handle.chmod(mode);
        if (mtime !== undefined) await handle.utimes(mtime, mtime);
      } finally {
        await handle.close();
      }
    }
  }

  /** The normalized name (no `.` or empty segments, no trailing slash), or a refusal saying what is wrong with it. */
  #checkName(origin: EntryOrigin, rawName: string, directory: boolean): string {
    const trimmed = directory ? rawName.replace(/\/+$/, '') : rawName;
    if (directory && trimmed === '' && rawName !== '') return '';
    const problem = archiveNameProblem(trimmed);
    if (problem !== undefined) throw refuseEntry(origin, rawName, `cannot be placed in the workspace: refused (${problem})`);
    if (!directory && rawName.endsWith('/')) throw refuseEntry(origin, rawName, 'ends with "/" but is not a directory: refused');
    const segments = trimmed.split('/').filter((segment) => segment !== '' && segment !== '.');
    const name = segments.join('/');
    if (name === '') {
      if (directory) return '';
      throw refuseEntry(origin, rawName, 'has no name (it names the workspace itself): refused');
    }
    if (Buffer.byteLength(name) > maxPathBytes) throw refuseEntry(origin, rawName, `is longer than ${maxPathBytes} bytes: refused`);
    if (segments.some((segment) => Buffer.byteLength(segment) > maxComponentBytes)) throw refuseEntry(origin, rawName, `has a path component longer than ${maxComponentBytes} bytes: refused`);
    return name;
  }

  #claimLeaf(origin: EntryOrigin, rawName: string, name: string, kind: Kind): void {
    const existing = this.#kinds.get(name);
    if (existing !== undefined) throw refuseEntry(origin, rawName, `appears twice in the upload${existing === kind ? '' : ` (once as a ${existing})`}: refused`);
    this.#count(origin, rawName);
    this.#kinds.set(name, kind);
  }

  #count(origin: EntryOrigin, rawName: string): void {
    if (this.#kinds.size >= this.#limits.maxEntries) {
      throw refuseEntry(origin, rawName, `is past the limit of ${this.#limits.maxEntries} entries (files, directories and links; WORKCELL_UPLOAD_MAX_FILES): refused`, 'payload_too_large');
    }
  }

  #checkSize(origin: EntryOrigin, rawName: string, fileBytes: number, adding: number): void {
    if (fileBytes > this.#limits.maxFileBytes) {
      throw refuseEntry(origin, rawName, `is larger than ${this.#limits.maxFileBytes} bytes, the most one file may be (WORKCELL_UPLOAD_MAX_FILE_BYTES): refused`, 'payload_too_large');
    }
    if (this.#bytes + adding > this.#limits.maxBytes) {
      throw refuseEntry(origin, rawName, `takes the upload past ${this.#limits.maxBytes} bytes (WORKCELL_UPLOAD_MAX_BYTES; is this a zip bomb?): refused`, 'payload_too_large');
    }
  }

  /** Checks that no parent of `name` is a file or a symlink, recording the missing ones as directories. */
  #ensureParentKinds(origin: EntryOrigin, rawName: string, name: string): string[] {
    const segments = name.split('/');
    const missing: string[] = [];
    for (let depth = 1; depth < segments.length; depth += 1) {
      const parent = segments.slice(0, depth).join('/');
      const kind = this.#kinds.get(parent);
      if (kind === 'file') throw refuseEntry(origin, rawName, `lies under ${JSON.stringify(parent)}, which is a file (a file where a directory must go): refused`);
      if (kind === 'symlink') throw refuseEntry(origin, rawName, `lies under ${JSON.stringify(parent)}, which is a symlink, and would be written through it: refused`);
      if (kind === undefined) {
        this.#count(origin, rawName);
        this.#kinds.set(parent, 'directory');
        missing.push(parent);
      }
    }
    return missing;
  }

  async #makeParents(origin: EntryOrigin, rawName: string, name: string): Promise<void> {
    for (const parent of this.#ensureParentKinds(origin, rawName, name)) {
      await this.#makeDirectory(origin, rawName, parent);
      this.#directories.set(parent, { mode: 0o755, mtime: undefined });
    }
  }

  async #makeDirectory(origin: EntryOrigin, rawName: string, name: string): Promise<void> {
    if (!this.#kinds.has(name)) {
      this.#count(origin, rawName);
      this.#kinds.set(name, 'directory');
    }
    try {
      await mkdir(join(this.#root, name), { mode: 0o700 });
    } catch (error) {
      throw this.#fileSystemRefusal(origin, rawName, error);
    }
    this.#diskBytes += blockBytes;
  }

  /** A file system error on a checked name (a name the file system cannot hold, e.g. invalid bytes) is the client's. */
  #fileSystemRefusal(origin: EntryOrigin, rawName: string, error: unknown): WorkcellError {
    const code = error instanceof Error && 'code' in error ? String(error.code) : 'error';
    return refuseEntry(origin, rawName, `cannot be created in the workspace (${code}): refused`);
  }
}

/** Permission bits only (set-id and sticky dropped), with the owner's read and write: the sandbox user owns the file. */
export function fileMode(mode: number | undefined): number {
  return mode === undefined ? 0o644 : (mode & 0o777) | 0o600;
}

function directoryMode(mode: number | undefined): number {
  return mode === undefined ? 0o755 : (mode & 0o777) | 0o700;
}

async function writeAll(handle: FileHandle, chunk: Buffer): Promise<void> {
  let offset = 0;
  while (offset < chunk.length) {
    const { bytesWritten } = await handle.write(chunk, offset, chunk.length - offset);
    offset += bytesWritten;
  }
}
