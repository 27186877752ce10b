// Resource limits through cgroups: one cgroup per sandbox, under a `workcell` parent, on cgroup v1 (one hierarchy per
// controller: memory, cpu, pids, and cpuacct for usage when mounted) or v2 (one unified hierarchy). The runtime puts
// the sandbox's first process into it before that process starts anything (see cgroupWrapper), so every process of
// the sandbox is limited from its first instruction. The cgroup is removed once its processes are gone; cgroups left
// by a server that died are reaped (their processes killed) by the next one.
//
// The parent: by default `workcell` inside the server's own cgroup on v1 (so sandboxes stay inside whatever limits
// the server itself runs under), and `/workcell` at the root of the v2 hierarchy (v2 forbids enabling controllers in a
// cgroup that holds processes, as the server's own does); WORKCELL_CGROUP_PARENT overrides both. Each sandbox cgroup
// is named `<sandbox id>.<server pid>.<server start time>` so a server can tell its own from those of dead servers.
// This module must never touch a cgroup outside the parent, nor remove one whose owner is still alive.
import { constants } from 'node:fs';
import { access, mkdir, readFile, readdir, readlink, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { errorMessage } from '../errors.ts';
import { unescapeMount } from '../util/mounts.ts';

export interface CgroupLimits {
  /** CPUs' worth of time per period (CFS quota); may be fractional. */
  cpus: number;
  memoryMb: number;
  pids: number;
}

/** Cumulative counters of limit hits; compare two readings to see what one tool call ran into. */
export interface CgroupCounters {
  /** Processes the kernel's OOM killer killed at the memory limit. */
  oomKills: number;
  /** fork/clone calls refused at the pids limit. */
  pidsRefused: number;
  /** Processes and threads in the cgroup now. */
  processes: number;
}

export interface CgroupUsage {
  cpuSeconds?: number;
  peakMemoryBytes?: number;
}

type Controller = 'memory' | 'cpu' | 'pids' | 'cpuacct';

export type CgroupHost =
  | { version: 1; /** Absolute directory of the parent, per controller. */ parents: Partial<Record<Controller, string>> }
  | { version: 2; /** Absolute directory of the v2 mount and of the parent inside it. */ mount: string; parent: string };

const requiredControllers = ['memory', 'cpu', 'pids'] as const;
const v2Controllers = ['memory', 'pids', 'cpu'] as const;
const cfsPeriodUs = 100_000;

export const cgroupFixHint =
  'run the server as root, or in a cgroup delegated to its user (systemd: Delegate=yes) and point WORKCELL_CGROUP_PARENT at it; ' +
  'or set WORKCELL_UNSAFE_NO_LIMITS=1 to run sandboxes with no CPU, memory, pids or disk limits (not safe: a fork bomb or a memory bomb can take the host down)';

/** What the host's cgroup files look like: parsed from /proc/self/mountinfo and /proc/self/cgroup. */
export interface CgroupSources {
  mountinfo: string;
  selfCgroup: string;
}

async function readSources(): Promise<CgroupSources> {
  const [mountinfo, selfCgroup] = await Promise.all([readFile('/proc/self/mountinfo', 'utf8').catch(() => ''), readFile('/proc/self/cgroup', 'utf8').catch(() => '')]);
  return { mountinfo, selfCgroup };
}

/**
 * Finds where sandbox cgroups go: v1 when memory, cpu and pids each have a v1 hierarchy, else v2 when the unified
 * hierarchy offers all three. `parent` (WORKCELL_CGROUP_PARENT) is a path inside the hierarchy. Returns a problem,
 * saying how to fix it, when neither works.
 */
export async function findCgroupHost(options: { parent?: string | undefined; sources?: CgroupSources } = {}): Promise<CgroupHost | { problem: string }> {
  const { mountinfo, selfCgroup } = options.sources ?? (await readSources());
  const v1Mounts = new Map<string, { mountPoint: string; root: string }>();
  let v2: { mountPoint: string; root: string } | undefined;
  for (const line of mountinfo.split('\n')) {
    const [left, right] = line.split(' - ');
    if (left === undefined || right === undefined) continue;
    const fields = left.split(' ');
    const [fsType, , superOptions = ''] = right.split(' ');
    const root = unescapeMount(fields[3] ?? '/');
    const mountPoint = unescapeMount(fields[4] ?? '');
    if (fsType === 'cgroup') for (const option of superOptions.split(',')) if (!v1Mounts.has(option)) v1Mounts.set(option, { mountPoint, root });
    if (fsType === 'cgroup2') v2 ??= { mountPoint, root };
  }
  const ownPaths = new Map<string, string>();
  for (const line of selfCgroup.split('\n')) {
    const match = /^\d+:([^:]*):(.*)$/.exec(line);
    if (match === null) continue;
    const [, controllers = '', path = '/'] = match;
    if (controllers === '') ownPaths.set('', path);
    for (const controller of controllers.split(',')) ownPaths.set(controller, path);
  }

  if (requiredControllers.every((controller) => v1Mounts.has(controller))) {
    const parents: Partial<Record<Controller, string>> = {};
    for (const controller of [...requiredControllers, 'cpuacct'] as const) {
      const mount = v1Mounts.get(controller);
      if (mount === undefined) continue;
      const inside = options.parent ?? join(relativeTo(ownPaths.get(controller) ?? '/', mount.root), 'workcell');
      parents[controller] = join(mount.mountPoint, inside);
    }
    return { version: 1, parents };
  }
  if (v2 !== undefined) {
    const available = (await readFile(join(v2.mountPoint, 'cgroup.controllers'), 'utf8').catch(() => '')).trim().split(/\s+/);
    const missing = v2Controllers.filter((controller) => !available.includes(controller));
    if (missing.length === 0) return { version: 2, mount: v2.mountPoint, parent: join(v2.mountPoint, options.parent ?? '/workcell') };
    const v1Missing = requiredControllers.filter((controller) => !v1Mounts.has(controller));
    return { problem: `cgroups cannot limit sandboxes here: cgroup v2 at ${v2.mountPoint} lacks ${missing.join(', ')} and cgroup v1 lacks ${v1Missing.join(', ')}` };
  }
  return { problem: 'cgroups cannot limit sandboxes here: neither cgroup v1 (memory, cpu, pids) nor cgroup v2 is mounted' };
}

/** A path of /proc/self/cgroup relative to the root of the mount it is seen through (they differ in containers). */
function relativeTo(path: string, mountRoot: string): string {
  if (mountRoot === '/' || mountRoot === '') return path;
  if (path === mountRoot) return '/';
  return path.startsWith(`${mountRoot}/`) ? path.slice(mountRoot.length) : path;
}


/** The server's identity in cgroup names: its pid and start time, so a reused pid is not mistaken for it. */
function processStartTime(pid: number | 'self'): Promise<string | undefined> {
  return readFile(`/proc/${pid}/stat`, 'utf8').then(
    (stat) => stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19],
    () => undefined,
  );
}

/**
 * The pid namespace this server's pids mean something in (the inode of /proc/self/ns/pid). Servers in other pid
 * namespaces (containers on one host, sharing its cgroups) may use the same cgroup parent: their pids cannot be
 * checked from here, so their cgroups are never reaped by this server.
 */
function pidNamespace(): Promise<string> {
  return readlink('/proc/self/ns/pid').then(
    (link) => /\[(\d+)\]/.exec(link)?.[1] ?? '0',
    () => '0',
  );
}

let ownerTag: Promise<string> | undefined;
/** `<pid namespace>.<pid>.<start time>`. */
function owner(): Promise<string> {
  return (ownerTag ??= Promise.all([pidNamespace(), processStartTime('self')]).then(([namespace, start]) => `${namespace}.${process.pid}.${start ?? '0'}`));
}

const namePattern = /^(sb-[a-z0-9]+)\.(\d+)\.(\d+)\.(\d+)$/;

export class SandboxCgroup {
  readonly host: CgroupHost;
  readonly name: string;
  /** Directories of this cgroup (one per v1 controller, or the one v2 directory). */
  readonly dirs: Partial<Record<Controller, string>>;
  #lastUsage: CgroupUsage | undefined;
  #removed = false;

  constructor(host: CgroupHost, name: string) {
    this.host = host;
    this.name = name;
    if (host.version === 1) {
      this.dirs = Object.fromEntries(Object.entries(host.parents).map(([controller, parent]) => [controller, join(parent, name)]));
    } else {
      const dir = join(host.parent, name);
      this.dirs = { memory: dir, cpu: dir, pids: dir };
    }
  }

  /** The distinct cgroup directories: where a process must be written to join this cgroup. */
  get uniqueDirs(): string[] {
    return [...new Set(Object.values(this.dirs))];
  }

  /** cgroup.procs files: a process that writes its pid to each of them is inside the sandbox's limits. */
  get procsFiles(): string[] {
    return this.uniqueDirs.map((dir) => join(dir, 'cgroup.procs'));
  }

  async counters(): Promise<CgroupCounters> {
    const memory = this.dirs.memory!;
    const pids = this.dirs.pids!;
    const memoryEvents = await readFile(join(memory, this.host.version === 1 ? 'memory.oom_control' : 'memory.events'), 'utf8').catch(() => '');
    const pidsEvents = await readFile(join(pids, 'pids.events'), 'utf8').catch(() => '');
    const processes = (await readNumber(join(pids, 'pids.current'))) ?? 0;
    return { oomKills: keyedValue(memoryEvents, 'oom_kill') ?? 0, pidsRefused: keyedValue(pidsEvents, 'max') ?? 0, processes };
  }

  /** CPU time and peak memory so far; after remove(), the last reading taken before the cgroup went away. */
  async usage(): Promise<CgroupUsage> {
    if (this.#removed) return this.#lastUsage ?? {};
    const usage: CgroupUsage = {};
    if (this.host.version === 1) {
      const nanoseconds = await readNumber(join(this.dirs.cpuacct ?? '/nonexistent', 'cpuacct.usage'));
      if (nanoseconds !== undefined) usage.cpuSeconds = nanoseconds / 1e9;
      const peak = await readNumber(join(this.dirs.memory!, 'memory.max_usage_in_bytes'));
      if (peak !== undefined) usage.peakMemoryBytes = peak;
    } else {
      const stat = await readFile(join(this.dirs.cpu!, 'cpu.stat'), 'utf8').catch(() => '');
      const microseconds = keyedValue(stat, 'usage_usec');
      if (microseconds !== undefined) usage.cpuSeconds = microseconds / 1e6;
      const peak = await readNumber(join(this.dirs.memory!, 'memory.peak'));
      if (peak !== undefined) usage.peakMemoryBytes = peak;
    }
    this.#lastUsage = usage;
    return usage;
  }

  /** Pids of every process in the cgroup. */
  async processes(): Promise<number[]> {
    const pids = new Set<number>();
    for (const file of this.procsFiles) {
      const text = await readFile(file, 'utf8').catch(() => '');
      for (const line of text.split('\n')) if (line.trim() !== '') pids.add(Number(line));
    }
    return [...pids];
  }

  /** SIGKILLs everything in the cgroup (cgroup.kill on v2 where the kernel has it) until it is empty. */
  async kill(timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const pids = await this.processes();
      if (pids.length === 0) return;
      if (this.host.version === 2 && (await writeFile(join(this.dirs.memory!, 'cgroup.kill'), '1').then(() => true, () => false))) {
        // the kernel kills them all; wait below
      } else {
        for (const pid of pids) {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            // gone
          }
        }
      }
      if (Date.now() > deadline) throw new Error(`processes still in cgroup ${this.name} after ${timeoutMs} ms: ${pids.join(', ')}`);
      await delay(10);
    }
  }

  /**
   * Removes the cgroup once it is empty (killing whatever is left in it first), recording its last usage, then the
   * parent if no other sandbox uses it. Idempotent.
   */
  async remove(): Promise<void> {
    if (this.#removed) return;
    await this.usage().catch(() => undefined);
    await this.kill();
    for (const dir of this.uniqueDirs) await removeDir(dir);
    this.#removed = true;
    const parents = this.host.version === 1 ? Object.values(this.host.parents) : [this.host.parent];
    for (const parent of new Set(parents)) await rmdir(parent).catch(() => undefined); // busy while other sandboxes run
  }
}

/** Creates a sandbox's cgroup with its limits; throws an Error saying what failed and how to fix it. */
export async function createSandboxCgroup(host: CgroupHost, sandboxId: string, limits: CgroupLimits): Promise<SandboxCgroup> {
  const cgroup = new SandboxCgroup(host, `${sandboxId}.${await owner()}`);
  try {
    if (host.version === 2) await enableV2Controllers(host);
    for (const dir of cgroup.uniqueDirs) await makeDir(dir);
    await applyLimits(cgroup, limits);
  } catch (error) {
    await cgroup.remove().catch(() => undefined);
    throw new Error(`cannot set up the sandbox's cgroup (${errorMessage(error)}): ${cgroupFixHint}`, { cause: error });
  }
  return cgroup;
}

async function makeDir(dir: string): Promise<void> {
  // A sandbox being removed may rmdir the shared parent between our mkdir of it and of the child: try again.
  for (let attempt = 0; ; attempt++) {
    try {
      await mkdir(dir, { recursive: true });
      return;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT' || attempt >= 3) throw error;
    }
  }
}

async function applyLimits(cgroup: SandboxCgroup, limits: CgroupLimits): Promise<void> {
  const memoryBytes = String(limits.memoryMb * 1024 * 1024);
  const quotaUs = Math.max(1000, Math.round(limits.cpus * cfsPeriodUs));
  const { memory, cpu, pids } = cgroup.dirs as Record<'memory' | 'cpu' | 'pids', string>;
  if (cgroup.host.version === 1) {
    await writeFile(join(memory, 'memory.limit_in_bytes'), memoryBytes);
    // Without swap accounting the limit would let the sandbox spill into swap; with it, memory+swap = memory: no swap.
    if (await exists(join(memory, 'memory.memsw.limit_in_bytes'))) await writeFile(join(memory, 'memory.memsw.limit_in_bytes'), memoryBytes);
    await writeFile(join(memory, 'memory.swappiness'), '0').catch(() => undefined);
    await writeFile(join(memory, 'memory.oom_control'), '0'); // OOM killer on: kill a process at the limit, never hang
    await writeFile(join(cpu, 'cpu.cfs_period_us'), String(cfsPeriodUs));
    await writeFile(join(cpu, 'cpu.cfs_quota_us'), String(quotaUs));
    await writeFile(join(pids, 'pids.max'), String(limits.pids));
  } else {
    await writeFile(join(memory, 'memory.max'), memoryBytes);
    if (await exists(join(memory, 'memory.swap.max'))) await writeFile(join(memory, 'memory.swap.max'), '0');
    await writeFile(join(cpu, 'cpu.max'), `${quotaUs} ${cfsPeriodUs}`);
    await writeFile(join(pids, 'pids.max'), String(limits.pids));
  }
}

/** v2: a cgroup gets a controller only if every ancestor below the mount lists it in cgroup.subtree_control. */
async function enableV2Controllers(host: Extract<CgroupHost, { version: 2 }>): Promise<void> {
  await makeDir(host.parent);
  const relative = host.parent.slice(host.mount.length).split('/').filter(Boolean);
  let dir = host.mount;
  for (const part of ['', ...relative]) {
    dir = part === '' ? dir : join(dir, part);
    const enabled = (await readFile(join(dir, 'cgroup.subtree_control'), 'utf8')).trim().split(/\s+/);
    const missing = v2Controllers.filter((controller) => !enabled.includes(controller));
    if (missing.length === 0) continue;
    try {
      await writeFile(join(dir, 'cgroup.subtree_control'), missing.map((controller) => `+${controller}`).join(' '));
    } catch (error) {
      const busy = (error as NodeJS.ErrnoException).code === 'EBUSY';
      throw new Error(
        `cannot enable ${missing.join(', ')} in ${dir}/cgroup.subtree_control (${errorMessage(error)})` +
          (busy ? ': that cgroup holds processes; choose a WORKCELL_CGROUP_PARENT whose ancestors hold none' : ''),
        { cause: error },
      );
    }
  }
}

/**
 * Removes the cgroups of sandboxes whose server is gone (a crash, a SIGKILL): kills what is still running in them
 * and removes them. Never touches a cgroup whose server is alive. Returns the names it removed.
 */
export async function reapCgroups(host: CgroupHost): Promise<string[]> {
  const listDir = host.version === 1 ? host.parents.memory! : host.parent;
  const names = await readdir(listDir, { withFileTypes: true }).then(
    (entries) => entries.filter((entry) => entry.isDirectory()).map((entry) => entry.name),
    () => [] as string[],
  );
  const ownNamespace = await pidNamespace();
  const reaped: string[] = [];
  for (const name of names) {
    const match = namePattern.exec(name);
    if (match === null) continue;
    const [, , namespace, pid = '', start = ''] = match;
    if (namespace !== ownNamespace) continue; // another pid namespace's server: not ours to judge
    if ((await processStartTime(Number(pid))) === start) continue; // its server is alive
    try {
      await new SandboxCgroup(host, name).remove();
      reaped.push(name);
    } catch {
      // try again next time
    }
  }
  return reaped;
}

async function removeDir(dir: string, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await rmdir(dir);
      return;
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return;
      // EBUSY: exiting processes (zombies not yet reaped) still count as members for a moment.
      if (code !== 'EBUSY' || Date.now() > deadline) throw error;
      await delay(10);
    }
  }
}

/**
 * The command prefix that puts the process it runs into the cgroup before anything else: a host /bin/sh writes its
 * own pid into every cgroup.procs file, then execs the command (same pid), so the sandbox's first process and all its
 * descendants are limited before bwrap forks anything. Exits with 125 (and a message on stderr) if it cannot.
 */
export function cgroupWrapper(cgroup: SandboxCgroup): string[] {
  const script = 'while [ "$1" != -- ]; do echo $$ > "$1" || { echo "workcell: cannot join cgroup $1" >&2; exit 125; }; shift; done; shift; exec "$@"';
  return ['/bin/sh', '-c', script, 'workcell-cgroup', ...cgroup.procsFiles, '--'];
}

/** The value of `key N` in a flat keyed cgroup file (memory.events, pids.events, memory.oom_control, cpu.stat). */
export function keyedValue(text: string, key: string): number | undefined {
  const match = new RegExp(`^${key} (\\d+)$`, 'm').exec(text);
  return match?.[1] === undefined ? undefined : Number(match[1]);
}

async function readNumber(path: string): Promise<number | undefined> {
  const text = await readFile(path, 'utf8').catch(() => undefined);
  const value = text === undefined ? Number.NaN : Number(text.trim());
  return Number.isFinite(value) ? value : undefined;
}

function exists(path: string): Promise<boolean> {
  return access(path, constants.F_OK).then(
    () => true,
    () => false,
  );
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
