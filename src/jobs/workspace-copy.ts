// Copies a finished job's workspace into a new job's (a fork: POST /schedule {from_job}). The source was written by
// untrusted code and the server may be root, so the copy keeps the zip's promises (artifacts.ts walks it): it never
// follows a symlink, opens only regular files (O_NOFOLLOW, checked against what the walk saw, inside the workspace),
// copies a symlink only when its target stays inside the workspace, skips FIFOs, sockets and devices, and keeps
// permission bits only (no set-id or sticky bits). The destination is fresh and written only here: every file is
// created with O_EXCL|O_NOFOLLOW, so nothing is ever written through a link. Directories get their own modes last,
// so a read-only directory does not stop its children from being copied.
import { constants } from 'node:fs';
import { chmod, mkdir, open, symlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { WorkcellError } from '../errors.ts';
import { openWorkspaceEntry, walkWorkspace, type SkippedEntry } from './artifacts.ts';

export interface CopyResult {
  entries: number;
  bytes: number;
  skipped: SkippedEntry[];
}

/** Copies `source` into the empty directory `destination`; more than `maxBytes` of file content is refused (413). */
export async function copyWorkspace(source: string, destination: string, options: { maxBytes: number; signal?: AbortSignal }): Promise<CopyResult> {
  const skipped: SkippedEntry[] = [];
  const walked = await walkWorkspace(source, (path, reason) => skipped.length < 1000 && skipped.push({ path, reason }), options.signal);
  if (walked === undefined) return { entries: 0, bytes: 0, skipped };
  const directories: Array<{ path: string; mode: number }> = [];
  let entries = 0;
  let bytes = 0;
  for await (const item of walked.items) {
    const target = join(destination, item.name);
    const mode = Number(item.stats.mode) & 0o777;
    if (item.kind === 'directory') {
      await mkdir(target, { mode: 0o700 });
      directories.push({ path: target, mode });
    } else if (item.kind === 'symlink') {
      await symlink(item.target, target);
    } else {
      const opened = await openWorkspaceEntry(item.absolutePath, item.stats, walked.rootReal, 'file');
      if ('skip' in opened) {
        skipped.push({ path: item.name, reason: opened.skip });
        continue;
      }
      try {
        const size = Number(opened.stats.size);
        bytes += size;
        if (bytes > options.maxBytes) {
          throw new WorkcellError('payload_too_large', `the source job's workspace holds more than ${options.maxBytes} bytes of files, more than the new job's disk (limits.disk_mb) holds: ask for a larger disk_mb`);
        }
        const output = await open(target, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, mode | 0o600);
        try {
          await copyBytes(opened.handle, output, size, options.signal);
          await output.chmod(mode);
        } finally {
          await output.close();
        }
      } finally {
        await opened.handle.close();
      }
    }
    entries += 1;
  }
  for (const directory of directories.reverse()) await chmod(directory.path, directory.mode | 0o700);
  return { entries, bytes, skipped };
}

/**
 * Copies exactly `size` bytes (what fstat saw: a file that grows cannot outrun the size check). A loop over the two
 * handles rather than a stream pipeline: streams that must not close their handles (autoClose: false) never emit
 * 'close', which pipeline waits for.
 */
async function copyBytes(input: FileHandle, output: FileHandle, size: number, signal: AbortSignal | undefined): Promise<void> {
  const buffer = Buffer.allocUnsafe(Math.min(size, 1 << 20));
  let position = 0;
  while (position < size) {
    signal?.throwIfAborted();
    const { bytesRead } = await input.read(buffer, 0, Math.min(buffer.length, size - position), position);
    if (bytesRead === 0) break; // the file shrank: what was there is copied
    let written = 0;
    while (written < bytesRead) written += (await output.write(buffer, written, bytesRead - written)).bytesWritten;
    position += bytesRead;
  }
}
