// What a job changed: the files added, changed and deleted since its baseline (workspace-baseline.ts), and the same as a
// unified diff, made by git itself from two snapshot commits (snapshot.ts, git-jail.ts). The workspace is read through a
// WorkspaceSource: the host's copy once the job has ended, its sandbox while it runs. The workspace's .gitignore files
// are honoured as git would (`git add -A`): ignored files the baseline did not have are not changes; files it had are.
import { randomBytes } from 'node:crypto';
import { chown, mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Writable } from 'node:stream';
import type { Logger } from 'pino';
import type { Config } from '../../config.ts';
import { baselinePaths, baselineTree, type WorkspaceBaseline } from '../workspace-baseline.ts';
import { GitJail, jailWorkDir } from './git-jail.ts';
import { emptyTreeId, fastImportStream } from './snapshot.ts';
import { compareTrees, readWorkspaceTree, type FileChange, type TreeEntry, type WorkspaceSource } from './workspace-tree.ts';

export interface WorkspaceChanges {
  files: FileChange[];
  /** What the walk could not compare (FIFOs, devices, unreadable files), the first 100. */
  skipped: Array<{ path: string; reason: string }>;
  /** The workspace (or its baseline) was larger than a walk holds: the list may miss changes. */
  truncated: boolean;
  /** The current entries by path, for the patch. */
  current: ReadonlyMap<string, TreeEntry>;
}

export async function workspaceChanges(source: WorkspaceSource, baseline: WorkspaceBaseline, signal?: AbortSignal): Promise<WorkspaceChanges> {
  const before = baselineTree(baseline);
  const tree = await readWorkspaceTree(source, { gitignore: true, tracked: new Set(before.map((entry) => entry.path)), ...(signal === undefined ? {} : { signal }) });
  return {
    files: compareTrees(before, tree.entries),
    skipped: tree.skipped,
    truncated: tree.truncated || baseline.truncated,
    current: new Map(tree.entries.map((entry) => [entry.path, entry])),
  };
}

/**
 * Writes the unified diff of `changes` against the baseline to `output` (not ended): `git diff-tree -p` between the
 * baseline's snapshot and a commit of the changed files, renames found, binary files noted as git notes them.
 */
export async function writeWorkspacePatch(options: {
  jobRoot: string;
  baseline: WorkspaceBaseline;
  changes: WorkspaceChanges;
  source: WorkspaceSource;
  output: Writable;
  config: Pick<Config, 'sandboxUser'>;
  logger?: Pick<Logger, 'warn'>;
  signal?: AbortSignal;
}): Promise<void> {
  if (options.changes.files.length === 0) return;
  const jail = new GitJail(options.config, options.logger);
  const scratch = join(options.jobRoot, `.diff-${randomBytes(6).toString('hex')}`);
  // 0711: the jail's git (the sandbox user) reaches repo.git through it; nothing in it is listable.
  await mkdir(scratch, { mode: 0o711 });
  try {
    const repo = join(scratch, 'repo.git');
    await mkdir(repo, { mode: 0o700 });
    const user = await jail.sandboxUser();
    if (user !== undefined) await chown(repo, user.uid, user.gid);
    const snapshot = options.baseline.snapshot;
    const base = snapshot === null ? undefined : baselinePaths(options.jobRoot).repo;
    const run = { work: repo, base, gitDir: jailWorkDir, ...(options.signal === undefined ? {} : { signal: options.signal }) };
    await jail.run({ ...run, args: ['init', '--quiet', '--bare', jailWorkDir] });
    if (base !== undefined) await writeFile(join(repo, 'objects', 'info', 'alternates'), `${await jail.baseObjects(base)}\n`);
    const ref = 'refs/workcell/final';
    const stdin = fastImportStream({
      ref,
      parent: snapshot ?? undefined,
      changes: options.changes.files,
      current: options.changes.current,
      source: options.source,
      ...(options.signal === undefined ? {} : { signal: options.signal }),
    });
    await jail.run({ ...run, args: ['fast-import', '--quiet', '--done'], stdin });
    await jail.run({
      ...run,
      args: ['diff-tree', '-p', '-r', '--binary', '--find-renames', '--no-color', '--no-ext-diff', '--no-textconv', snapshot ?? emptyTreeId, ref],
      stdout: options.output,
      timeoutMs: 600_000,
    });
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}
