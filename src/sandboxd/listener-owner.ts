// Who listens on a port inside the sandbox. The desktop and Jupyter are proxied to fixed loopback ports, and the
// agent's code shares that loopback: it could listen on 6080 or 8888 before the real service starts (which then
// fails to bind), and sandboxd would hand people the agent's page as if it were the desktop. So before proxying,
// sandboxd checks that every socket listening on the port belongs to a process it started for that service (or a
// child of one), from /proc: the sockets' inodes in /proc/net/tcp{,6}, the processes' in /proc/<pid>/fd.
import { readdir, readFile, readlink } from 'node:fs/promises';

const listenState = '0A';

/** Inodes of the TCP sockets listening on `port` (any address, IPv4 and IPv6). */
export async function listeningInodes(port: number, proc = '/proc'): Promise<Set<string>> {
  const inodes = new Set<string>();
  for (const table of ['tcp', 'tcp6']) {
    const text = await readFile(`${proc}/net/${table}`, 'utf8').catch(() => '');
    for (const line of text.split('\n').slice(1)) {
      // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
      const fields = line.trim().split(/\s+/);
      const local = fields[1];
      if (local === undefined || fields[3] !== listenState || fields[9] === undefined) continue;
      if (Number.parseInt(local.slice(local.lastIndexOf(':') + 1), 16) === port) inodes.add(fields[9]);
    }
  }
  return inodes;
}

/** `roots` and every process descended from them. */
async function withDescendants(roots: number[], proc: string): Promise<Set<number>> {
  const parents = new Map<number, number>();
  for (const name of await readdir(proc).catch(() => [] as string[])) {
    if (!/^\d+$/.test(name)) continue;
    const stat = await readFile(`${proc}/${name}/stat`, 'utf8').catch(() => undefined);
    // pid (comm) state ppid ...: comm may hold spaces and parentheses, so read after the last ')'.
    const ppid = stat === undefined ? undefined : Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    if (ppid !== undefined && Number.isInteger(ppid)) parents.set(Number(name), ppid);
  }
  const family = new Set(roots);
  for (let grew = true; grew; ) {
    grew = false;
    for (const [pid, ppid] of parents) {
      if (!family.has(pid) && family.has(ppid)) {
        family.add(pid);
        grew = true;
      }
    }
  }
  return family;
}

async function socketInodes(pid: number, proc: string): Promise<Set<string>> {
  const inodes = new Set<string>();
  for (const fd of await readdir(`${proc}/${pid}/fd`).catch(() => [] as string[])) {
    const target = await readlink(`${proc}/${pid}/fd/${fd}`).catch(() => '');
    const match = /^socket:\[(\d+)\]$/.exec(target);
    if (match) inodes.add(match[1]!);
  }
  return inodes;
}

/**
 * Undefined when something listens on `port` and every listening socket there is held by `owners` or their
 * children; otherwise why not, for the person who asked for the service.
 */
export async function foreignListener(port: number, owners: number[], proc = '/proc'): Promise<string | undefined> {
  const listening = await listeningInodes(port, proc);
  if (listening.size === 0) return `nothing listens on port ${port}`;
  const held = new Set<string>();
  for (const pid of await withDescendants(owners, proc)) for (const inode of await socketInodes(pid, proc)) held.add(inode);
  const foreign = [...listening].filter((inode) => !held.has(inode));
  if (foreign.length === 0) return undefined;
  return `another program in the sandbox listens on port ${port}, where the service should be: it is not served (a command the agent ran may have started it; stop it and try again)`;
}
