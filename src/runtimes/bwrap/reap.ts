// Orphans of bwrap sandboxes: what a server that died (or a destroy that failed half-way) left behind. Each sandbox
// is labelled by its id on bwrap's and sandboxd's command line (`--label sb-...`), and owns `<run dir>/sb-<id>` (its
// run directory, perhaps a tmpfs mount), `<run dir>/sb-<id>-net` (its egress proxy's socket directory) and, for a
// sandbox of the warm pool, `<run dir>/sb-<id>-ws` (its workspace slot: a tmpfs, perhaps with a job's workspace on it).
//   - A sandbox is alive while a labelled process of it exists in this pid namespace: bwrap itself, started by its
//     server with --die-with-parent, so it dies with that server. Its directories are left alone.
//   - Labelled processes only inside a sandbox pid namespace (their bwrap is gone) are an orphaned process tree:
//     every process of that namespace is killed; but only a bwrap sandbox's tree, whose namespace's init (pid 1 there)
//     is bwrap itself, labelled with the same id, in a user namespace of its own. Other runtimes label their sandboxd
//     the same way: a docker container's processes are visible here too, as uid 1000, which is also the uid of a
//     non-root server that runs bwrap sandboxes as itself; they are never this reaper's.
//   - Directories of sandboxes with no labelled process are removed (unmounted first when they are mount points),
//     once they have not changed for `graceMs`: a sandbox being created by another server has its directory a
//     moment before its bwrap starts.
// Several servers may share one run directory: nothing that belongs to a live sandbox is touched. This module must
// never kill a process outside a bwrap sandbox's pid namespace, nor one that is not the sandbox user's, and never
// follows a symlink it finds in the run directory.
import { lstat, readdir, readFile, readlink, rm, stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import type { Logger } from 'pino';
import { findExecutable, runCommand } from '../probe.ts';
import { runDirToReap } from '../run-dir.ts';
import { isMountPoint } from '../../util/mounts.ts';

export const sandboxIdPattern = /^sb-[a-z0-9]{12}$/;
const entryPattern = /^(sb-[a-z0-9]{12})(-net|-ws)?$/;

export interface OrphanReport {
  /** Directories removed. */
  dirs: string[];
  /** Processes killed. */
  processes: number[];
}

interface LabelledProcess {
  pid: number;
  sandboxId: string;
  /** The basename of argv[0]: bwrap for a bwrap sandbox's outer process and its namespace's init. */
  program: string;
  namespace: string | undefined;
  userNamespace: string | undefined;
  /** Is it pid 1 of a pid namespace below this one? */
  namespaceInit: boolean;
  uid: number | undefined;
}

/** Processes whose command line carries `--label sb-...`. */
export async function labelledProcesses(): Promise<LabelledProcess[]> {
  const found: LabelledProcess[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const argv = (await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '')).split('\0');
    const at = argv.indexOf('--label');
    const sandboxId = at === -1 ? undefined : argv[at + 1];
    if (sandboxId === undefined || !sandboxIdPattern.test(sandboxId)) continue;
    const [namespace, userNamespace, status] = await Promise.all([
      readlink(`/proc/${entry}/ns/pid`).catch(() => undefined),
      readlink(`/proc/${entry}/ns/user`).catch(() => undefined),
      readFile(`/proc/${entry}/status`, 'utf8').catch(() => ''),
    ]);
    const uid = /^Uid:\s+(\d+)/m.exec(status)?.[1];
    // NSpid: the pid in each pid namespace from this one down; `NSpid: 4711 1` is the init of a namespace below.
    const nsPids = /^NSpid:\s+(.*)$/m.exec(status)?.[1]?.trim().split(/\s+/) ?? [];
    found.push({
      pid: Number(entry),
      sandboxId,
      program: basename(argv[0] ?? ''),
      namespace,
      userNamespace,
      namespaceInit: nsPids.length > 1 && nsPids.at(-1) === '1',
      uid: uid === undefined ? undefined : Number(uid),
    });
  }
  return found;
}

/**
 * Is `each` the init of an orphaned bwrap sandbox: bwrap (pid 1 of its pid namespace, the outer bwrap that started it
 * gone) in a user namespace of its own? A container's processes (docker runs sandboxd with the same label) are not.
 */
function isBwrapSandboxInit(each: LabelledProcess, own: { pid: string | undefined; user: string | undefined }): boolean {
  return each.namespaceInit && each.program === 'bwrap' && each.namespace !== undefined && each.namespace !== own.pid && each.userNamespace !== undefined && each.userNamespace !== own.user;
}

async function namespaceMembers(namespace: string): Promise<Array<{ pid: number; uid: number | undefined }>> {
  const members: Array<{ pid: number; uid: number | undefined }> = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    if ((await readlink(`/proc/${entry}/ns/pid`).catch(() => undefined)) !== namespace) continue;
    const status = await readFile(`/proc/${entry}/status`, 'utf8').catch(() => '');
    const uid = /^Uid:\s+(\d+)/m.exec(status)?.[1];
    members.push({ pid: Number(entry), uid: uid === undefined ? undefined : Number(uid) });
  }
  return members;
}

/**
 * Unmounts whatever is mounted on `path` (a warm sandbox's workspace slot holds two: a job's workspace over a tmpfs),
 * then removes it; never removes what is still mounted (a job's workspace must not lose its files).
 */
async function removeDir(path: string): Promise<void> {
  const umount = findExecutable('umount');
  for (let round = 0; round < 3; round++) {
    const info = await lstat(path).catch(() => undefined);
    if (info === undefined || !info.isDirectory()) return;
    // By the mount table, not the device: a workspace bound from the same file system has the parent's device.
    if (!(await isMountPoint(path))) return rm(path, { recursive: true, force: true });
    if (umount === undefined) break;
    const result = await runCommand(umount, [path], { timeoutMs: 10_000 });
    if (!result.ok) await runCommand(umount, ['-l', path], { timeoutMs: 10_000 });
  }
  throw new Error(`${path} is still a mount point`);
}

export async function reapBwrapOrphans(options: {
  runDir: string;
  /** The host uid sandboxes run as; only its processes are ever killed. */
  sandboxUid: number;
  /** Directories changed more recently than this are left for a later pass. */
  graceMs: number;
  logger?: Pick<Logger, 'info' | 'warn'> | undefined;
  now?: number;
}): Promise<OrphanReport> {
  const report: OrphanReport = { dirs: [], processes: [] };
  const own = { pid: await readlink('/proc/self/ns/pid').catch(() => undefined), user: await readlink('/proc/self/ns/user').catch(() => undefined) };
  const labelled = await labelledProcesses();
  const alive = new Set(labelled.filter((each) => each.namespace === own.pid).map((each) => each.sandboxId));

  // bwrap sandbox trees whose outer bwrap is gone: kill their namespaces, the init last (its death takes the rest
  // of the namespace with it, and they would be gone before this could count them).
  const orphanInits = new Map(labelled.filter((each) => !alive.has(each.sandboxId) && isBwrapSandboxInit(each, own)).map((each) => [each.namespace!, each.pid]));
  for (const [namespace, init] of orphanInits) {
    const members = await namespaceMembers(namespace);
    for (const member of [...members.filter((each) => each.pid !== init), ...members.filter((each) => each.pid === init)]) {
      if (member.uid !== options.sandboxUid) continue;
      try {
        process.kill(member.pid, 'SIGKILL');
        report.processes.push(member.pid);
      } catch {
        // gone meanwhile
      }
    }
  }

  const parent = (await runDirToReap(options.runDir, options.logger)) ? await stat(options.runDir).catch(() => undefined) : undefined;
  if (parent !== undefined) {
    const now = options.now ?? Date.now();
    for (const entry of await readdir(options.runDir)) {
      const sandboxId = entryPattern.exec(entry)?.[1];
      if (sandboxId === undefined || alive.has(sandboxId)) continue;
      const path = join(options.runDir, entry);
      const info = await lstat(path).catch(() => undefined);
      if (info === undefined || !info.isDirectory() || now - info.mtimeMs < options.graceMs) continue;
      try {
        await removeDir(path);
        report.dirs.push(path);
      } catch (error) {
        options.logger?.warn({ path, err: error }, 'removing an orphaned sandbox directory failed');
      }
    }
  }
  if (report.dirs.length > 0 || report.processes.length > 0) options.logger?.info(report, 'reaped orphaned sandboxes');
  return report;
}
