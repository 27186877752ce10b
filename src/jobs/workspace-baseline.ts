// A job's baseline: what its workspace held when the job first started, so that GET /jobs/:id/diff can say what the job
// changed. Lives in jobs/<id>/baseline/ (the job's directory, never the sandbox's):
//   manifest.json  {version: 1, recorded_at, git?: {url, ref?, commit}, entries: [{path, type, size, sha256?,
//                   executable?, target?}], snapshot: <commit id> | null}
//     every file and symlink of the starting workspace (`.git` directories left out), with its SHA-256 or link text;
//   repo.git       a bare repository holding `snapshot`, a commit of exactly those files (refs/workcell/baseline),
//                  made by fast-import from a stream workcell wrote (changes/snapshot.ts); absent when the workspace
//                  started empty (the diff's base is then git's empty tree).
// For a git input the snapshot is the checkout of the input commit, whose blob ids are the repository's own, so the
// patch applies to the user's clone (`git apply`, `--3way`).
//
// WHO CALLS WHAT: recordWorkspaceBaseline once the workspace holds its inputs (uploads, the clone of a git input) and
// before the job's first sandbox starts; a git input's clone passes `git` (the URL, the ref asked for, the commit
// checked out). The job runner calls it right before the sandbox starts, so a job whose inputs did not record one gets
// one then (without `git`). Later calls do nothing: a resumed or continued job keeps the baseline of its first start,
// and its diff shows all the job changed. Recording reads the workspace only through the no-follow file layer and
// hands git only a stream, so it is safe even on a workspace a sandbox wrote (a fork of another job's).
// Written atomically (a temporary directory renamed into place): there is a whole baseline or none.
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { chown, mkdir, open, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { z } from 'zod';
import type { Config } from '../config.ts';
import { WorkspaceRawFiles } from '../sandboxd/files/raw-files.ts';
import { runCommand } from '../runtimes/probe.ts';
import { GitJail, jailWorkDir } from './changes/git-jail.ts';
import { fastImportStream } from './changes/snapshot.ts';
import { readWorkspaceTree, type TreeEntry, type WorkspaceSource } from './changes/workspace-tree.ts';

export const baselineRef = 'refs/workcell/baseline';

const gitOrigin = z.object({ url: z.string(), ref: z.string().optional(), commit: z.string().regex(/^[0-9a-f]{40}([0-9a-f]{24})?$/) });
const baselineEntry = z.object({
  path: z.string(),
  type: z.enum(['file', 'symlink']),
  size: z.number().int(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/).optional(),
  executable: z.boolean().optional(),
  target: z.string().optional(),
});
export const workspaceBaseline = z.object({
  version: z.literal(1),
  recorded_at: z.string(),
  git: gitOrigin.optional(),
  entries: z.array(baselineEntry),
  /** The snapshot commit in repo.git; null when the workspace started empty. */
  snapshot: z.string().regex(/^[0-9a-f]{40}$/).nullable(),
  /** The workspace had more entries than a baseline holds (changes/workspace-tree.ts maxTreeEntries). */
  truncated: z.boolean(),
});
export type WorkspaceBaseline = z.infer<typeof workspaceBaseline>;
export type GitOrigin = z.infer<typeof gitOrigin>;

export interface BaselinePaths {
  dir: string;
  manifest: string;
  repo: string;
}

export function baselinePaths(jobRoot: string): BaselinePaths {
  const dir = join(jobRoot, 'baseline');
  return { dir, manifest: join(dir, 'manifest.json'), repo: join(dir, 'repo.git') };
}

/** The job's baseline, or undefined when none was recorded (a job that has not started, or started before baselines). */
export async function readWorkspaceBaseline(jobRoot: string): Promise<WorkspaceBaseline | undefined> {
  let text: string;
  try {
    const handle = await open(baselinePaths(jobRoot).manifest, constants.O_RDONLY | constants.O_NOFOLLOW);
    try {
      text = await handle.readFile('utf8');
    } finally {
      await handle.close();
    }
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
  return workspaceBaseline.parse(JSON.parse(text));
}

export function hasWorkspaceBaseline(jobRoot: string): Promise<boolean> {
  return readFile(baselinePaths(jobRoot).manifest).then(
    () => true,
    () => false,
  );
}

/** The baseline's entries as a walk returns them. */
export function baselineTree(baseline: WorkspaceBaseline): TreeEntry[] {
  return baseline.entries.map((entry) => ({ ...entry }));
}

/**
 * Records the baseline of the workspace at `paths.workspace` unless the job has one. Returns the new baseline, or
 * undefined when there already was one.
 */
export async function recordWorkspaceBaseline(
  paths: { root: string; workspace: string },
  options: { config: Pick<Config, 'sandboxUser'>; git?: GitOrigin | undefined; logger?: Pick<Logger, 'warn'>; signal?: AbortSignal },
): Promise<WorkspaceBaseline | undefined> {
  const target = baselinePaths(paths.root);
  if (await hasWorkspaceBaseline(paths.root)) return undefined;
  const files = new WorkspaceRawFiles(paths.workspace);
  const source: WorkspaceSource = { get: (path, getOptions) => files.get(path, getOptions) };
  // Everything that is there is the start, ignored or not (a clone holds only tracked files anyway).
  const tree = await readWorkspaceTree(source, { gitignore: false, ...(options.signal === undefined ? {} : { signal: options.signal }) });
  const staging = join(paths.root, `.baseline-${randomBytes(6).toString('hex')}`);
  // 0711: the jail's git (the sandbox user) reaches repo.git through it; nothing in it is listable.
  await mkdir(staging, { mode: 0o711 });
  try {
    let snapshot: string | null = null;
    if (tree.entries.length > 0) {
      const repo = join(staging, 'repo.git');
      await mkdir(repo, { mode: 0o755 });
      const jail = new GitJail(options.config, options.logger);
      const user = await jail.sandboxUser();
      if (user !== undefined) await chown(repo, user.uid, user.gid);
      const run = { work: repo, gitDir: jailWorkDir, ...(options.signal === undefined ? {} : { signal: options.signal }) };
      await jail.run({ ...run, args: ['init', '--quiet', '--bare', jailWorkDir] });
      await jail.run({ ...run, args: ['fast-import', '--quiet', '--done'], stdin: fastImportStream({ ref: baselineRef, entries: tree.entries, source, ...(options.signal === undefined ? {} : { signal: options.signal }) }) });
      snapshot = (await jail.run({ ...run, args: ['rev-parse', '--verify', `${baselineRef}^{commit}`] })).trim();
      // Back to the server's user: from now on git only ever reads it (mounted read-only).
      if (user !== undefined) await runCommand('chown', ['-R', '--no-dereference', `${process.getuid?.() ?? 0}:${process.getgid?.() ?? 0}`, '--', repo], { timeoutMs: 120_000 });
    }
    const baseline: WorkspaceBaseline = {
      version: 1,
      recorded_at: new Date().toISOString(),
      ...(options.git === undefined ? {} : { git: options.git }),
      entries: tree.entries,
      snapshot,
      truncated: tree.truncated,
    };
    const manifest = await open(join(staging, 'manifest.json'), constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
    try {
      await manifest.writeFile(JSON.stringify(baseline));
    } finally {
      await manifest.close();
    }
    await rename(staging, target.dir);
    return baseline;
  } catch (error) {
    await rm(staging, { recursive: true, force: true });
    // Someone else recorded it meanwhile (two calls racing): theirs stands.
    if (((error as NodeJS.ErrnoException).code === 'ENOTEMPTY' || (error as NodeJS.ErrnoException).code === 'EEXIST') && (await hasWorkspaceBaseline(paths.root))) return undefined;
    throw error;
  }
}
