// The tree of a workspace as a diff sees it: every regular file and symlink with its SHA-256 (or link text) and whether
// it is executable, read through a WorkspaceSource: the host's copy (sandboxd/files/raw-files.ts over jobs/<id>/workspace)
// or a running job's sandbox (runtimes/sandboxd-files.ts), one directory listing at a time, never following a link.
// Left out, as git leaves them out: `.git` directories (their content is the agent's, and a commit it made shows as the
// files it changed), FIFOs, sockets and devices (reported as skipped), and, when asked, what the workspace's .gitignore
// files ignore (with git's rules: an ignored directory is not entered), except files the baseline had ("tracked"):
// those are always compared, as `git add -A` keeps tracked files however they are ignored.
import { ignoredByRules, type DirectoryRules } from '../../sandboxd/files/ignore-rules.ts';
import type { RawGetResult, RawListingEntry } from '../../sandboxd/files/raw-files.ts';
import { WorkcellError } from '../../errors.ts';

/** What a diff reads a workspace through. */
export interface WorkspaceSource {
  get(path: string, options: { etags?: 'budget' | 'all'; signal?: AbortSignal }): Promise<RawGetResult>;
}

export interface TreeEntry {
  /** Workspace-relative, forward slashes. */
  path: string;
  type: 'file' | 'symlink';
  size: number;
  /** Files: the content's SHA-256 (hex). */
  sha256?: string;
  executable?: boolean;
  /** Symlinks: the link's text. */
  target?: string;
}

export interface WorkspaceTree {
  entries: TreeEntry[];
  /** What could not be compared and why (the first 100). */
  skipped: Array<{ path: string; reason: string }>;
  /** A directory had more entries than one listing returns, or the tree more than maxTreeEntries: the rest is missing. */
  truncated: boolean;
}

export const maxTreeEntries = 200_000;
const maxGitignoreBytes = 256 * 1024;
const maxSkippedListed = 100;

export function isGitDirectoryName(name: string): boolean {
  return name.toLowerCase() === '.git';
}

async function readText(source: WorkspaceSource, path: string, signal: AbortSignal | undefined): Promise<string | undefined> {
  const result = await source.get(path, signal === undefined ? {} : { signal }).catch(() => undefined);
  if (result?.kind !== 'file') return undefined;
  if (result.size > maxGitignoreBytes) {
    result.body.destroy();
    return undefined;
  }
  const chunks: Buffer[] = [];
  for await (const chunk of result.body as AsyncIterable<Buffer>) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

/**
 * Walks the workspace. `gitignore`: honour its .gitignore files; `tracked`: paths always compared (the baseline's).
 */
export async function readWorkspaceTree(source: WorkspaceSource, options: { gitignore: boolean; tracked?: ReadonlySet<string>; signal?: AbortSignal }): Promise<WorkspaceTree> {
  const tracked = options.tracked ?? new Set<string>();
  // Every directory that holds a tracked path: an ignored one is still entered for those.
  const trackedDirectories = new Set<string>();
  for (const path of tracked) {
    const parts = path.split('/');
    for (let index = 1; index < parts.length; index++) trackedDirectories.add(parts.slice(0, index).join('/'));
  }
  const tree: WorkspaceTree = { entries: [], skipped: [], truncated: false };
  let skippedTotal = 0;
  const skip = (path: string, reason: string) => {
    if (skippedTotal++ < maxSkippedListed) tree.skipped.push({ path, reason });
  };
  const { default: ignore } = await import('ignore');
  const queue: Array<{ path: string; rules: DirectoryRules[]; trackedOnly: boolean }> = [{ path: '', rules: [], trackedOnly: false }];
  for (let item = queue.shift(); item !== undefined; item = queue.shift()) {
    options.signal?.throwIfAborted();
    const listed = await source.get(item.path, { etags: 'all', ...(options.signal === undefined ? {} : { signal: options.signal }) });
    if (listed.kind !== 'directory') {
      if (listed.kind === 'file') listed.body.destroy();
      if (item.path === '') throw new WorkcellError('internal', 'the workspace root is not a directory');
      skip(item.path, 'it changed from a directory to a file during the walk');
      continue;
    }
    if (listed.listing.truncated) tree.truncated = true;
    let rules = item.rules;
    if (options.gitignore && !item.trackedOnly && listed.listing.entries.some((entry) => entry.name === '.gitignore' && entry.type === 'file')) {
      const text = await readText(source, item.path === '' ? '.gitignore' : `${item.path}/.gitignore`, options.signal);
      if (text !== undefined) rules = [...rules, { base: item.path, matcher: ignore({ allowRelativePaths: true }).add(text) }];
    }
    for (const entry of listed.listing.entries) {
      const path = item.path === '' ? entry.name : `${item.path}/${entry.name}`;
      if (isGitDirectoryName(entry.name)) continue;
      const ignored = item.trackedOnly || (options.gitignore && ignoredByRules(rules, path, entry.type === 'directory'));
      if (entry.type === 'directory') {
        if (!ignored) queue.push({ path, rules, trackedOnly: false });
        else if (trackedDirectories.has(path)) queue.push({ path, rules, trackedOnly: true });
        continue;
      }
      if (ignored && !tracked.has(path)) continue;
      const converted = treeEntry(path, entry);
      if (typeof converted === 'string') {
        skip(path, converted);
        continue;
      }
      if (tree.entries.length >= maxTreeEntries) {
        tree.truncated = true;
        return tree;
      }
      tree.entries.push(converted);
    }
  }
  tree.entries.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  return tree;
}

function treeEntry(path: string, entry: RawListingEntry): TreeEntry | string {
  if (entry.type === 'symlink') return { path, type: 'symlink', size: entry.size, target: entry.target ?? '' };
  if (entry.type === 'file') {
    if (typeof entry.etag !== 'string') return 'its content could not be hashed (unreadable)';
    return { path, type: 'file', size: entry.size, sha256: entry.etag.slice(1, -1), executable: (entry.mode & 0o111) !== 0 };
  }
  return 'it is not a regular file, directory or symlink (a FIFO, socket or device)';
}

export type Change = 'added' | 'changed' | 'deleted';
export interface FileChange {
  path: string;
  change: Change;
  /** What is there now (deleted: what was). */
  type: 'file' | 'symlink';
  /** Bytes now (absent when deleted). */
  size?: number;
  /** Bytes at the start (absent when added). */
  previous_size?: number;
}

function sameEntry(a: TreeEntry, b: TreeEntry): boolean {
  if (a.type !== b.type) return false;
  if (a.type === 'symlink') return a.target === b.target;
  return a.sha256 === b.sha256 && (a.executable ?? false) === (b.executable ?? false);
}

/** The files added, changed (content, link text, type or executable bit) and deleted from `before` to `after`, by path. */
export function compareTrees(before: readonly TreeEntry[], after: readonly TreeEntry[]): FileChange[] {
  const old = new Map(before.map((entry) => [entry.path, entry]));
  const changes: FileChange[] = [];
  for (const entry of after) {
    const previous = old.get(entry.path);
    old.delete(entry.path);
    if (previous === undefined) changes.push({ path: entry.path, change: 'added', type: entry.type, size: entry.size });
    else if (!sameEntry(previous, entry)) changes.push({ path: entry.path, change: 'changed', type: entry.type, size: entry.size, previous_size: previous.size });
  }
  for (const entry of old.values()) changes.push({ path: entry.path, change: 'deleted', type: entry.type, previous_size: entry.size });
  return changes.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}
