// What list_files leaves out unless asked (include_ignored): directories that are never worth listing entry by entry
// (.git, node_modules, __pycache__, .venv), and what the workspace's ignore files say: .gitignore, .ignore and
// .rgignore, in every directory from the workspace root down, with git's precedence (a deeper file, and a later
// rule, win; `!pattern` re-includes). These are the rules search_files gets from ripgrep, so the two tools agree.
// Ignore files are read like any other file of the file tools: confined to the workspace, never through a symlink.
import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import type { Ignore } from 'ignore';

/** Names skipped wherever they occur (their contents are rarely what anyone looks for, and they are huge). */
export const alwaysSkipped: readonly string[] = ['.git', 'node_modules', '__pycache__', '.venv'];
/** Read in this order in each directory; a later file's rules win (as in ripgrep: .rgignore over .ignore over .gitignore). */
const ignoreFileNames = ['.gitignore', '.ignore', '.rgignore'];
/** An ignore file larger than this is not read (nobody writes one; a huge file there is not a list of rules). */
const maxIgnoreFileBytes = 256 * 1024;

export type IgnoreReason = 'default' | 'ignore_file';

/** The rules of one directory: its ignore files, matched against paths relative to it. */
export interface DirectoryRules {
  /** Workspace-relative directory ('' for the workspace root). */
  base: string;
  matcher: Ignore;
}

async function readIgnoreFile(path: string): Promise<string | undefined> {
  let handle;
  try {
    handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    const stats = await handle.stat();
    if (!stats.isFile() || stats.size > maxIgnoreFileBytes) return undefined;
    return await handle.readFile('utf8');
  } catch {
    return undefined; // missing, a symlink, unreadable: no rules
  } finally {
    await handle?.close();
  }
}

/** The rules of the directory at `real` (workspace-relative `relative`), or undefined when it has no ignore file. */
export async function directoryRules(real: string, relative: string): Promise<DirectoryRules | undefined> {
  const texts = (await Promise.all(ignoreFileNames.map((name) => readIgnoreFile(join(real, name))))).filter((text) => text !== undefined);
  if (texts.length === 0) return undefined;
  // Loaded when a workspace first has an ignore file: sandboxd starts without it.
  const { default: ignore } = await import('ignore');
  const matcher = ignore({ allowRelativePaths: true });
  for (const text of texts) matcher.add(text);
  return { base: relative === '.' ? '' : relative, matcher };
}

/** A list of rules in effect for a directory: those of its ancestors, outermost first, then its own. */
export type RuleStack = readonly DirectoryRules[];

/** Why the entry at workspace-relative `path` is ignored, or undefined when it is not. */
export function ignoredBecause(rules: RuleStack, path: string, name: string, isDirectory: boolean): IgnoreReason | undefined {
  if (alwaysSkipped.includes(name)) return 'default';
  return ignoredByRules(rules, path, isDirectory) ? 'ignore_file' : undefined;
}

/** Whether the rules ignore the workspace-relative `path`: each directory's rules apply below it, a later match wins. */
export function ignoredByRules(rules: RuleStack, path: string, isDirectory: boolean): boolean {
  let ignored = false;
  for (const { base, matcher } of rules) {
    const relative = base === '' ? path : path.startsWith(`${base}/`) ? path.slice(base.length + 1) : undefined;
    if (relative === undefined || relative === '') continue;
    const result = matcher.test(isDirectory ? `${relative}/` : relative);
    if (result.ignored) ignored = true;
    else if (result.unignored) ignored = false;
  }
  return ignored;
}
