// The bubblewrap runtime: each sandbox is a bwrap process tree in fresh user/pid/net/mount/ipc/uts/cgroup
// namespaces over the read-only rootfs, running sandboxd as uid 1000 with no capabilities and no network; the worker
// reaches sandboxd through a unix socket in a per-sandbox run directory bind-mounted at /run/workcell. With an
// allow-list, the sandbox's one way out is its egress proxy's socket, bound read-only at /run/workcell-net
// (runtimes/network/sandbox-egress.ts), which sandboxd bridges to 127.0.0.1:3128 inside.
// It must never run a sandbox as host root: when the server is root, bwrap is started as the unprivileged sandbox
// user (as root, bwrap's --uid 1000 would still be host uid 0), and everything the sandbox writes is that user's.
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import { closeSync, constants, fstatSync, openSync } from 'node:fs';
import { chown, lchown, lstat, mkdir, open, readdir, readFile, readlink, realpath, rm, rmdir, stat, statfs } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import type { Logger } from 'pino';
import type { Config } from '../../config.ts';
import { WorkcellError, errorMessage } from '../../errors.ts';
import { jupyterBaseUrl, readyLine } from '../../sandboxd/protocol.ts';
import { newToken } from '../../util/ids.ts';
import { cgroupFixHint, cgroupWrapper, createSandboxCgroup, findCgroupHost, reapCgroups, type CgroupHost, type SandboxCgroup } from '../cgroups.ts';
import { ensureRootfs } from '../image.ts';
import { hasEgress, openEgressSocket, sandboxEgressDir, sandboxProxyPort, sandboxProxySocket, type EgressSocket, type NetworkPolicy } from '../network/sandbox-egress.ts';
import { bwrapCommand, bwrapQuickCheck, compareVersions, findBwrapHost, findExecutable, lookupUser, probeBwrap, runCommand, type BwrapHost } from '../probe.ts';
import { SandboxdClient } from '../sandboxd-client.ts';
import { ensureRunDir } from '../run-dir.ts';
import { reapBwrapOrphans, type OrphanReport } from './reap.ts';
import { PendingLog, SandboxLog } from '../sandbox-log.ts';
import { profileMismatch } from '../sandbox-profile.ts';
import { hostSeccompArch, hostSeccompProgram } from '../seccomp.ts';
import type { LimitCounters, RuntimeProbe, Sandbox, SandboxLimits, SandboxProfile, SandboxRuntime, SandboxSpec, WarmSandbox } from '../types.ts';

const readyTimeoutMs = 30_000;
/** A sandbox directory with no live sandbox is reaped once unchanged this long (another server may be creating it). */
const orphanGraceMs = 10 * 60_000;
/** How long destroy() waits after SIGTERM before SIGKILL. */
const destroyGraceMs = 2_000;
/** How long destroy() waits for the sandbox's pid namespace to empty after bwrap has gone. */
const namespaceDrainTimeoutMs = 5_000;
/** Unix socket paths are limited to 108 bytes including the terminating NUL. */
const maxSocketPathBytes = 107;
const sandboxPath = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
/** Size of the tmpfs mounted on a sandbox's run directory (it holds sockets only) when the server is root. */
const runDirTmpfsSize = '16m';

export interface BwrapRuntimeOptions {
  config: Config;
  /** Path of the bundled sandboxd (one .mjs file); built on first use by the caller. */
  sandboxdBundlePath: () => Promise<string>;
  logger?: Logger;
}

export interface BwrapSandbox extends Sandbox {
  /** Host pid of the bwrap process (the leader of the sandbox's process group). */
  readonly pid: number;
  /** The run directory bind-mounted at /run/workcell (holds sandboxd's socket). */
  readonly runDir: string;
  /** Host uid that every process and file of the sandbox has. */
  readonly hostUid: number;
  /** The sandbox's pid namespace (as /proc/<pid>/ns/pid reads, e.g. "pid:[4026532310]"), if it could be read. */
  readonly pidNamespace: string | undefined;
}

type BwrapProcess = ChildProcessByStdio<Writable, Readable, Readable>;

export class BwrapRuntime implements SandboxRuntime {
  readonly name = 'bwrap';
  readonly #config: Config;
  readonly #sandboxdBundlePath: () => Promise<string>;
  readonly #logger: Logger | undefined;
  /** bwrap's path and version and the sandbox user, looked up once they are found. */
  #host: BwrapHost | undefined;
  /** See #findCgroups. */
  #cgroupHost: Promise<CgroupHost | { problem: string }> | undefined;

  constructor(options: BwrapRuntimeOptions) {
    this.#config = options.config;
    this.#sandboxdBundlePath = options.sandboxdBundlePath;
    this.#logger = options.logger;
  }

  probe(): Promise<RuntimeProbe> {
    return probeBwrap(this.#config);
  }

  unavailableReason(): string | undefined {
    return bwrapQuickCheck(this.#config);
  }

  /** Removes what the sandboxes of dead servers left behind: process trees, run and socket directories (reap.ts). */
  async reapOrphans(): Promise<OrphanReport> {
    const sandboxUid = process.getuid?.() === 0 ? (await lookupUser(this.#config.sandboxUser))?.uid : process.getuid?.();
    if (sandboxUid === undefined) return { dirs: [], processes: [] };
    const report = await reapBwrapOrphans({ runDir: this.#config.runDir, sandboxUid, graceMs: orphanGraceMs, logger: this.#logger });
    // Then the cgroups of dead servers' sandboxes (killing anything still in them): cgroups.ts.
    const cgroups = await this.#findCgroups();
    if (!('problem' in cgroups)) report.dirs.push(...(await reapCgroups(cgroups)).map((name) => `cgroup ${name}`));
    return report;
  }

  /** Where sandbox cgroups go, found once; the first lookup also reaps the cgroups of dead servers. */
  #findCgroups(): Promise<CgroupHost | { problem: string }> {
    return (this.#cgroupHost ??= findCgroupHost({ parent: this.#config.cgroupParent }).then(async (found) => {
      if (!('problem' in found)) {
        const reaped = await reapCgroups(found).catch(() => []);
        if (reaped.length > 0) this.#logger?.info({ cgroups: reaped }, 'removed the cgroups of sandboxes whose server is gone');
      }
      return found;
    }));
  }

  async create(spec: SandboxSpec, signal?: AbortSignal): Promise<BwrapSandbox> {
    signal?.throwIfAborted();
    const host = await this.#findHost();
    const workspace = await workspaceDirectory(spec.workspaceDir);
    await mkdir(spec.logDir, { recursive: true });
    const logStream = new SandboxLog(spec.logDir, spec.log);
    const output = { stream: logStream, tail: () => readTail(logStream.path, logStream.startSize), close: () => logStream.close() };
    try {
      return await this.#start({ host, jobId: spec.jobId, workspace, limits: spec.limits, network: spec.network, output }, signal);
    } catch (error) {
      logStream.end();
      throw error;
    }
  }

  /**
   * A sandbox for the warm pool: started with the profile's limits and no network over an empty workspace slot (a
   * small tmpfs, shared with the sandbox's mount namespace), into which attach mounts the job's workspace. Needs a
   * root server: mounting is what hands the workspace over.
   */
  async prepare(profile: SandboxProfile, signal?: AbortSignal): Promise<WarmSandbox<BwrapSandbox>> {
    signal?.throwIfAborted();
    const host = await this.#findHost();
    if (host.sandboxUser === undefined) throw new WorkcellError('runtime_unavailable', "the warm pool of bwrap sandboxes needs a server running as root: it mounts each job's workspace into a running sandbox");
    const pending = new PendingLog();
    const output = { stream: pending, tail: async () => pending.text().slice(-4000).trim(), close: async () => void pending.end() };
    const sandbox = await this.#start({ host, jobId: undefined, workspace: undefined, limits: profile.limits, network: undefined, output }, signal);
    let taken = false;
    return {
      id: sandbox.id,
      profile,
      exited: sandbox.exited,
      destroy: () => sandbox.destroy(),
      attach: async (spec) => {
        if (taken) throw new Error(`sandbox ${sandbox.id} was given to a job already`);
        taken = true;
        const mismatch = profileMismatch(spec, profile);
        if (mismatch !== undefined) throw new Error(mismatch);
        const workspace = await workspaceDirectory(spec.workspaceDir);
        const owner = host.sandboxUser!;
        await settled([
          (async () => {
            await chownTree(workspace, owner.uid, owner.gid);
            await assertReachable(workspace, owner);
          })(),
          (async () => {
            await bindOnSlot(workspace, sandbox.slot!);
            await sandbox.client.call('attach', { jupyter_base_url: jupyterBaseUrl(spec.jobId) });
          })(),
          mkdir(spec.logDir, { recursive: true }),
        ]);
        pending.handOver(new SandboxLog(spec.logDir, spec.log));
        return { ...sandbox, jobId: spec.jobId, pooled: true, isolation: `${sandbox.isolation}; started ahead in the warm pool` };
      },
    };
  }

  async #findHost(): Promise<BwrapHost> {
    const host = this.#host ?? (await findBwrapHost(this.#config));
    if ('missing' in host) throw new WorkcellError('runtime_unavailable', host.missing);
    return (this.#host = host);
  }

  /** Starts a sandbox over `workspace`, or (undefined) over a fresh workspace slot for the warm pool. */
  async #start(request: { host: BwrapHost; jobId: string | undefined; workspace: string | undefined; limits: SandboxLimits | undefined; network: NetworkPolicy | undefined; output: LaunchLog }, signal?: AbortSignal): Promise<BwrapSandbox & { slot?: string }> {
    const { host } = request;
    const rootfs = ensureRootfs(this.#config);
    let bundle: string;
    try {
      bundle = await this.#sandboxdBundlePath();
    } catch (error) {
      throw new WorkcellError('runtime_unavailable', `the sandboxd bundle could not be built: ${errorMessage(error)}`, { cause: error });
    }
    signal?.throwIfAborted();
    const owner = host.sandboxUser ?? { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 };
    const sandboxId = `sb-${newToken().replace(/[-_]/g, '').slice(0, 12).toLowerCase()}`;
    const runDir = resolve(this.#config.runDir, sandboxId);
    const socketPath = join(runDir, 'sandboxd.sock');
    if (Buffer.byteLength(socketPath) > maxSocketPathBytes) {
      throw new WorkcellError('runtime_unavailable', `WORKCELL_RUN_DIR is too long for a unix socket path (${socketPath}): choose a shorter directory, e.g. /run/workcell`);
    }
    const log = this.#logger?.child({ ...(request.jobId === undefined ? {} : { jobId: request.jobId }), sandboxId });
    if (hostSeccompArch() === undefined) throw new WorkcellError('runtime_unavailable', `the sandbox's seccomp filter has no syscall table for ${process.arch}: bwrap sandboxes run on x86_64 and aarch64 only`);
    await ensureRunDir(this.#config.runDir);
    await mkdir(runDir, { mode: 0o700 });
    const slot = request.workspace === undefined ? `${runDir}-ws` : undefined;
    let runDirMounted = false;
    let slotMounted = false;
    let egress: EgressSocket | undefined;
    let cgroup: SandboxCgroup | undefined;
    try {
      const workspace = request.workspace ?? slot!;
      // What does not depend on the rest runs at once (each is a command or a few syscalls; a start waits for all).
      await settled([
        (async () => {
          cgroup = request.limits === undefined ? undefined : await this.#createCgroup(sandboxId, request.limits);
        })(),
        ...(slot === undefined
          ? []
          : [
              (async () => {
                await mountSlot(slot);
                slotMounted = true;
              })(),
            ]),
        ...(host.sandboxUser === undefined
          ? []
          : [
              (async () => {
                // As root, a tmpfs of its own: the run directory is writable from inside and must not be a way to fill the host's disk.
                await mountRunDir(runDir, owner);
                runDirMounted = true;
                await chown(runDir, owner.uid, owner.gid);
              })(),
              ...(slot === undefined ? [chownTree(workspace, owner.uid, owner.gid)] : []),
            ]),
      ]);
      if (host.sandboxUser !== undefined) for (const path of [rootfs, bundle, workspace, runDir]) await assertReachable(path, owner);
      // The egress proxy's socket, in a directory of its own that the sandbox gets read-only (not the writable run dir).
      if (hasEgress(request.network)) {
        egress = await openEgressSocket({ dir: `${runDir}-net`, owner: host.sandboxUser === undefined ? undefined : owner, policy: request.network, logger: log });
        if (host.sandboxUser !== undefined) await assertReachable(egress.socketPath, owner);
      }
      const sandbox = await this.#launch({ ...request, sandboxId, runDir, runDirMounted, socketPath, workspace, slot, rootfs, bundle, hostUid: owner.uid, cgroup, egress, signal, log });
      return slot === undefined ? sandbox : { ...sandbox, slot };
    } catch (error) {
      await egress?.close().catch(() => undefined);
      await releaseRunDir(runDir, runDirMounted).catch(() => undefined);
      if (slotMounted) await releaseSlot(slot!).catch(() => undefined);
      await cgroup?.remove().catch(() => undefined);
      throw error;
    }
  }

  /**
   * The sandbox's cgroup with its limits. Fails closed, saying how to fix it, when cgroups cannot be used, unless the
   * operator opted out of limits (WORKCELL_UNSAFE_NO_LIMITS): then the sandbox runs without them and says so.
   */
  async #createCgroup(sandboxId: string, limits: SandboxLimits): Promise<SandboxCgroup | undefined> {
    const found = await this.#findCgroups();
    try {
      if ('problem' in found) throw new Error(found.problem);
      return await createSandboxCgroup(found, sandboxId, { cpus: limits.cpus, memoryMb: limits.memoryMb, pids: limits.pids });
    } catch (error) {
      if (this.#config.unsafeNoLimits) {
        this.#logger?.warn({ sandboxId, error: errorMessage(error) }, 'running the sandbox without CPU, memory and pids limits (WORKCELL_UNSAFE_NO_LIMITS)');
        return undefined;
      }
      const message = errorMessage(error);
      throw new WorkcellError('runtime_unavailable', message.includes(cgroupFixHint) ? message : `${message}: ${cgroupFixHint}`, { cause: error });
    }
  }

  async #launch(launch: {
    jobId: string | undefined;
    limits: SandboxLimits | undefined;
    network: NetworkPolicy | undefined;
    sandboxId: string;
    runDir: string;
    runDirMounted: boolean;
    socketPath: string;
    workspace: string;
    slot: string | undefined;
    rootfs: string;
    bundle: string;
    host: BwrapHost;
    hostUid: number;
    cgroup: SandboxCgroup | undefined;
    egress: EgressSocket | undefined;
    output: LaunchLog;
    signal: AbortSignal | undefined;
    log: Logger | undefined;
  }): Promise<BwrapSandbox> {
    const { sandboxId, runDir, socketPath, host, hostUid, cgroup, log, limits } = launch;
    // tmpfs sizes (bwrap >= 0.8): /tmp and the home get the job's disk limit; tmpfs pages also count as the cgroup's memory.
    const sized = (bytes: number) => (limits !== undefined && compareVersions(host.version, '0.8.0') >= 0 ? ['--size', String(bytes)] : []);
    const diskBytes = (limits?.diskMb ?? 0) * 1024 * 1024;
    const started = performance.now();
    // The options go to bwrap through a pipe (--args), not argv: argv of the namespace's init is visible inside the
    // sandbox (ps) and would show host paths.
    const bwrapOptions = [
      // --unshare-all only tries the user namespace; require it (and forbid nested ones where bwrap can).
      '--unshare-all',
      '--unshare-user',
      ...(compareVersions(host.version, '0.8.0') >= 0 ? ['--disable-userns'] : []),
      '--new-session',
      '--die-with-parent',
      '--uid', '1000',
      '--gid', '1000',
      '--hostname', 'workcell',
      '--ro-bind', launch.rootfs, '/',
      '--proc', '/proc',
      '--dev', '/dev',
      ...sized(diskBytes), '--tmpfs', '/tmp',
      ...sized(64 * 1024 * 1024), '--tmpfs', '/run',
      ...sized(diskBytes), '--tmpfs', '/home/agent',
      '--bind', launch.workspace, '/workspace',
      '--bind', runDir, '/run/workcell',
      '--ro-bind', launch.bundle, '/run/workcell-bin/sandboxd.mjs',
      ...(launch.egress === undefined ? [] : ['--ro-bind', launch.egress.dir, sandboxEgressDir]),
      '--chdir', '/workspace',
      '--cap-drop', 'ALL',
      // The syscall filter (seccomp.ts), read by bwrap from fd 4 and applied right before sandboxd starts.
      '--seccomp', '4',
    ];
    const [file, ...prefix] = bwrapCommand(host) as [string, ...string[]];
    const command = [
      '/usr/local/bin/node', '/run/workcell-bin/sandboxd.mjs', '--socket', '/run/workcell/sandboxd.sock', '--workspace', '/workspace',
      // The sandbox id on the command line labels bwrap and sandboxd, so orphans can be found by it (bwrap/reap.ts).
      '--label', sandboxId,
      ...(launch.egress === undefined ? [] : ['--proxy-socket', sandboxProxySocket, '--proxy-port', String(sandboxProxyPort)]),
      // Jupyter serves its pages under the orchestrator's prefix for the job (api/routes/services.ts); a warm
      // sandbox is told it at attach.
      ...(launch.jobId === undefined ? [] : ['--jupyter-base-url', jupyterBaseUrl(launch.jobId)]),
    ];
    // sandboxd's stderr and, after its ready line, its stdout: through the capped writer, never straight to the file.
    const logStream = launch.output.stream;
    // With limits, a host shell joins the cgroup first and then execs setpriv/bwrap (same pid), so nothing of the
    // sandbox ever runs outside it.
    const [wrapperFile, ...wrapperArgs] = cgroup === undefined ? [file, ...prefix] : [...cgroupWrapper(cgroup), file, ...prefix];
    const child = spawn(wrapperFile!, [...wrapperArgs, '--args', '3', '--', ...command], {
      // Its own process group, so destroy() can signal bwrap and anything it left in the group at once.
      detached: true,
      stdio: ['pipe', 'pipe', 'pipe', 'pipe', 'pipe'],
      env: { HOME: '/home/agent', USER: 'agent', LOGNAME: 'agent', PATH: sandboxPath, LANG: 'C.UTF-8' },
    }) as BwrapProcess;
    child.stderr.pipe(logStream, { end: false });
    const exited = new Promise<{ code: number | null; signal: string | null }>((resolveExit) => {
      child.once('exit', (code, exitSignal) => resolveExit({ code, signal: exitSignal }));
      child.once('error', () => resolveExit({ code: null, signal: null }));
    });
    const spawnError = new Promise<Error>((resolveError) => child.once('error', resolveError));

    const optionsPipe = child.stdio[3] as Writable;
    optionsPipe.on('error', () => undefined);
    optionsPipe.end(bwrapOptions.map((option) => `${option}\0`).join(''));
    const seccompPipe = child.stdio[4] as Writable;
    seccompPipe.on('error', () => undefined);
    seccompPipe.end(hostSeccompProgram());
    const token = newToken();
    child.stdin.on('error', () => undefined); // EPIPE when bwrap fails before reading; the exit is reported instead
    child.stdin.end(`${token}\n`);

    const killGroup = (killSignal: NodeJS.Signals) => {
      try {
        if (child.pid !== undefined) process.kill(-child.pid, killSignal);
      } catch {
        // already gone
      }
    };
    try {
      const ready = await waitForReady(child, exited, spawnError, launch.signal);
      log?.debug({ readyMs: Math.round(performance.now() - started), sandboxdPid: ready.pid }, 'sandbox ready');
    } catch (error) {
      killGroup('SIGKILL');
      await exited;
      // bwrap's own complaint is on stderr: read it to the end before the log is closed.
      await streamEnded(child.stderr, destroyGraceMs);
      await launch.output.close();
      const tail = await launch.output.tail();
      if (launch.signal?.aborted) throw launch.signal.reason instanceof Error ? launch.signal.reason : new Error('aborted');
      throw new WorkcellError('sandbox_failed', `the sandbox did not start: ${errorMessage(error)}${tail === '' ? '' : `\n--- sandbox.log ---\n${tail}`}`, { cause: error });
    }
    // Anything sandboxd prints after the ready line is diagnostics; it must keep flowing or sandboxd would block.
    child.stdout.pipe(logStream, { end: false });
    const pid = child.pid!;
    const { namespace: pidNamespace, initPid } = await sandboxPidNamespace(pid);
    // At this point the namespace's init has one child: sandboxd.
    const sandboxdPid = initPid === undefined ? undefined : (await childPids(initPid))[0];
    let socketFd: number;
    try {
      socketFd = pinSocket(socketPath, hostUid);
    } catch (error) {
      killGroup('SIGKILL');
      await exited;
      logStream.end();
      throw new WorkcellError('sandbox_failed', `sandboxd reported ready but its socket is unusable: ${errorMessage(error)}`);
    }
    // Every connection goes through the pinned descriptor, never the path the sandbox can rewrite.
    const client = new SandboxdClient({ socketPath: `/proc/self/fd/${socketFd}` }, token);

    void exited.then((status) => log?.debug(status, 'sandbox exited'));
    let destroying: Promise<void> | undefined;
    const destroy = () =>
      (destroying ??= (async () => {
        if (child.exitCode === null && child.signalCode === null) {
          killGroup('SIGTERM');
          const timer = setTimeout(() => killGroup('SIGKILL'), destroyGraceMs);
          await exited;
          clearTimeout(timer);
        }
        // bwrap's exit SIGKILLs the namespace's init (die-with-parent), which takes every sandbox process with it;
        // wait until that has happened, so nothing the sandbox started outlives destroy().
        if (pidNamespace !== undefined) await drainPidNamespace(pidNamespace);
        await launch.egress?.close().catch((error: unknown) => log?.error({ err: error }, 'closing the egress proxy failed'));
        client.close();
        closeSync(socketFd);
        logStream.end();
        await cgroup?.remove().catch((error: unknown) => log?.error({ err: error }, 'removing the sandbox cgroup failed'));
        await releaseRunDir(runDir, launch.runDirMounted);
        if (launch.slot !== undefined) await releaseSlot(launch.slot);
        log?.debug('sandbox destroyed');
      })());

    const limitCounters = async (): Promise<LimitCounters> => {
      const counters = (await cgroup?.counters()) ?? { oomKills: 0, pidsRefused: 0, processes: undefined };
      // Read on the host: the workspace's file system, and the sandbox's /tmp through its init's root.
      const [workspaceStat, tmpStat] = await Promise.all([
        statfs(launch.workspace).catch(() => undefined),
        initPid === undefined ? undefined : statfs(`/proc/${initPid}/root/tmp`).catch(() => undefined),
      ]);
      return {
        ...counters,
        workspaceFreeBytes: workspaceStat === undefined ? undefined : workspaceStat.bavail * workspaceStat.bsize,
        tmpFreeBytes: tmpStat === undefined ? undefined : tmpStat.bavail * tmpStat.bsize,
      };
    };
    const limitsText =
      cgroup === undefined || limits === undefined
        ? 'NO resource limits (WORKCELL_UNSAFE_NO_LIMITS)'
        : `limits: ${limits.cpus} CPU, ${limits.memoryMb} MB memory, ${limits.pids} processes (cgroup v${cgroup.host.version}), /tmp ${limits.diskMb} MB`;

    return {
      id: sandboxId,
      jobId: launch.jobId ?? '',
      runtime: this.name,
      isolation:
        `bwrap ${host.version}: user/pid/net/mount/ipc/uts/cgroup namespaces, read-only rootfs, uid 1000 (host uid ${hostUid}), ` +
        `no capabilities, no new privileges, seccomp filter, ${networkText(launch.egress, launch.network)}; ${limitsText}`,
      client,
      exited,
      destroy,
      ...(cgroup === undefined ? {} : { limits, limitCounters, usage: () => cgroup.usage(), stopProcesses: () => stopAgentProcesses(cgroup, [pid, initPid, sandboxdPid]) }),
      pid,
      runDir,
      hostUid,
      pidNamespace,
    };
  }
}

/** Linux's O_PATH (not in fs.constants): a descriptor that names a file without opening it for I/O. */
const O_PATH = 0o10000000;

/**
 * Pins sandboxd's socket: the run directory is writable from inside the sandbox, so once the agent's code runs it
 * could replace sandboxd.sock with a symlink to some other socket on the host, and the worker (perhaps root) would
 * connect there with the token. Right after the ready line, before any agent code runs, the socket is opened with
 * O_PATH|O_NOFOLLOW and checked (a socket, owned by the sandbox's host uid); connecting to /proc/self/fd/N then
 * always reaches that inode, whatever the path later holds.
 */
function pinSocket(socketPath: string, hostUid: number): number {
  const fd = openSync(socketPath, O_PATH | constants.O_NOFOLLOW);
  const info = fstatSync(fd);
  if (!info.isSocket() || info.uid !== hostUid) {
    closeSync(fd);
    throw new Error(`${socketPath} is not a socket owned by uid ${hostUid}`);
  }
  return fd;
}

/** Waits for sandboxd's ready line on stdout; rejects on exit, timeout or abort. */
function waitForReady(
  child: BwrapProcess,
  exited: Promise<{ code: number | null; signal: string | null }>,
  spawnError: Promise<Error>,
  signal: AbortSignal | undefined,
): Promise<{ pid: number; version: string }> {
  return new Promise((resolveReady, reject) => {
    const timeout = AbortSignal.timeout(readyTimeoutMs);
    let buffered = '';
    const cleanup = () => {
      child.stdout.off('data', onData);
      timeout.removeEventListener('abort', onTimeout);
      signal?.removeEventListener('abort', onAbort);
    };
    const fail = (error: Error) => {
      cleanup();
      reject(error);
    };
    const onData = (chunk: Buffer) => {
      buffered += chunk.toString('utf8');
      const newline = buffered.indexOf('\n');
      if (newline === -1) {
        if (buffered.length > 64 * 1024) fail(new Error('sandboxd printed a line too long to be its ready line'));
        return;
      }
      const line = buffered.slice(0, newline);
      let parsed: ReturnType<typeof readyLine.safeParse>;
      try {
        parsed = readyLine.safeParse(JSON.parse(line));
      } catch {
        fail(new Error(`sandboxd's first line is not JSON: ${line.slice(0, 200)}`));
        return;
      }
      if (!parsed.success) {
        fail(new Error(`sandboxd's first line is not a ready line: ${line.slice(0, 200)}`));
        return;
      }
      cleanup();
      // Keep whatever followed the ready line for the log.
      const rest = buffered.slice(newline + 1);
      if (rest !== '') child.stdout.unshift(Buffer.from(rest, 'utf8'));
      resolveReady(parsed.data);
    };
    const onTimeout = () => fail(new Error(`sandboxd was not ready within ${readyTimeoutMs / 1000} s`));
    const onAbort = () => fail(signal?.reason instanceof Error ? signal.reason : new Error('aborted'));
    child.stdout.on('data', onData);
    timeout.addEventListener('abort', onTimeout, { once: true });
    signal?.addEventListener('abort', onAbort, { once: true });
    if (signal?.aborted) onAbort();
    void exited.then((status) => fail(new Error(`bwrap exited before sandboxd was ready (${status.signal ?? `exit code ${status.code}`})`)));
    void spawnError.then((error) => fail(new Error(`cannot start bwrap: ${error.message}`)));
  });
}

/** Resolves when `stream` has closed, or after `timeoutMs` (a process that kept it open must not hold us up). */
function streamEnded(stream: Readable, timeoutMs: number): Promise<void> {
  if (stream.closed) return Promise.resolve();
  return new Promise((resolveEnded) => {
    const timer = setTimeout(resolveEnded, timeoutMs);
    stream.once('close', () => {
      clearTimeout(timer);
      resolveEnded();
    });
  });
}

/** The end of what this sandbox wrote to its log, for error messages. */
async function readTail(path: string, from: number, maxBytes = 4000): Promise<string> {
  try {
    const handle = await open(path, 'r');
    try {
      const { size } = await handle.stat();
      const start = Math.max(from, size - maxBytes);
      const buffer = Buffer.alloc(size - start);
      await handle.read(buffer, 0, buffer.length, start);
      return buffer.toString('utf8').trim();
    } finally {
      await handle.close();
    }
  } catch {
    return '';
  }
}

/** The pid namespace (its /proc inode link) of the processes bwrap started, and its init: bwrap's child. */
async function sandboxPidNamespace(bwrapPid: number): Promise<{ namespace: string | undefined; initPid: number | undefined }> {
  const own = await readlink('/proc/self/ns/pid').catch(() => undefined);
  for (const child of await childPids(bwrapPid)) {
    const namespace = await readlink(`/proc/${child}/ns/pid`).catch(() => undefined);
    if (namespace !== undefined && namespace !== own) return { namespace, initPid: child };
  }
  return { namespace: undefined, initPid: undefined };
}

/**
 * SIGKILLs every process in the sandbox's cgroup but bwrap, the namespace's init and sandboxd, round after round until
 * none is left (a fork bomb refills the freed slots while it lives). sandboxd sees its shell die and starts a new one.
 */
async function stopAgentProcesses(cgroup: SandboxCgroup, keep: Array<number | undefined>): Promise<number> {
  const kept = new Set(keep.filter((pid): pid is number => pid !== undefined));
  const killed = new Set<number>();
  for (let round = 0; round < 200; round++) {
    const victims = (await cgroup.processes()).filter((pid) => !kept.has(pid));
    if (victims.length === 0) break;
    for (const pid of victims) {
      try {
        process.kill(pid, 'SIGKILL');
        killed.add(pid);
      } catch {
        // gone
      }
    }
    await new Promise((resolveWait) => setTimeout(resolveWait, 5));
  }
  return killed.size;
}

/** Mounts a small tmpfs, owned by the sandbox user, on the run directory. */
async function mountRunDir(runDir: string, owner: { uid: number; gid: number }): Promise<void> {
  const options = `size=${runDirTmpfsSize},nr_inodes=4096,mode=0700,uid=${owner.uid},gid=${owner.gid},nosuid,nodev,noexec`;
  await mountCommand(['-t', 'tmpfs', '-o', options, 'workcell-run', runDir], "cannot mount a tmpfs on the sandbox's run directory");
}

/** Unmounts (if mounted) and removes the run directory. */
async function releaseRunDir(runDir: string, mounted: boolean): Promise<void> {
  const umount = findExecutable('umount');
  if (mounted && umount !== undefined) {
    // Nothing of the sandbox is left to hold it busy; if something on the host does, detach it anyway (lazy).
    const result = await runCommand(umount, [runDir], { timeoutMs: 10_000 });
    if (!result.ok) await runCommand(umount, ['-l', runDir], { timeoutMs: 10_000 });
  }
  await rm(runDir, { recursive: true, force: true });
}

async function childPids(pid: number): Promise<number[]> {
  const listed = await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8').catch(() => undefined);
  if (listed !== undefined) return listed.trim().split(/\s+/).filter(Boolean).map(Number);
  // Kernels without CONFIG_PROC_CHILDREN: find them by parent pid.
  const children: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const status = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => '');
    const parent = Number(status.slice(status.lastIndexOf(')') + 2).split(' ')[1]);
    if (parent === pid) children.push(Number(entry));
  }
  return children;
}

/** Host pids of the live (not zombie) processes in a pid namespace. */
export async function pidNamespaceMembers(namespace: string): Promise<number[]> {
  const members: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const link = await readlink(`/proc/${entry}/ns/pid`).catch(() => undefined);
    if (link !== namespace) continue;
    const status = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => '');
    const state = status.slice(status.lastIndexOf(')') + 2, status.lastIndexOf(')') + 3);
    if (state !== '' && state !== 'Z' && state !== 'X') members.push(Number(entry));
  }
  return members;
}

async function drainPidNamespace(namespace: string): Promise<void> {
  const deadline = Date.now() + namespaceDrainTimeoutMs;
  for (;;) {
    const members = await pidNamespaceMembers(namespace);
    if (members.length === 0) return;
    if (Date.now() > deadline) {
      // die-with-parent should have done this; make sure nothing survives.
      for (const pid of members) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone meanwhile
        }
      }
      return;
    }
    await new Promise((resolveWait) => setTimeout(resolveWait, 10));
  }
}

/**
 * Gives the sandbox user the workspace: files the job put there (uploads, a restored workspace) must be the
 * agent's to change. chown -R never follows symlinks, so a link planted in the workspace cannot redirect it.
 */
async function chownTree(path: string, uid: number, gid: number): Promise<void> {
  // A small tree (a new job's workspace, a few uploads) in this process: spawning chown was most of a warm handover.
  if (await chownSmallTree(path, uid, gid, 500)) return;
  const chownCommand = findExecutable('chown');
  if (chownCommand === undefined) throw new WorkcellError('runtime_unavailable', 'chown not found on PATH');
  const result = await runCommand(chownCommand, ['-R', '--no-dereference', `${uid}:${gid}`, '--', path], { timeoutMs: 120_000 });
  if (!result.ok) throw new WorkcellError('sandbox_failed', `cannot give the workspace to the sandbox user: ${result.stderr.trim()}`);
}

/**
 * chown -R for a tree of at most `budget` entries, with lchown (a symlink is changed, never followed) and descending
 * only into real directories. Returns false, having changed nothing or part of it, when the tree is larger.
 */
async function chownSmallTree(root: string, uid: number, gid: number, budget: number): Promise<boolean> {
  const paths = [root];
  for (let index = 0; index < paths.length; index++) {
    const dir = paths[index]!;
    if (dir !== root && !(await lstat(dir)).isDirectory()) continue;
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      if (paths.length >= budget) return false;
      paths.push(join(dir, entry.name));
    }
  }
  await Promise.all(paths.map((path) => lchown(path, uid, gid)));
  return true;
}

/** The sandbox user must be able to reach (search every parent of) a path that bwrap binds in. */
async function assertReachable(path: string, user: { uid: number; gid: number }): Promise<void> {
  let dir = dirname(path);
  for (;;) {
    const info = await stat(dir);
    const searchable = info.uid === user.uid ? info.mode & 0o100 : info.gid === user.gid ? info.mode & 0o010 : info.mode & 0o001;
    if (!searchable) {
      throw new WorkcellError('runtime_unavailable', `the sandbox user (uid ${user.uid}) cannot reach ${path}: ${dir} is not searchable by it (chmod o+x ${dir})`);
    }
    const parent = dirname(dir);
    if (parent === dir) return;
    dir = parent;
  }
}

function networkText(egress: EgressSocket | undefined, network: NetworkPolicy | undefined): string {
  if (egress === undefined) return 'no network';
  const count = network?.allow.length ?? 0;
  return `network only to ${count} allow-listed destination${count === 1 ? '' : 's'} through the host's egress proxy`;
}

/** What a sandbox prints goes to `stream`; `tail` reads the end of it for an error message. */
interface LaunchLog {
  stream: Writable;
  tail(): Promise<string>;
  close(): Promise<void>;
}

/** The real path of a job's workspace (a symlinked one is bound, and chowned, as the directory it points to). */
async function workspaceDirectory(path: string): Promise<string> {
  const workspace = await realpath(path).catch(() => resolve(path));
  const info = await stat(workspace).catch(() => undefined);
  if (!info?.isDirectory()) throw new WorkcellError('sandbox_failed', `the workspace ${workspace} is not a directory`);
  return workspace;
}

/**
 * A warm sandbox's workspace slot: an empty, root-owned 4 KB tmpfs with shared propagation. The sandbox's mount
 * namespace (made after this) receives, as a slave, whatever is mounted on it later, so attach's bind of the job's
 * workspace appears at /workspace inside, locked there (the sandbox cannot unmount it to see beneath).
 */
async function mountSlot(slot: string): Promise<void> {
  await mkdir(slot, { mode: 0o755 });
  await mountCommand(['-t', 'tmpfs', '-o', 'size=4k,nr_inodes=16,mode=0755,nosuid,nodev,noexec', 'workcell-slot', slot], 'cannot mount the warm sandbox\'s workspace slot');
  await mountCommand(['--make-shared', slot], 'cannot share the warm sandbox\'s workspace slot');
}

/** Mounts a job's workspace on a warm sandbox's slot: it appears at the sandbox's /workspace. */
async function bindOnSlot(workspace: string, slot: string): Promise<void> {
  await mountCommand(['--bind', workspace, slot], "cannot mount the job's workspace into the warm sandbox");
}

/** Unmounts everything on a slot (the job's workspace, then the slot's tmpfs) and removes it. */
async function releaseSlot(slot: string): Promise<void> {
  const umount = findExecutable('umount');
  if (umount === undefined) throw new WorkcellError('runtime_unavailable', 'umount not found (apt-get install mount)');
  for (let mounted = 0; mounted < 2; mounted++) {
    const result = await runCommand(umount, [slot], { timeoutMs: 10_000 });
    if (!result.ok && /not mounted|no mount point/i.test(result.stderr)) break;
    if (!result.ok) await runCommand(umount, ['-l', slot], { timeoutMs: 10_000 });
  }
  // rmdir, never rm -r: were a workspace still mounted here, its files must not be deleted.
  await rmdir(slot).catch((error: NodeJS.ErrnoException) => {
    if (error.code !== 'ENOENT') throw error;
  });
}

async function mountCommand(args: string[], what: string): Promise<void> {
  const mount = findExecutable('mount');
  if (mount === undefined) throw new WorkcellError('runtime_unavailable', 'mount not found (apt-get install mount)');
  const result = await runCommand(mount, args, { timeoutMs: 10_000 });
  if (!result.ok) throw new WorkcellError('sandbox_failed', `${what}: ${result.stderr.trim() || `exit ${result.code}`}`);
}

/** Waits for all of `steps`, then throws the first failure: the caller's clean-up must not run while one still works. */
async function settled(steps: Array<Promise<unknown>>): Promise<void> {
  const failed = (await Promise.allSettled(steps)).find((result) => result.status === 'rejected');
  if (failed !== undefined) throw failed.reason;
}
