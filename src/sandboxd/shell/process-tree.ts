// Process helpers over /proc for the shell sessions (and the Jupyter server): the tree below a process, the members
// of a process group (a job) or of a session (everything attached to one terminal), a terminal's foreground group,
// and whether a process is blocked reading its terminal. Reads only; signals go through signalProcess.
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';

export interface ProcessEntry {
  pid: number;
  /** Start time in clock ticks since boot: with the pid, identifies a process even if its pid is reused. */
  startTime: string;
}

interface ProcessRow extends ProcessEntry {
  parent: number;
  group: number;
  session: number;
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
      rows.push({ pid: Number(name), parent: Number(fields[1]), group: Number(fields[2]), session: Number(fields[3]), startTime: fields[19] ?? '' });
    } catch {
      // exited while we looked
    }
  }
  return rows;
}

/** Every descendant of `pid`, parents before children. */
export function descendantsOf(pid: number): ProcessEntry[] {
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
      if (seen.has(child.pid)) continue;
      seen.add(child.pid);
      found.push({ pid: child.pid, startTime: child.startTime });
      queue.push(child.pid);
    }
  }
  return found;
}

/** The processes of a process group (a job), or of a session (every process attached to one terminal). */
export function membersOf(which: 'group' | 'session', id: number): number[] {
  return processTable()
    .filter((row) => row[which] === id)
    .map((row) => row.pid);
}

/** The process group in the foreground of the process's controlling terminal (`tpgid`), if it has a terminal. */
export function foregroundGroupOf(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const group = Number(fields[5]);
    return Number.isInteger(group) && group > 0 ? group : undefined;
  } catch {
    return undefined;
  }
}

/** The name of a process's program (`/proc/PID/comm`), or '' when it is gone. */
export function commandNameOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '';
  }
}

/** read(2)'s number on this architecture; undefined where it is not known (the check below then says no). */
const readSyscall: number | undefined = process.arch === 'x64' ? 0 : process.arch === 'arm64' ? 63 : undefined;

/**
 * True when one of `pids` is blocked in read(2) on the terminal `ttyPath` (a command waiting for input: `read`, a
 * prompt, `cat` with no file). /proc/PID/syscall needs ptrace access, which sandboxd has over its own descendants;
 * without it, or for programs that wait in poll(2) instead, the answer is false.
 */
export function readingTerminal(pids: readonly number[], ttyPath: string): boolean {
  if (readSyscall === undefined) return false;
  for (const pid of pids) {
    try {
      const [number, fd] = readFileSync(`/proc/${pid}/syscall`, 'utf8').trim().split(' ');
      if (Number(number) !== readSyscall || fd === undefined) continue;
      if (readlinkSync(`/proc/${pid}/fd/${Number.parseInt(fd, 16)}`) === ttyPath) return true;
    } catch {
      // gone, or not ours to look at
    }
  }
  return false;
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
