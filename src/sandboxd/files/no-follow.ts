// Opening paths inside a workspace without ever following a symbolic link: the ground the file routes (people's
// GET/PUT/DELETE /jobs/:id/files/<path>) stand on, on both sides: in sandboxd, over /workspace while the job runs, and
// on the host, over jobs/<id>/workspace after it ended, a tree a hostile agent wrote (links to /etc/shadow or to other
// jobs, FIFOs, device nodes), read and written as root. THIS MODULE MUST NEVER OPEN, CREATE OR REMOVE ANYTHING OUTSIDE
// THE ROOT IT WAS GIVEN.
//
// How: a path is split into names checked lexically (no `..`, no `.`, no empty names, no NUL, no absolute paths), then
// each directory is opened relative to its parent's descriptor with O_NOFOLLOW | O_DIRECTORY. Node has no openat(2);
// `/proc/self/fd/<fd>/<name>` is its equivalent: the kernel resolves <name> in the directory the descriptor holds,
// wherever that directory's path leads by now, and O_NOFOLLOW applies to <name>. A symbolic link anywhere on the path
// is refused (never resolved, not even when it points inside), so there is no check-then-use race to lose: what was
// opened is what is used. Final names are acted on through their parent's descriptor too (lstat, open with
// O_NOFOLLOW | O_NONBLOCK, mkdir, rename, unlink, rmdir: none of them follows a final symlink).
import { constants, existsSync } from 'node:fs';
import { lstat, mkdir, open, type FileHandle } from 'node:fs/promises';
import { SandboxdToolError } from '../errors.ts';

/** Longest path (bytes) and name the routes accept: what Linux resolves (PATH_MAX, NAME_MAX). */
export const maxPathBytes = 4095;
export const maxNameBytes = 255;

const directoryFlags = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW | constants.O_NONBLOCK;

export function errnoCode(error: unknown): string | undefined {
  return typeof error === 'object' && error !== null && 'code' in error && typeof error.code === 'string' ? error.code : undefined;
}

function quoted(path: string): string {
  return JSON.stringify(path);
}

/**
 * Splits a workspace-relative path into its names, or refuses it (400): '' and '.' are the root; a trailing '/' is
 * allowed; `..`, `.` inside the path, empty names (`a//b`), absolute paths, NUL bytes, names over 255 bytes and paths
 * over 4095 bytes are not.
 */
export function parseWorkspacePath(raw: string): string[] {
  const refuse = (why: string) => new SandboxdToolError('invalid_request', `path ${quoted(raw.length > 300 ? `${raw.slice(0, 300)}...` : raw)} ${why}`);
  if (raw.includes('\0')) throw refuse('contains a NUL byte');
  if (Buffer.byteLength(raw) > maxPathBytes) throw refuse(`is longer than ${maxPathBytes} bytes`);
  if (raw === '' || raw === '.' || raw === './') return [];
  if (raw.startsWith('/')) throw refuse('is absolute: give a path relative to the workspace, e.g. "src/index.ts"');
  const names = (raw.endsWith('/') ? raw.slice(0, -1) : raw).split('/');
  for (const name of names) {
    if (name === '..') throw refuse('climbs out of the workspace with ".."; paths stay inside it');
    if (name === '.' || name === '') throw refuse(`has an empty or "." segment; write the path plainly, e.g. "src/index.ts"`);
    if (Buffer.byteLength(name) > maxNameBytes) throw refuse(`has a name longer than ${maxNameBytes} bytes`);
  }
  return names;
}

let procFd: boolean | undefined;

/** `name` inside the directory open as `dir`: the path the kernel resolves relative to the descriptor. */
export function at(dir: FileHandle, name: string): string {
  procFd ??= existsSync('/proc/self/fd');
  if (!procFd) throw new SandboxdToolError('unavailable', 'the file routes need /proc (to open files relative to their directory); it is not mounted here');
  return `/proc/self/fd/${dir.fd}/${name}`;
}

/** What sits at a name, without following it: undefined when nothing does. */
export async function lstatAt(dir: FileHandle, name: string) {
  try {
    return await lstat(at(dir, name), { bigint: true });
  } catch (error) {
    if (errnoCode(error) === 'ENOENT') return undefined;
    throw error;
  }
}

export function symlinkRefused(path: string): SandboxdToolError {
  return new SandboxdToolError(
    'path_outside_workspace',
    `${quoted(path)} is a symbolic link: the file API never follows links (one may lead outside the workspace); use the path of what it points to, or DELETE the link itself`,
  );
}

/** Opens the workspace root itself (which must be a real directory, not a link). */
export async function openRoot(root: string): Promise<FileHandle> {
  try {
    return await open(root, directoryFlags);
  } catch (error) {
    throw new SandboxdToolError('unavailable', `the workspace ${root} cannot be opened (${errnoCode(error) ?? String(error)})`);
  }
}

/**
 * Opens the directory at `names` below `root` (a descriptor the caller keeps), one name at a time with O_NOFOLLOW.
 * With `create`, missing directories are made (mode 0755). Returns a new handle the caller closes; throws not_found
 * (a missing name, without `create`), not_a_directory (a file on the way) or path_outside_workspace (a link).
 */
export async function openDirectory(root: FileHandle, names: readonly string[], options: { create?: boolean } = {}): Promise<FileHandle> {
  let current = root;
  try {
    for (let index = 0; index < names.length; index++) {
      const name = names[index] as string;
      const shown = names.slice(0, index + 1).join('/');
      let next: FileHandle | undefined;
      for (let attempt = 0; next === undefined; attempt++) {
        try {
          next = await open(at(current, name), directoryFlags);
        } catch (error) {
          const code = errnoCode(error);
          if (code === 'ENOENT' && options.create === true && attempt === 0) {
            // Made inside the directory the descriptor holds; a name that appeared meanwhile is opened as it is.
            await mkdir(at(current, name), { mode: 0o755 }).catch((made: unknown) => {
              if (errnoCode(made) !== 'EEXIST') throw made;
            });
            continue;
          }
          if (code === 'ENOENT') throw new SandboxdToolError('not_found', `${quoted(shown)} does not exist`);
          if (code === 'ENOTDIR' || code === 'ELOOP') {
            const stats = await lstatAt(current, name);
            if (stats?.isSymbolicLink()) throw symlinkRefused(shown);
            throw new SandboxdToolError('not_a_directory', `${quoted(shown)} is not a directory (it is ${describeType(stats)})`);
          }
          if (code === 'EACCES' || code === 'EPERM') throw new SandboxdToolError('invalid_request', `permission denied: cannot open the directory ${quoted(shown)}`);
          throw error;
        }
      }
      if (current !== root) await current.close();
      current = next;
    }
    return current === root ? await open(at(root, '.'), directoryFlags) : current;
  } catch (error) {
    if (current !== root) await current.close();
    throw error;
  }
}

/** In words, for messages: "a file", "a FIFO", ... */
export function describeType(stats: { isFile(): boolean; isDirectory(): boolean; isSymbolicLink(): boolean; isFIFO(): boolean; isSocket(): boolean; isCharacterDevice(): boolean; isBlockDevice(): boolean } | undefined): string {
  if (stats === undefined) return 'missing';
  if (stats.isFile()) return 'a file';
  if (stats.isDirectory()) return 'a directory';
  if (stats.isSymbolicLink()) return 'a symbolic link';
  if (stats.isFIFO()) return 'a FIFO';
  if (stats.isSocket()) return 'a socket';
  if (stats.isCharacterDevice()) return 'a character device';
  if (stats.isBlockDevice()) return 'a block device';
  return 'neither a file nor a directory';
}
