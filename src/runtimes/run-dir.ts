// The run directory (WORKCELL_RUN_DIR): each sandbox's socket directory, the egress proxy's sockets, a microVM's
// channel. The worker trusts what it finds there: it connects to sandboxd's socket, hands the paths to bwrap and the
// VMM, removes what dead sandboxes left. So no one but the server's user may be able to change it: the directory must
// be the server's uid's own, not a symlink, and writable by no one else; every directory above it must belong to root
// or that uid and be writable by no one else, unless it is sticky (as /tmp is: others cannot rename or remove what is
// not theirs there). Without XDG_RUNTIME_DIR the non-root default is /tmp/workcell-<uid>/workcell, and another user
// can create /tmp/workcell-<uid> first: then sandboxes are refused, with a message that says what to do.
// This module never changes the owner or mode of a directory it did not create.
import { lstat, mkdir, realpath } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import type { Logger } from 'pino';
import { WorkcellError } from '../errors.ts';

const groupOrOtherWrite = 0o022;
const sticky = 0o1000;

const fix = 'remove it, or set WORKCELL_RUN_DIR to a directory that only this user can write (e.g. $XDG_RUNTIME_DIR/workcell, or /run/workcell as root)';

/** Every directory from the root down to `path`, `path` last. */
function lineage(path: string): string[] {
  const chain: string[] = [];
  for (let current = path; ; current = dirname(current)) {
    chain.unshift(current);
    if (dirname(current) === current) return chain;
  }
}

async function pathProblem(path: string, uid: number): Promise<string | undefined> {
  const chain = lineage(path);
  for (const [index, dir] of chain.entries()) {
    const info = await lstat(dir).catch((error: NodeJS.ErrnoException) => error);
    if (info instanceof Error) return `${dir} cannot be read (${info.code ?? info.message})`;
    const mode = `mode ${(info.mode & 0o7777).toString(8).padStart(4, '0')}`;
    if (index === chain.length - 1) {
      if (info.isSymbolicLink()) return `${dir} is a symlink: ${fix}`;
      if (!info.isDirectory()) return `${dir} is not a directory: ${fix}`;
      if (info.uid !== uid) return `${dir} belongs to uid ${info.uid}, not to this server's uid ${uid} (another user may have made it to read or replace sandbox sockets): ${fix}`;
      if ((info.mode & groupOrOtherWrite) !== 0) return `${dir} is writable by its group or others (${mode}): chmod go-w it, or ${fix}`;
      continue;
    }
    // A symlink on the way is as safe as the directory it is in (checked just before) and its owner; where it leads is
    // checked by the caller on the resolved path.
    if (info.uid !== 0 && info.uid !== uid) return `${dir}, above the run directory, belongs to uid ${info.uid}, neither root nor this server's uid ${uid}: ${fix}`;
    if (info.isSymbolicLink()) continue;
    if ((info.mode & groupOrOtherWrite) !== 0 && (info.mode & sticky) === 0) return `${dir}, above the run directory, is writable by its group or others and not sticky (${mode}): ${fix}`;
  }
  return undefined;
}

/** What makes `path` unsafe as the run directory of a server running as `uid`, or undefined when it is safe. */
export async function runDirProblem(path: string, uid: number = process.getuid?.() ?? 0): Promise<string | undefined> {
  const absolute = resolve(path);
  const problem = await pathProblem(absolute, uid);
  if (problem !== undefined) return problem;
  // Through a symlink higher up, the directories actually used are others: they must be safe too.
  const real = await realpath(absolute).catch(() => absolute);
  return real === absolute ? undefined : pathProblem(real, uid);
}

/**
 * Creates the run directory when missing (and its missing parents, mode 0755) and checks it (runDirProblem). Throws
 * runtime_unavailable saying what is wrong and what to do.
 */
export async function ensureRunDir(path: string, uid: number = process.getuid?.() ?? 0): Promise<void> {
  await mkdir(path, { recursive: true, mode: 0o755 }).catch((error: NodeJS.ErrnoException) => {
    throw new WorkcellError('runtime_unavailable', `the run directory ${path} cannot be created (${error.code ?? error.message}): set WORKCELL_RUN_DIR to a directory this user can create`, { cause: error });
  });
  const problem = await runDirProblem(path, uid);
  if (problem !== undefined) throw new WorkcellError('runtime_unavailable', `the run directory ${path} is not safe to use: ${problem}`);
}

/**
 * For reapers: may what is in the run directory be removed? Not when it is missing (nothing to reap), nor when it is
 * unsafe (said in the log: another user could have put there what a reaper would then remove).
 */
export async function runDirToReap(path: string, logger?: Pick<Logger, 'warn'>): Promise<boolean> {
  if ((await lstat(path).catch(() => undefined)) === undefined) return false;
  const problem = await runDirProblem(path);
  if (problem !== undefined) logger?.warn({ runDir: path, problem }, 'not reaping in an unsafe run directory');
  return problem === undefined;
}
