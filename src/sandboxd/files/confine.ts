// Path confinement for sandboxd's file tools: turns a path the model gave into a real path that lies inside the
// workspace, or refuses. THIS MODULE MUST NEVER LET A FILE TOOL TOUCH A PATH OUTSIDE THE WORKSPACE ROOT.
//
// Rules: paths are relative to the workspace root; an absolute path is accepted only when it lies inside the root;
// `..` may not climb out; NUL bytes are refused. Then every existing component is resolved by hand (lstat +
// readlink, symlink by symlink, including a dangling final link, whose target is where a write would land), and the
// result must stay inside realpath(root). The tools then operate on that resolved path, never on the model's
// string, and open final components with O_NOFOLLOW, so a link swapped in after the check makes the call fail
// instead of escaping. What remains (a directory swapped for a link between check and use) is covered by the
// sandbox itself: sandboxd runs with the agent's uid inside the sandbox, so this is defence in depth that keeps
// the model's file tools to its workspace, not the only wall.
import { lstat, readlink, realpath } from 'node:fs/promises';
import { isAbsolute, join, resolve, sep } from 'node:path';
import { SandboxdToolError } from '../errors.ts';

export interface ConfinedPath {
  /** What the caller asked for, normalized: workspace-relative with forward slashes; '.' for the root. */
  relative: string;
  /** The absolute path to operate on: every existing component resolved; inside `rootReal`. */
  real: string;
  /** realpath of the workspace root. */
  rootReal: string;
}

const maxSymlinkHops = 40;

/** `path` relative to `base` when it is `base` or below it; undefined when it is elsewhere. */
function relativeInside(base: string, path: string): string | undefined {
  if (path === base) return '';
  const prefix = base.endsWith(sep) ? base : base + sep;
  return path.startsWith(prefix) ? path.slice(prefix.length) : undefined;
}

export function isInside(base: string, path: string): boolean {
  return relativeInside(base, path) !== undefined;
}

function components(absolutePath: string): string[] {
  return absolutePath.split(sep).filter((part) => part !== '');
}

function errnoCode(error: unknown): string | undefined {
  return typeof error === 'object' && error !== null && 'code' in error && typeof error.code === 'string' ? error.code : undefined;
}

function outside(userPath: string, root: string, why: string): SandboxdToolError {
  return new SandboxdToolError(
    'path_outside_workspace',
    `path ${JSON.stringify(userPath)} ${why}; file tools work only inside the workspace (${root}): use a path relative to it, e.g. "src/index.ts"`,
  );
}

/**
 * Checks `userPath` lexically (NUL bytes, absolute paths, `..`) and returns it workspace-relative. Does not touch
 * the file system except to realpath the root (so that an absolute path under the real root is accepted too).
 */
export async function lexicalRelative(root: string, userPath: string): Promise<{ relative: string; rootReal: string }> {
  if (userPath.includes('\0')) {
    throw new SandboxdToolError('invalid_request', 'path: contains a NUL byte; give a plain path relative to the workspace root');
  }
  if (userPath.trim() === '') {
    throw new SandboxdToolError('invalid_request', 'path: is empty; give a path relative to the workspace root, e.g. "src/index.ts", or "." for the root itself');
  }
  const rootLexical = resolve(root);
  const rootReal = await realpath(rootLexical);
  let relative: string | undefined;
  if (isAbsolute(userPath)) {
    const absolute = resolve(userPath);
    relative = relativeInside(rootLexical, absolute) ?? relativeInside(rootReal, absolute);
    if (relative === undefined) throw outside(userPath, root, 'is an absolute path outside the workspace');
  } else {
    relative = relativeInside(rootLexical, resolve(rootLexical, userPath));
    if (relative === undefined) throw outside(userPath, root, 'climbs out of the workspace with ".."');
  }
  return { relative: relative === '' ? '.' : relative.split(sep).join('/'), rootReal };
}

/**
 * Resolves `userPath` inside the workspace `root`. With `followFinalSymlink: false` a final component that is a
 * symlink is left as it is (delete removes the link, never its target); the directories above it are resolved.
 */
export async function confine(root: string, userPath: string, options: { followFinalSymlink: boolean }): Promise<ConfinedPath> {
  const { relative, rootReal } = await lexicalRelative(root, userPath);
  const parts = relative === '.' ? [] : relative.split('/');
  let real: string;
  if (options.followFinalSymlink || parts.length === 0) {
    real = await resolveComponents(rootReal, parts, userPath);
  } else {
    const parent = await resolveComponents(rootReal, parts.slice(0, -1), userPath);
    real = join(parent, parts[parts.length - 1] ?? '');
  }
  if (!isInside(rootReal, real)) throw outside(userPath, root, 'leads outside the workspace through a symbolic link');
  return { relative, real, rootReal };
}

/** Walks `parts` from `start` (a real directory), resolving each symlink met; components that do not exist are appended as they are. */
async function resolveComponents(start: string, parts: string[], userPath: string): Promise<string> {
  const pending = [...parts];
  let current = start;
  let hops = 0;
  while (pending.length > 0) {
    const part = pending.shift() as string;
    const next = join(current, part);
    let isLink: boolean;
    try {
      isLink = (await lstat(next)).isSymbolicLink();
    } catch (error) {
      const code = errnoCode(error);
      // Nothing exists from here on, so nothing below can be a link: the rest is appended verbatim.
      if (code === 'ENOENT' || code === 'ENOTDIR') return join(next, ...pending);
      throw error;
    }
    if (!isLink) {
      current = next;
      continue;
    }
    if (++hops > maxSymlinkHops) {
      throw new SandboxdToolError('invalid_request', `path ${JSON.stringify(userPath)} goes through more than ${maxSymlinkHops} symbolic links (a loop?)`);
    }
    // The walk may pass outside the workspace and back (only lstat and readlink happen on the way); what counts is
    // where it ends, which confine() checks.
    const target = resolve(current, await readlink(next));
    pending.unshift(...components(target));
    current = '/';
  }
  return current;
}
