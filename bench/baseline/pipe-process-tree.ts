// BENCHMARK BASELINE ONLY: the process helpers of the former pipe-based shell session (pipe-bash-session.ts), verbatim.
// Process-tree helpers over /proc. bash runs commands without job control, so a command's processes share bash's
// process group with every background job of earlier calls; walking the tree (and remembering which processes
// existed before a call) is how sandboxd reaches exactly the processes one command started.
import { readFileSync, readdirSync } from 'node:fs';

export interface ProcessEntry {
  pid: number;
  /** Start time in clock ticks since boot: with the pid, identifies a process even if its pid is reused. */
  startTime: string;
}

interface ProcessRow extends ProcessEntry {
  parent: number;
}

export function processKey(entry: ProcessEntry): string {
  return `${entry.pid}:${entry.startTime}`;
}

function processTable(): ProcessRow[] {
  const rows: ProcessRow[] = [];
  let names: string[];
  try {
    names = readdirSync('/proc');
  } catch {
    return rows;
  }
  for (const name of names) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      // "pid (comm) state ppid ... starttime(22nd field)": comm may hold spaces and parentheses, so split after the last ')'.
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      rows.push({ pid: Number(name), parent: Number(fields[1]), startTime: fields[19] ?? '' });
    } catch {
      // exited while we looked
    }
  }
  return rows;
}

/**
 * Every descendant of `pid`, parents before children. Subtrees rooted at a process in `prune` (by processKey) are
 * skipped: that is how the background jobs of earlier calls, and whatever they start, are left alone.
 */
export function descendantsOf(pid: number, prune: ReadonlySet<string> = new Set()): ProcessEntry[] {
  const children = new Map<number, ProcessRow[]>();
  for (const row of processTable()) {
    const list = children.get(row.parent);
    if (list === undefined) children.set(row.parent, [row]);
    else list.push(row);
  }
  const found: ProcessEntry[] = [];
  const seen = new Set<number>([pid]);
  const queue = [pid];
  for (let next = queue.shift(); next !== undefined; next = queue.shift()) {
    for (const child of children.get(next) ?? []) {
      if (seen.has(child.pid) || prune.has(processKey(child))) continue;
      seen.add(child.pid);
      found.push({ pid: child.pid, startTime: child.startTime });
      queue.push(child.pid);
    }
  }
  return found;
}

/**
 * True when the process ignores SIGINT. bash without job control starts background commands (`cmd &`) with SIGINT
 * ignored, so this tells a command's background jobs (left running, as in a terminal) from its foreground ones.
 */
export function ignoresSigint(pid: number): boolean {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const mask = /^SigIgn:\s*([0-9a-f]+)$/m.exec(status)?.[1];
    return mask !== undefined && (BigInt(`0x${mask}`) & 2n) !== 0n;
  } catch {
    return false;
  }
}

/** True while the process exists and has not exited (a zombie, awaiting its reaper, counts as exited). */
export function isRunning(pid: number): boolean {
  try {
    return !/^State:\s+[ZX]/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false;
  }
}

/** Resolves once none of `pids` is running, or after `timeoutMs`. */
export async function waitUntilGone(pids: readonly number[], timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (pids.some(isRunning) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
}

/** Sends `signal` to `pid`, ignoring processes that are already gone. */
export function signalProcess(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // ESRCH: already gone; EPERM: not ours to signal
  }
}
