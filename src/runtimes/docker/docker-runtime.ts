// The docker and gvisor runtimes: each sandbox is a container (runc, or gVisor's runsc for a second kernel between the
// agent and the host) of the sandbox image, hardened as DESIGN.md §9's verified run: tini as PID 1, no network
// (network mode none: the container's network namespace has only lo), memory (no swap), CPU and pids limits,
// read-only root, sized tmpfs for /tmp, the home and /run, every capability dropped, no new privileges, uid 1000, the
// workspace as a bind mount. System calls: Docker's own default seccomp profile (an allow-list, never replaced
// here), and on top of it the same filter as bwrap's, installed by the container's first process before anything else
// runs (seccomp-launcher.ts), so no process in the container, tini included, runs without both. The Docker socket is
// never mounted.
// The worker reaches sandboxd through the container's stdin/stdout (`docker attach`): the guest agent
// (runtimes/guest-agent/) multiplexes sandboxd's connections and the egress proxy's over it (runtimes/stream-mux/),
// which works the same under runc and under gVisor (whose sockets never appear on the host), and which the sandbox
// cannot redirect. Containers carry labels (workcell.job, workcell.sandbox, workcell.owner); those whose owning server
// process is gone are removed at start-up (reapOrphans).
import { hostname } from 'node:os';
import { chmod, mkdir, readdir, readFile, realpath, rm, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { PassThrough, type Duplex } from 'node:stream';
import Docker from 'dockerode';
import type { Logger } from 'pino';
import type { Config } from '../../config.ts';
import { WorkcellError, errorMessage } from '../../errors.ts';
import { newToken } from '../../util/ids.ts';
import { SandboxCgroup } from '../cgroups.ts';
import { hasEgress, openEgressSocket, sandboxProxyPort, type EgressSocket } from '../network/sandbox-egress.ts';
import { findExecutable, runCommand } from '../probe.ts';
import { ensureRunDir, runDirToReap } from '../run-dir.ts';
import { SandboxLog } from '../sandbox-log.ts';
import { SandboxdClient } from '../sandboxd-client.ts';
import { hostSeccompProgram } from '../seccomp.ts';
import { seccompLauncher } from '../seccomp-launcher.ts';
import { openHostEnd, type HostEnd } from '../stream-mux/host-end.ts';
import type { LimitCounters, RuntimeProbe, Sandbox, SandboxLimits, SandboxRuntime, SandboxSpec, SandboxUsage } from '../types.ts';
import { jupyterBaseUrl } from '../../sandboxd/protocol.ts';
import { ensureSandboxImage, importedImageTag } from './docker-image.ts';

const readyTimeoutMs = 60_000;
const stopTimeoutS = 2;
const maxSocketPathBytes = 107;
const sandboxPath = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
/**
 * Under gVisor (ptrace platform) the host pids limit counts gVisor's own threads and a stub process per guest
 * process (DESIGN §9: under ~100 it does not even start, and a guest fork bomb that reaches it kills the whole
 * sandbox). Measured here: about 95 host pids for an idle sandbox, 6 to 7 more per guest process, and stubs of killed
 * processes linger (a 38-process fork bomb left 420 after its processes were stopped, and a second one then took the
 * sandbox down at a limit of 448). So the host limit gets this headroom, and the agent's processes are held to the
 * job's limit inside by RLIMIT_NPROC, which gVisor's kernel enforces per sandbox (under runc it would count every
 * container's uid 1000).
 */
const gvisorHostPids = (pids: number) => pids * 16 + 512;
const guestRunDir = '/run/workcell';
/** A run directory with no container is removed once unchanged this long (another server may be creating it). */
const orphanGraceMs = 10 * 60_000;

export interface DockerRuntimeOptions {
  config: Config;
  /** docker (runc) or gvisor (the same, with Docker's runsc runtime). */
  variant: 'docker' | 'gvisor';
  sandboxdBundlePath: () => Promise<string>;
  guestAgentBundlePath: () => Promise<string>;
  logger?: Logger;
  /** Where the engine is (default: DOCKER_HOST, else /var/run/docker.sock). */
  docker?: Docker;
}

/** The engine's socket: Docker's own DOCKER_HOST convention, else the default. */
export function dockerSocketPath(): string {
  const dockerHost = process.env.DOCKER_HOST;
  return dockerHost?.startsWith('unix://') ? dockerHost.slice('unix://'.length) : '/var/run/docker.sock';
}

/** This server's identity on containers it creates: host name, pid and start time (a reused pid is not it). */
let ownerLabel: Promise<string> | undefined;
function owner(): Promise<string> {
  return (ownerLabel ??= processStartTime(process.pid).then((start) => `${hostname()}/${process.pid}.${start ?? '0'}`));
}

async function processStartTime(pid: number): Promise<string | undefined> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
  return stat?.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
}

export class DockerRuntime implements SandboxRuntime {
  readonly name: 'docker' | 'gvisor';
  readonly #config: Config;
  readonly #docker: Docker;
  readonly #options: DockerRuntimeOptions;
  readonly #logger: Logger | undefined;
  /** The engine's last answer: resolve-time checks must be quick. */
  #engine: { checkedAt: number; problem: string | undefined } | undefined;

  constructor(options: DockerRuntimeOptions) {
    this.name = options.variant;
    this.#config = options.config;
    this.#options = options;
    this.#logger = options.logger;
    this.#docker = options.docker ?? new Docker({ socketPath: dockerSocketPath() });
  }

  get docker(): Docker {
    return this.#docker;
  }

  /** What is missing (the engine, gVisor's runtime), checked at most every few seconds; undefined when usable. */
  async unavailableReason(): Promise<string | undefined> {
    if (this.#engine !== undefined && Date.now() - this.#engine.checkedAt < 5000) return this.#engine.problem;
    if (findExecutable('dockerd') === undefined && findExecutable('docker') === undefined && process.env.DOCKER_HOST === undefined) return 'Docker is not installed (scripts/setup.sh installs docker.io)';
    return this.#checkEngine();
  }

  /** Checks the engine now (and the runsc runtime for gvisor); remembers the answer for unavailableReason. */
  async #checkEngine(): Promise<string | undefined> {
    let problem: string | undefined;
    try {
      const info = (await this.#docker.info()) as { Runtimes?: Record<string, unknown> };
      if (this.name === 'gvisor' && !(this.#config.gvisorRuntime in (info.Runtimes ?? {}))) {
        problem = `Docker has no runtime named ${this.#config.gvisorRuntime}: register gVisor with \`runsc install --runtime ${this.#config.gvisorRuntime} -- --network=none\` and reload dockerd (kill -HUP), as scripts/setup.sh does`;
      }
    } catch (error) {
      problem = `no Docker engine answers on ${dockerSocketPath()} (${errorMessage(error)}): start dockerd (scripts/setup.sh installs docker.io)`;
    }
    this.#engine = { checkedAt: Date.now(), problem };
    return problem;
  }

  async probe(): Promise<RuntimeProbe> {
    const problem = await this.#checkEngine();
    if (problem !== undefined) return { available: false, detail: problem };
    try {
      const version = await this.#docker.version();
      const image = this.#config.dockerImage ?? importedImageTag();
      const imported = await this.#docker.getImage(image).inspect().then(() => 'present', () => (this.#config.dockerImage === undefined ? 'imported from the rootfs on first use' : 'MISSING'));
      const runtime = this.name === 'gvisor' ? `, runtime ${this.#config.gvisorRuntime} (gVisor)` : '';
      return { available: true, detail: `Docker engine ${version.Version} (API ${version.ApiVersion})${runtime}, image ${image} ${imported}` };
    } catch (error) {
      return { available: false, detail: errorMessage(error) };
    }
  }

  /** Removes this runtime's containers (docker or gvisor) whose server process (on this host) is gone. */
  async reapOrphans(): Promise<{ dirs: string[]; processes: number[] }> {
    const report = { dirs: [] as string[], processes: [] as number[] };
    if ((await this.#checkEngine()) !== undefined) return report;
    const containers = await this.#docker.listContainers({ all: true, filters: { label: ['workcell.sandbox', `workcell.runtime=${this.name}`] } }).catch(() => []);
    const host = hostname();
    for (const container of containers) {
      const label = container.Labels['workcell.owner'] ?? '';
      const match = /^(.*)\/(\d+)\.(\d+)$/.exec(label);
      if (match === null || match[1] !== host) continue; // another host's server: not ours to judge
      if ((await processStartTime(Number(match[2]))) === match[3]) continue; // its server is alive
      await this.#docker.getContainer(container.Id).remove({ force: true, v: true }).then(
        () => report.dirs.push(`container ${container.Names[0] ?? container.Id}`),
        () => undefined,
      );
    }
    // Run directories (and egress socket directories) of this runtime's sandboxes whose container is gone.
    const live = new Set((await this.#docker.listContainers({ all: true, filters: { label: ['workcell.sandbox'] } }).catch(() => [])).map((container) => container.Labels['workcell.sandbox']));
    const pattern = new RegExp(`^${this.name}-(sb-[a-z0-9]{12})(-net)?$`);
    const entries = (await runDirToReap(this.#config.runDir, this.#logger)) ? await readdir(this.#config.runDir).catch(() => [] as string[]) : [];
    for (const entry of entries) {
      const sandboxId = pattern.exec(entry)?.[1];
      if (sandboxId === undefined || live.has(sandboxId)) continue;
      const info = await stat(join(this.#config.runDir, entry)).catch(() => undefined);
      if (info === undefined || Date.now() - info.mtimeMs < orphanGraceMs) continue; // perhaps being created
      await rm(join(this.#config.runDir, entry), { recursive: true, force: true });
      report.dirs.push(join(this.#config.runDir, entry));
    }
    if (report.dirs.length > 0) this.#logger?.info(report, 'removed the containers of sandboxes whose server is gone');
    return report;
  }

  async create(spec: SandboxSpec, signal?: AbortSignal): Promise<Sandbox> {
    signal?.throwIfAborted();
    const problem = await this.#checkEngine();
    if (problem !== undefined) throw new WorkcellError('runtime_unavailable', problem);
    if (spec.limits === undefined && !this.#config.unsafeNoLimits) throw new WorkcellError('runtime_unavailable', 'sandboxes run with limits');
    const sandboxId = `sb-${newToken().replace(/[-_]/g, '').slice(0, 12).toLowerCase()}`;
    const log = this.#logger?.child({ jobId: spec.jobId, sandboxId });
    let bundle: string;
    let agentBundle: string;
    let image: string;
    try {
      [bundle, agentBundle, image] = await Promise.all([
        this.#options.sandboxdBundlePath(),
        this.#options.guestAgentBundlePath(),
        ensureSandboxImage(this.#docker, this.#config, (message) => log?.info(message)),
      ]);
    } catch (error) {
      if (error instanceof WorkcellError) throw error;
      throw new WorkcellError('runtime_unavailable', `the ${this.name} runtime cannot start sandboxes: ${errorMessage(error)}`, { cause: error });
    }
    signal?.throwIfAborted();
    const workspace = await realpath(spec.workspaceDir).catch(() => resolve(spec.workspaceDir));
    if (!(await stat(workspace).catch(() => undefined))?.isDirectory()) throw new WorkcellError('sandbox_failed', `the workspace ${workspace} is not a directory`);
    // The host-only directory for the socket that reaches sandboxd, and the egress proxy's socket.
    // Named after the runtime: bwrap's reaper removes `sb-*` directories that no bwrap process of this host labels.
    const runDir = resolve(this.#config.runDir, `${this.name}-${sandboxId}`);
    if (Buffer.byteLength(join(runDir, 'sandboxd.sock')) > maxSocketPathBytes) {
      throw new WorkcellError('runtime_unavailable', `WORKCELL_RUN_DIR is too long for a unix socket path: choose a shorter directory, e.g. /run/workcell`);
    }
    await ensureRunDir(this.#config.runDir);
    await mkdir(runDir, { mode: 0o700 });
    await mkdir(spec.logDir, { recursive: true });
    let egress: EgressSocket | undefined;
    let container: Docker.Container | undefined;
    try {
      if (hasEgress(spec.network)) egress = await openEgressSocket({ dir: `${runDir}-net`, owner: undefined, policy: spec.network, logger: log });
      // The container's user (uid 1000, no user namespace) owns the workspace, as bwrap's sandbox user does.
      await chownTree(workspace, 1000, 1000);
      container = await this.#createContainer({ spec, sandboxId, image, bundle, agentBundle, workspace, egress });
      return await this.#start({ spec, sandboxId, container, runDir, egress, signal, log });
    } catch (error) {
      await container?.remove({ force: true, v: true }).catch(() => undefined);
      await egress?.close().catch(() => undefined);
      await rm(runDir, { recursive: true, force: true });
      if (error instanceof WorkcellError) throw error;
      if (signal?.aborted) throw signal.reason instanceof Error ? signal.reason : new Error('aborted');
      throw new WorkcellError('sandbox_failed', `the ${this.name} sandbox did not start: ${errorMessage(error)}`, { cause: error });
    }
  }

  #pidsLimit(limits: SandboxLimits): number {
    return this.name === 'gvisor' ? gvisorHostPids(limits.pids) : limits.pids;
  }

  async #createContainer(options: { spec: SandboxSpec; sandboxId: string; image: string; bundle: string; agentBundle: string; workspace: string; egress: EgressSocket | undefined }): Promise<Docker.Container> {
    const { spec, sandboxId, egress } = options;
    const limits = spec.limits;
    const diskMb = limits?.diskMb ?? 1024;
    const proxySocket = `${guestRunDir}/proxy.sock`;
    const sandboxdSocket = `${guestRunDir}/sandboxd.sock`;
    const sandboxd = [
      '/usr/local/bin/node', '/run/workcell-bin/sandboxd.mjs', '--socket', sandboxdSocket, '--workspace', '/workspace', '--label', sandboxId,
      ...(egress === undefined ? [] : ['--proxy-socket', proxySocket, '--proxy-port', String(sandboxProxyPort)]),
      '--jupyter-base-url', jupyterBaseUrl(spec.jobId),
      // openbox never finishes starting under gVisor's 2022 runsc: the desktop runs without a window manager there.
      ...(this.name === 'gvisor' ? ['--no-window-manager'] : []),
    ];
    // The launcher becomes tini (PID 1, the image's; Docker's --init would start before the filter and could be
    // ptraced by the agent's processes, which run as the same uid), which runs the guest agent.
    const program = hostSeccompProgram();
    return this.#docker.createContainer({
      name: `workcell-${sandboxId}`,
      Image: options.image,
      Entrypoint: [...(program === undefined ? [] : seccompLauncher(program)), '/usr/bin/tini', '--', '/usr/local/bin/node', '/run/workcell-bin/guest-agent.mjs'],
      Cmd: [
        '--carrier', 'stdio', '--sandboxd-socket', sandboxdSocket,
        ...(egress === undefined ? [] : ['--proxy-socket', proxySocket]),
        // Under gVisor the host cannot see refused forks: the agent watches how close the sandbox is to its limit.
        ...(this.name === 'gvisor' && limits !== undefined ? ['--watch-pids', String(limits.pids)] : []),
        '--', ...sandboxd,
      ],
      User: '1000:1000',
      WorkingDir: '/workspace',
      Hostname: 'workcell',
      Env: ['HOME=/home/agent', 'USER=agent', 'LOGNAME=agent', `PATH=${sandboxPath}`, 'LANG=C.UTF-8'],
      Labels: { 'workcell.job': spec.jobId, 'workcell.sandbox': sandboxId, 'workcell.runtime': this.name, 'workcell.owner': await owner() },
      AttachStdin: true,
      AttachStdout: true,
      AttachStderr: true,
      OpenStdin: true,
      StdinOnce: true,
      Tty: false,
      NetworkDisabled: true,
      StopTimeout: stopTimeoutS,
      HostConfig: {
        ...(this.name === 'gvisor' ? { Runtime: this.#config.gvisorRuntime } : {}),
        Init: false,
        NetworkMode: 'none',
        ...(limits === undefined
          ? {}
          : {
              Memory: limits.memoryMb * 1024 * 1024,
              MemorySwap: limits.memoryMb * 1024 * 1024,
              NanoCpus: Math.round(limits.cpus * 1e9),
              PidsLimit: this.#pidsLimit(limits),
              ...(this.name === 'gvisor' ? { Ulimits: [{ Name: 'nproc', Soft: limits.pids, Hard: limits.pids }] } : {}),
            }),
        ReadonlyRootfs: true,
        CapDrop: ['ALL'],
        // No seccomp= option: Docker's default profile stays, and the launcher adds workcell's filter to it.
        SecurityOpt: ['no-new-privileges'],
        Tmpfs: {
          '/tmp': `rw,nosuid,nodev,size=${diskMb}m`,
          '/home/agent': `rw,nosuid,nodev,size=${diskMb}m,uid=1000,gid=1000,mode=0755`,
          '/run': 'rw,nosuid,nodev,noexec,size=64m',
          [guestRunDir]: 'rw,nosuid,nodev,noexec,size=16m,uid=1000,gid=1000,mode=0700',
        },
        Binds: [`${options.workspace}:/workspace:rw`, `${options.bundle}:/run/workcell-bin/sandboxd.mjs:ro`, `${options.agentBundle}:/run/workcell-bin/guest-agent.mjs:ro`],
        // The worker reads the container's output through attach and writes it to the job's sandbox.log; Docker
        // keeps no copy (an unbounded json log on the host's disk).
        LogConfig: { Type: 'none', Config: {} },
        AutoRemove: false,
      },
    });
  }

  async #start(options: { spec: SandboxSpec; sandboxId: string; container: Docker.Container; runDir: string; egress: EgressSocket | undefined; signal: AbortSignal | undefined; log: Logger | undefined }): Promise<Sandbox> {
    const { spec, sandboxId, container, runDir, egress, log } = options;
    const started = performance.now();
    // A hijacked HTTP connection: a socket, both ways.
    const stream = (await container.attach({ stream: true, stdin: true, stdout: true, stderr: true, hijack: true })) as unknown as Duplex;
    const stdout = new PassThrough();
    const logStream = new SandboxLog(spec.logDir, spec.log);
    this.#docker.modem.demuxStream(stream, stdout, logStream);
    stream.on('error', () => undefined);
    // demuxStream does not end its outputs: when the container's output ends, so does the carrier (the mux then
    // fails every open request instead of leaving it waiting).
    stream.once('close', () => stdout.end());
    stream.once('end', () => stdout.end());
    // next-exit: a container that is only created counts as not running, and a plain wait would return at once.
    const exited = container.wait({ condition: 'next-exit' }).then(
      (result: { StatusCode?: number }) => ({ code: result.StatusCode ?? null, signal: null }),
      () => ({ code: null, signal: null }),
    );
    let containerGone = false;
    void exited.then(() => {
      containerGone = true;
      stdout.end();
    });
    await container.start();
    const token = newToken();
    const timeout = AbortSignal.timeout(readyTimeoutMs);
    const readySignal = options.signal === undefined ? timeout : AbortSignal.any([timeout, options.signal]);
    let end: HostEnd;
    try {
      end = await Promise.race([
        openHostEnd({ input: stdout, output: stream, token, socketPath: join(runDir, 'sandboxd.sock'), egressSocketPath: egress?.socketPath, signal: readySignal }),
        exited.then((status) => {
          throw new Error(`the container exited before sandboxd was ready (exit ${status.code})`);
        }),
      ]);
    } catch (error) {
      if (timeout.aborted) throw new Error(`sandboxd was not ready within ${readyTimeoutMs / 1000} s`, { cause: error });
      throw error;
    }
    log?.debug({ readyMs: Math.round(performance.now() - started) }, 'sandbox ready');
    const info = await container.inspect();
    const cgroup = await containerCgroup(info.State.Pid).catch(() => undefined);
    const client = new SandboxdClient({ socketPath: end.socketPath }, token);
    let lastUsage: SandboxUsage = {};
    let oomKilled = false;
    let removed = false;
    const readUsage = async () => {
      if (cgroup !== undefined && !removed) lastUsage = await cgroup.usage().catch(() => lastUsage);
      return lastUsage;
    };

    let destroying: Promise<void> | undefined;
    const destroy = () =>
      (destroying ??= (async () => {
        await readUsage();
        removed = true;
        await container.stop({ t: stopTimeoutS }).catch(() => undefined);
        await exited;
        oomKilled = (await container.inspect().catch(() => undefined))?.State.OOMKilled ?? oomKilled;
        client.close();
        await end.close();
        stream.destroy();
        logStream.end();
        await container.remove({ force: true, v: true }).catch((error: unknown) => log?.error({ err: error }, 'removing the container failed'));
        await egress?.close().catch((error: unknown) => log?.error({ err: error }, 'closing the egress proxy failed'));
        await rm(runDir, { recursive: true, force: true });
        log?.debug('sandbox destroyed');
      })());

    const limits = spec.limits;
    const limitCounters = async (): Promise<LimitCounters> => {
      const [host, guest] = await Promise.all([cgroup?.counters().catch(() => undefined), end.counters().catch(() => undefined)]);
      if (guest === undefined && destroying === undefined && !containerGone) {
        // The guest does not answer: if the container is on its way out, wait for it, to say why below.
        await Promise.race([exited, new Promise((resolveWait) => setTimeout(resolveWait, 5000))]);
      }
      if (containerGone && destroying === undefined) {
        // The container is gone by itself (under gVisor a memory bomb takes the whole sandbox): say why.
        oomKilled = (await container.inspect().catch(() => undefined))?.State.OOMKilled ?? oomKilled;
      }
      return {
        oomKills: Math.max(host?.oomKills ?? 0, oomKilled ? 1 : 0),
        pidsRefused: Math.max(host?.pidsRefused ?? 0, guest?.pidsRefused ?? 0),
        // Under gVisor the host cgroup counts gVisor's own threads; the guest's count is the agent's.
        processes: this.name === 'gvisor' ? (guest?.processes ?? host?.processes) : (host?.processes ?? guest?.processes),
        workspaceFreeBytes: guest?.workspaceFreeBytes,
        tmpFreeBytes: guest?.tmpFreeBytes,
      };
    };
    const kernel = this.name === 'gvisor' ? `gVisor (runsc runtime ${this.#config.gvisorRuntime}): the agent's system calls go to gVisor's user-space kernel, not the host's` : 'runc container (host kernel shared)';
    const limitsText =
      limits === undefined
        ? 'NO resource limits (WORKCELL_UNSAFE_NO_LIMITS)'
        : this.name === 'gvisor'
          ? `limits: ${limits.cpus} CPU, ${limits.memoryMb} MB memory (the whole sandbox is stopped when it is reached), ${limits.pids} processes (RLIMIT_NPROC in gVisor; host pids limit ${gvisorHostPids(limits.pids)} for gVisor's own threads), /tmp ${limits.diskMb} MB`
          : `limits: ${limits.cpus} CPU, ${limits.memoryMb} MB memory, ${limits.pids} processes (container cgroup), /tmp ${limits.diskMb} MB`;
    return {
      id: sandboxId,
      jobId: spec.jobId,
      runtime: this.name,
      isolation:
        `${this.name}: ${kernel}; read-only root, uid 1000, all capabilities dropped, no new privileges, ${hostSeccompProgram() === undefined ? "Docker's default seccomp profile" : "Docker's default seccomp profile with workcell's seccomp filter on top"}, ` +
        `${egress === undefined ? 'no network' : `network only to ${spec.network?.allow.length ?? 0} allow-listed destination${spec.network?.allow.length === 1 ? '' : 's'} through the host's egress proxy`}; ${limitsText}`,
      client,
      exited,
      destroy,
      ...(limits === undefined ? {} : { limits, limitCounters, usage: readUsage, stopProcesses: () => end.stopProcesses() }),
    };
  }
}

/** The cgroup a container's processes are in (v1 or v2, cgroupfs or systemd driver), found from its first process. */
export async function containerCgroup(pid: number): Promise<SandboxCgroup | undefined> {
  if (!(pid > 0)) return undefined;
  const [own, mountinfo] = await Promise.all([readFile(`/proc/${pid}/cgroup`, 'utf8'), readFile('/proc/self/mountinfo', 'utf8')]);
  const paths = new Map<string, string>();
  for (const line of own.split('\n')) {
    const match = /^\d+:([^:]*):(.*)$/.exec(line);
    if (match === null) continue;
    for (const controller of (match[1] ?? '').split(',')) paths.set(controller, match[2] ?? '/');
  }
  const v1: Partial<Record<'memory' | 'cpu' | 'pids' | 'cpuacct', string>> = {};
  let v2Mount: string | undefined;
  for (const line of mountinfo.split('\n')) {
    const [left, right] = line.split(' - ');
    if (left === undefined || right === undefined) continue;
    const mountPoint = left.split(' ')[4] ?? '';
    const [fsType, , superOptions = ''] = right.split(' ');
    if (fsType === 'cgroup') for (const option of superOptions.split(',')) if (option === 'memory' || option === 'cpu' || option === 'pids' || option === 'cpuacct') v1[option] ??= mountPoint;
    if (fsType === 'cgroup2') v2Mount ??= mountPoint;
  }
  const memoryPath = paths.get('memory');
  if (v1.memory !== undefined && memoryPath !== undefined) {
    const name = basename(memoryPath);
    const parents: Partial<Record<'memory' | 'cpu' | 'pids' | 'cpuacct', string>> = {};
    for (const controller of ['memory', 'cpu', 'pids', 'cpuacct'] as const) {
      const mount = v1[controller];
      const path = paths.get(controller);
      if (mount !== undefined && path !== undefined && basename(path) === name) parents[controller] = join(mount, dirname(path));
    }
    return new SandboxCgroup({ version: 1, parents }, name);
  }
  const unified = paths.get('');
  if (v2Mount !== undefined && unified !== undefined) return new SandboxCgroup({ version: 2, mount: v2Mount, parent: join(v2Mount, dirname(unified)) }, basename(unified));
  return undefined;
}

/** Gives the container's user the workspace (chown -R never follows symlinks planted there). */
async function chownTree(path: string, uid: number, gid: number): Promise<void> {
  if (process.getuid?.() !== 0) return;
  const chown = findExecutable('chown');
  if (chown === undefined) throw new WorkcellError('runtime_unavailable', 'chown not found on PATH');
  const result = await runCommand(chown, ['-R', '--no-dereference', `${uid}:${gid}`, '--', path], { timeoutMs: 120_000 });
  if (!result.ok) throw new WorkcellError('sandbox_failed', `cannot give the workspace to the container's user: ${result.stderr.trim()}`);
  await chmod(path, 0o755).catch(() => undefined);
}
