// Workspace snapshots as git commits, made by `git fast-import` from a stream workcell writes itself: the bytes of each
// file come from a WorkspaceSource (opened without following links, checked against the SHA-256 the walk saw), the
// names are C-quoted, `.git` never appears. So git stores exactly what the walk saw and nothing the agent could point
// it at. The baseline (workspace-baseline.ts) is one such commit in jobs/<id>/baseline/repo.git; a diff makes another on
// top of it in a scratch repository (objects borrowed from the baseline's through alternates) and lets git diff the two.
import { Readable } from 'node:stream';
import { WorkcellError } from '../../errors.ts';
import type { FileChange, TreeEntry, WorkspaceSource } from './workspace-tree.ts';

/** git's empty tree: the base of a diff for a job that started with an empty workspace. */
export const emptyTreeId = '4b825dc642cb6eb9a060e54bf8d69288fbee4904';
export const committer = 'workcell <workcell@localhost> 0 +0000';

/** A path as fast-import (and git's quoting) takes it: always quoted, `"` `\` and control bytes escaped. */
export function quotePath(path: string): string {
  let out = '"';
  for (const byte of Buffer.from(path, 'utf8')) {
    if (byte === 0x22) out += '\\"';
    else if (byte === 0x5c) out += '\\\\';
    else if (byte < 0x20 || byte === 0x7f) out += `\\${byte.toString(8).padStart(3, '0')}`;
    else out += String.fromCharCode(byte);
  }
  return `${out}"`;
}

function fileMode(entry: TreeEntry): string {
  if (entry.type === 'symlink') return '120000';
  return entry.executable === true ? '100755' : '100644';
}

/** The bytes of one tree entry, checked: the source's content must be what the walk hashed (its size, its ETag). */
async function* entryData(source: WorkspaceSource, entry: TreeEntry, signal: AbortSignal | undefined): AsyncGenerator<Buffer> {
  if (entry.type === 'symlink') {
    const target = Buffer.from(entry.target ?? '', 'utf8');
    yield Buffer.from(`data ${target.length}\n`);
    yield target;
    yield Buffer.from('\n');
    return;
  }
  const result = await source.get(entry.path, signal === undefined ? {} : { signal });
  if (result.kind !== 'file' || result.etag !== `"${entry.sha256}"` || result.size !== entry.size) {
    if (result.kind === 'file') result.body.destroy();
    throw new WorkcellError('conflict', `${JSON.stringify(entry.path)} changed while the diff was being made; ask again`);
  }
  yield Buffer.from(`data ${result.size}\n`);
  let sent = 0;
  for await (const chunk of result.body as AsyncIterable<Buffer>) {
    sent += chunk.length;
    yield chunk;
  }
  if (sent !== result.size) throw new WorkcellError('conflict', `${JSON.stringify(entry.path)} changed while the diff was being made; ask again`);
  yield Buffer.from('\n');
}

/**
 * A fast-import stream that commits `ref`: from `parent` (a commit id) with `changes` applied (deleted paths removed,
 * added and changed ones written with their content from `source`), or, without a parent, `entries` as the whole tree.
 */
export function fastImportStream(options: { ref: string; parent?: string | undefined; entries?: readonly TreeEntry[]; changes?: readonly FileChange[]; current?: ReadonlyMap<string, TreeEntry>; source: WorkspaceSource; signal?: AbortSignal }): Readable {
  async function* generate(): AsyncGenerator<Buffer> {
    yield Buffer.from(`commit ${options.ref}\ncommitter ${committer}\ndata 0\n`);
    if (options.parent !== undefined) yield Buffer.from(`from ${options.parent}\n`);
    const writes: TreeEntry[] = [];
    if (options.changes !== undefined) {
      // Deletions first: a file replaced by a directory of the same name (or the reverse) must go before its successor.
      for (const change of options.changes) if (change.change === 'deleted') yield Buffer.from(`D ${quotePath(change.path)}\n`);
      for (const change of options.changes) {
        if (change.change === 'deleted') continue;
        const entry = options.current?.get(change.path);
        if (entry === undefined) throw new Error(`no tree entry for ${change.path}`);
        writes.push(entry);
      }
    } else writes.push(...(options.entries ?? []));
    for (const entry of writes) {
      options.signal?.throwIfAborted();
      yield Buffer.from(`M ${fileMode(entry)} inline ${quotePath(entry.path)}\n`);
      yield* entryData(options.source, entry, options.signal);
    }
    yield Buffer.from('done\n');
  }
  return Readable.from(generate(), { objectMode: false });
}
