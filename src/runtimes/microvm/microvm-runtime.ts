// The microvm runtime: each sandbox is a virtual machine with its own kernel (Debian's cloud kernel, kernel.ts), so
// the agent's code never reaches the host's kernel at all. The VMM is Firecracker where its binary and working KVM are
// present (firecracker.ts), else QEMU's `-M microvm` with KVM when usable, else with TCG (emulation: works anywhere,
// about 14x slower). The guest: the initramfs (initramfs.ts, guest-init.sh) mounts the shared rootfs disk read-only
// under a tmpfs overlay and this sandbox's workspace disk (disks.ts), then runs the guest agent, which starts
// sandboxd as uid 1000 in a guest cgroup with the job's memory, pids and CPU limits. The VM's own size bounds it all:
// vCPUs = the CPU limit rounded up, RAM = the memory limit plus room for the guest kernel. It has no network device:
// the host reaches sandboxd, and the guest reaches the egress proxy, through one channel (virtio-serial under QEMU,
// vsock under Firecracker) multiplexed by runtimes/stream-mux/. The VMM runs as the unprivileged sandbox user (QEMU
// also under its own seccomp sandbox; Firecracker in its jailer when installed). When the VM is gone, the workspace
// disk's content is copied back into the job's workspace directory for the zip (disks.ts: without mounting it).
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chown, mkdir, open, readdir, readFile, realpath, rm, stat } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { basename, dirname, join, resolve } from 'node:path';
import type { Logger } from 'pino';
import type { Config } from '../../config.ts';
import { WorkcellError, errorMessage } from '../../errors.ts';
import { newToken } from '../../util/ids.ts';
import { ensureRootfs } from '../image.ts';
import { hasEgress, openEgressSocket, type EgressSocket } from '../network/sandbox-egress.ts';
import { findBwrapHost, findExecutable, runCommand, type BwrapHost } from '../probe.ts';
import { ensureRunDir, runDirToReap } from '../run-dir.ts';
import { SandboxLog } from '../sandbox-log.ts';
import { SandboxdClient } from '../sandboxd-client.ts';
import { openHostEnd, type GuestCounters, type HostEnd } from '../stream-mux/host-end.ts';
import type { LimitCounters, RuntimeProbe, Sandbox, SandboxRuntime, SandboxSpec, SandboxUsage } from '../types.ts';
import { ConsoleTail } from './console-tail.ts';
import { copyWorkspaceBack, createWorkspaceImage, ensureRootfsImage } from './disks.ts';
import { configureAndStart, connectGuestVsock, guestVsockPort, launchFirecracker } from './firecracker.ts';
import { ensureInitramfs, findStaticBusybox } from './initramfs.ts';
import { guestKernelProblem } from './kernel-modules.ts';
import { ensureVmlinux, findGuestKernel, kernelFixHint } from './kernel.ts';

/** Under TCG the guest is about 14x slower: sandboxd takes seconds to start. */
const readyTimeoutMs = { kvm: 60_000, tcg: 180_000 };
/** ... and Jupyter (run_code's server) close to a minute, more on a busy host: sandboxd's default 60 s is too short. */
const tcgJupyterStartTimeoutMs = 300_000;
/** RAM the VM gets beyond the sandbox's memory limit: the guest kernel, page cache, the overlay and the guest agent. */
const guestOverheadMb = 256;
const maxSocketPathBytes = 107;
const syncTimeoutMs = 15_000;
/** A run directory whose VM is gone is removed once unchanged this long (another server may be creating it). */
const orphanGraceMs = 10 * 60_000;

/** Does something accept connections on this unix socket? */
function listening(path: string): Promise<boolean> {
  return new Promise((resolveCheck) => {
    const socket = connect({ path });
    socket.once('connect', () => {
      socket.destroy();
      resolveCheck(true);
    });
    socket.once('error', () => resolveCheck(false));
  });
}

export type Vmm = { kind: 'firecracker'; firecracker: string; jailer: string | undefined } | { kind: 'qemu'; qemu: string; accel: 'kvm' | 'tcg' };

export interface MicrovmRuntimeOptions {
  config: Config;
  sandboxdBundlePath: () => Promise<string>;
  guestAgentBundlePath: () => Promise<string>;
  logger?: Logger;
}

/** Is KVM usable for guests? /dev/kvm must open, and the CPU must expose VT-x/AMD-V (a PVM host's /dev/kvm does not run Debian's kernels). */
export async function kvmProblem(): Promise<string | undefined> {
  try {
    const handle = await open('/dev/kvm', 'r+');
    await handle.close();
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    return code === 'ENOENT' ? '/dev/kvm does not exist (no hardware virtualization exposed to this host)' : `/dev/kvm cannot be opened (${code ?? errorMessage(error)}): run as root or join the kvm group`;
  }
  const cpuinfo = await readFile('/proc/cpuinfo', 'utf8').catch(() => '');
  if (!/^flags\s*:.*\b(vmx|svm)\b/m.test(cpuinfo)) return '/dev/kvm is there but the CPU exposes no VT-x/AMD-V (a paravirtualized KVM, e.g. kvm-pvm): guests with standard kernels do not boot on it';
  return undefined;
}

let kvmCheck: { at: number; problem: Promise<string | undefined> } | undefined;
function cachedKvmProblem(): Promise<string | undefined> {
  if (kvmCheck === undefined || Date.now() - kvmCheck.at > 60_000) kvmCheck = { at: Date.now(), problem: kvmProblem() };
  return kvmCheck.problem;
}

/** Which VMM and acceleration this host gives microVMs, per the configuration; or what is missing. */
export async function chooseVmm(config: Pick<Config, 'microvmVmm' | 'microvmAccel'>): Promise<Vmm | { problem: string }> {
  const kvm = await cachedKvmProblem();
  const firecracker = findExecutable('firecracker');
  const qemu = findExecutable('qemu-system-x86_64');
  if (config.microvmVmm === 'firecracker' || (config.microvmVmm === 'auto' && firecracker !== undefined && kvm === undefined)) {
    if (firecracker === undefined) return { problem: 'firecracker is not on PATH (it is not packaged by Debian: install a release binary, or set WORKCELL_MICROVM_VMM=qemu)' };
    if (kvm !== undefined) return { problem: `Firecracker needs KVM: ${kvm}` };
    return { kind: 'firecracker', firecracker, jailer: findExecutable('jailer') };
  }
  if (qemu === undefined) return { problem: 'qemu-system-x86_64 is not on PATH: apt-get install qemu-system-x86 (scripts/setup.sh does)' };
  if (config.microvmAccel === 'kvm' && kvm !== undefined) return { problem: `WORKCELL_MICROVM_ACCEL=kvm but ${kvm}` };
  const accel = config.microvmAccel === 'tcg' || kvm !== undefined ? 'tcg' : 'kvm';
  return { kind: 'qemu', qemu, accel };
}

export function describeVmm(vmm: Vmm): string {
  return vmm.kind === 'firecracker' ? `Firecracker (KVM${vmm.jailer === undefined ? '' : ', jailer'})` : `QEMU microvm (${vmm.accel === 'kvm' ? 'KVM' : 'TCG emulation, no KVM: slow'})`;
}

export class MicrovmRuntime implements SandboxRuntime {
  readonly name = 'microvm';
  readonly #config: Config;
  readonly #options: MicrovmRuntimeOptions;
  readonly #logger: Logger | undefined;
  #vmm: { at: number; value: Vmm | { problem: string } } | undefined;

  constructor(options: MicrovmRuntimeOptions) {
    this.#config = options.config;
    this.#options = options;
    this.#logger = options.logger;
  }

  /** What is missing, without starting anything (the VMM choice is cached for a minute). */
  async unavailableReason(): Promise<string | undefined> {
    if (process.platform !== 'linux' || process.arch !== 'x64') return 'microVMs run on x86_64 Linux hosts only';
    try {
      const kernel = findGuestKernel(this.#config);
      const kernelProblem = guestKernelProblem(kernel.modulesDir, kernel.version);
      if (kernelProblem !== undefined) return kernelProblem;
      findStaticBusybox();
      ensureRootfs(this.#config);
    } catch (error) {
      return errorMessage(error);
    }
    for (const tool of ['mke2fs', 'debugfs', 'bwrap']) if (findExecutable(tool) === undefined) return `${tool} not found (apt-get install e2fsprogs bubblewrap)`;
    const vmm = await this.#currentVmm();
    return 'problem' in vmm ? vmm.problem : undefined;
  }

  /** `auto` takes microVMs only with KVM: under TCG a guest runs about 14x slower (ask for `microvm` to get one anyway). */
  async autoSkipReason(): Promise<string | undefined> {
    const vmm = await this.#currentVmm();
    if ('problem' in vmm) return vmm.problem;
    return vmm.kind === 'qemu' && vmm.accel === 'tcg' ? 'no usable KVM: microVMs would run under TCG emulation (about 14x slower), so auto skips them; ask for runtime "microvm" to use them anyway' : undefined;
  }

  #currentVmm(): Promise<Vmm | { problem: string }> {
    return this.#vmm !== undefined && Date.now() - this.#vmm.at < 60_000 ? Promise.resolve(this.#vmm.value) : this.#chooseVmm();
  }

  async #chooseVmm(): Promise<Vmm | { problem: string }> {
    const value = await chooseVmm(this.#config);
    this.#vmm = { at: Date.now(), value };
    return value;
  }

  async probe(): Promise<RuntimeProbe> {
    const vmm = await this.#chooseVmm();
    const problem = await this.unavailableReason();
    if (problem !== undefined) return { available: false, detail: problem };
    if ('problem' in vmm) return { available: false, detail: vmm.problem };
    const kernel = findGuestKernel(this.#config);
    const firecracker = vmm.kind === 'firecracker' ? '' : `; Firecracker ${findExecutable('firecracker') === undefined ? 'not installed' : 'present but KVM is not usable'}`;
    return { available: true, detail: `${describeVmm(vmm)}, guest kernel ${kernel.version}${firecracker}${vmm.kind === 'qemu' && vmm.accel === 'tcg' ? '; auto skips it (TCG)' : ''}` };
  }

  /**
   * Removes run directories of microVMs that are gone (nothing listens on their channel socket any more) and have
   * not changed for a while. A VM outlives no server: when the server's end of the channel closes, the guest agent
   * stops sandboxd, the guest's init exits and the VMM with it (panic=-1, -no-reboot).
   */
  async reapOrphans(): Promise<{ dirs: string[]; processes: number[] }> {
    const report = { dirs: [] as string[], processes: [] as number[] };
    const entries = (await runDirToReap(this.#config.runDir, this.#logger)) ? await readdir(this.#config.runDir).catch(() => [] as string[]) : [];
    for (const entry of entries) {
      const match = /^microvm-(sb-[a-z0-9]{12})(-net)?$/.exec(entry);
      if (match === null) continue;
      const dir = join(this.#config.runDir, entry);
      const info = await stat(dir).catch(() => undefined);
      if (info === undefined || Date.now() - info.mtimeMs < orphanGraceMs) continue;
      if (await listening(join(this.#config.runDir, `microvm-${match[1]}`, 'mux.sock'))) continue;
      await rm(dir, { recursive: true, force: true });
      report.dirs.push(dir);
    }
    if (report.dirs.length > 0) this.#logger?.info(report, 'removed the run directories of microVMs that are gone');
    return report;
  }

  async create(spec: SandboxSpec, signal?: AbortSignal): Promise<Sandbox> {
    signal?.throwIfAborted();
    const vmm = await this.#chooseVmm();
    if ('problem' in vmm) throw new WorkcellError('runtime_unavailable', vmm.problem);
    const missing = await this.unavailableReason();
    if (missing !== undefined) throw new WorkcellError('runtime_unavailable', missing);
    const bwrap = await findBwrapHost(this.#config);
    if ('missing' in bwrap) throw new WorkcellError('runtime_unavailable', `the microVM workspace is copied back in a bwrap jail: ${bwrap.missing}`);
    const limits = spec.limits ?? { cpus: 1, memoryMb: 1024, pids: 4096, diskMb: 4096 };
    const sandboxId = `sb-${newToken().replace(/[-_]/g, '').slice(0, 12).toLowerCase()}`;
    const log = this.#logger?.child({ jobId: spec.jobId, sandboxId });
    const cacheDir = join(this.#config.imageDir, 'microvm');
    let vmlinux: string;
    let initramfs: string;
    let rootfsImage: string;
    try {
      const kernel = findGuestKernel(this.#config);
      const [sandboxd, agent] = await Promise.all([this.#options.sandboxdBundlePath(), this.#options.guestAgentBundlePath()]);
      [vmlinux, initramfs, rootfsImage] = await Promise.all([
        ensureVmlinux(kernel, cacheDir),
        ensureInitramfs({ kernel, sandboxdBundle: sandboxd, guestAgentBundle: agent, cacheDir }),
        ensureRootfsImage(ensureRootfs(this.#config), cacheDir),
      ]);
    } catch (error) {
      if (error instanceof WorkcellError) throw error;
      throw new WorkcellError('runtime_unavailable', `the microVM's kernel, initramfs or disks could not be prepared: ${errorMessage(error)} (${kernelFixHint})`, { cause: error });
    }
    signal?.throwIfAborted();
    const workspace = await realpath(spec.workspaceDir).catch(() => resolve(spec.workspaceDir));
    if (!(await stat(workspace).catch(() => undefined))?.isDirectory()) throw new WorkcellError('sandbox_failed', `the workspace ${workspace} is not a directory`);
    // Named after the runtime: bwrap's reaper removes `sb-*` directories that no bwrap process of this host labels.
    const runDir = resolve(this.#config.runDir, `${this.name}-${sandboxId}`);
    if (Buffer.byteLength(join(runDir, 'sandboxd.sock')) > maxSocketPathBytes) throw new WorkcellError('runtime_unavailable', 'WORKCELL_RUN_DIR is too long for a unix socket path: choose a shorter directory, e.g. /run/workcell');
    // The workspace disk beside the workspace (on the data disk, not on a tmpfs like /run).
    const workspaceImage = join(dirname(workspace), `.${basename(workspace)}-${sandboxId}.ext4`);
    const user = bwrap.sandboxUser;
    await ensureRunDir(this.#config.runDir);
    await mkdir(runDir, { mode: 0o700 });
    if (user !== undefined) await chown(runDir, user.uid, user.gid);
    await mkdir(spec.logDir, { recursive: true });
    let egress: EgressSocket | undefined;
    let vm: { process: ChildProcess; carrier: Socket } | undefined;
    let logStream: SandboxLog | undefined;
    // What the guest printed while it starts: a VM that does not come up says why in its error.
    const consoleTail = new ConsoleTail();
    try {
      // The agent (uid 1000 in the guest) must own what it finds in its workspace.
      if (process.getuid?.() === 0) await runCommand('chown', ['-R', '--no-dereference', '1000:1000', '--', workspace], { timeoutMs: 120_000 });
      await createWorkspaceImage({ workspace, image: workspaceImage, sizeMb: limits.diskMb, owner: user });
      if (hasEgress(spec.network)) egress = await openEgressSocket({ dir: `${runDir}-net`, owner: undefined, policy: spec.network, logger: log });
      const bootArgs = [
        'quiet', 'panic=-1', 'rdinit=/init',
        `workcell.memory=${limits.memoryMb}`, `workcell.pids=${limits.pids}`, `workcell.cpus=${limits.cpus}`, `workcell.tmp=${limits.diskMb}`,
        `workcell.label=${sandboxId}`, `workcell.job=${encodeURIComponent(spec.jobId)}`, `workcell.proxy=${egress === undefined ? 0 : 1}`,
      ];
      const vcpus = Math.max(1, Math.ceil(limits.cpus));
      const memoryMb = limits.memoryMb + guestOverheadMb;
      const started = performance.now();
      logStream = new SandboxLog(spec.logDir, spec.log);
      const emulated = vmm.kind === 'qemu' && vmm.accel === 'tcg';
      const timeoutMs = emulated ? readyTimeoutMs.tcg : readyTimeoutMs.kvm;
      if (emulated) bootArgs.push(`workcell.jupyter_start_ms=${tcgJupyterStartTimeoutMs}`);
      const readySignal = signal === undefined ? AbortSignal.timeout(timeoutMs) : AbortSignal.any([AbortSignal.timeout(timeoutMs), signal]);
      vm =
        vmm.kind === 'qemu'
          ? await startQemu({ vmm, runDir, vmlinux, initramfs, rootfsImage, workspaceImage, bootArgs: [...bootArgs, 'console=ttyS0', 'workcell.carrier=name=workcell.mux'], vcpus, memoryMb, user, logStream, consoleTail, signal: readySignal })
          : await startFirecracker({ vmm, runDir, sandboxId, vmlinux, initramfs, rootfsImage, workspaceImage, bootArgs: [...bootArgs, 'console=ttyS0', 'reboot=k', 'pci=off', `workcell.carrier=vsock:${guestVsockPort}`], vcpus, memoryMb, user, logStream, consoleTail, signal: readySignal });
      const exited = new Promise<{ code: number | null; signal: string | null }>((resolveExit) => {
        if (vm!.process.exitCode !== null || vm!.process.signalCode !== null) resolveExit({ code: vm!.process.exitCode, signal: vm!.process.signalCode });
        vm!.process.once('exit', (code, exitSignal) => resolveExit({ code, signal: exitSignal }));
      });
      void exited.then(() => vm?.carrier.end());
      const token = newToken();
      let end: HostEnd;
      try {
        end = await Promise.race([
          openHostEnd({ input: vm.carrier, output: vm.carrier, token, socketPath: join(runDir, 'sandboxd.sock'), egressSocketPath: egress?.socketPath, signal: readySignal }),
          exited.then((status) => {
            throw new Error(`the VM exited before sandboxd was ready (${status.signal ?? `exit ${status.code}`})`);
          }),
        ]);
      } catch (error) {
        if (readySignal.aborted && !(signal?.aborted ?? false)) throw new Error(`sandboxd in the VM was not ready within ${timeoutMs / 1000} s`, { cause: error });
        // A channel that breaks (ECONNRESET) is most often the VM going away: say so when it has.
        let timer: NodeJS.Timeout | undefined;
        const status = await Promise.race([exited, new Promise<undefined>((resolveWait) => (timer = setTimeout(() => resolveWait(undefined), 2000)))]);
        clearTimeout(timer);
        if (status !== undefined) throw new Error(`the VM exited before sandboxd was ready (${status.signal ?? `exit ${status.code}`})`, { cause: error });
        throw error;
      }
      const readyMs = Math.round(performance.now() - started);
      log?.debug({ readyMs }, 'microVM ready');
      return this.#sandbox({ spec, sandboxId, vmm, vm, end, token, exited, runDir, workspace, workspaceImage, egress, bwrap, logStream, limits, vcpus, memoryMb, log });
    } catch (error) {
      vm?.process.kill('SIGKILL');
      vm?.carrier.destroy();
      logStream?.end();
      await egress?.close().catch(() => undefined);
      await rm(workspaceImage, { force: true });
      await rm(runDir, { recursive: true, force: true });
      if (signal?.aborted) throw signal.reason instanceof Error ? signal.reason : new Error('aborted');
      if (error instanceof WorkcellError) throw error;
      // Read what the VMM wrote before it died: its last lines are often the reason.
      await consoleTail.settled(2000);
      log?.warn({ err: error, console: consoleTail.lines() }, 'the microVM did not start');
      throw new WorkcellError('sandbox_failed', `the microVM did not start: ${errorMessage(error)}; ${consoleTail.describe()}`, { cause: error });
    }
  }

  #sandbox(options: {
    spec: SandboxSpec;
    sandboxId: string;
    vmm: Vmm;
    vm: { process: ChildProcess; carrier: Socket };
    end: HostEnd;
    token: string;
    exited: Promise<{ code: number | null; signal: string | null }>;
    runDir: string;
    workspace: string;
    workspaceImage: string;
    egress: EgressSocket | undefined;
    bwrap: BwrapHost;
    logStream: NodeJS.WritableStream;
    limits: NonNullable<SandboxSpec['limits']>;
    vcpus: number;
    memoryMb: number;
    log: Logger | undefined;
  }): Sandbox {
    const { spec, vm, end, exited, limits, log } = options;
    const client = new SandboxdClient({ socketPath: end.socketPath }, options.token);
    let lastCounters: GuestCounters = {};
    const readCounters = async () => {
      lastCounters = await end.counters().catch(() => lastCounters);
      return lastCounters;
    };
    let destroying: Promise<void> | undefined;
    const destroy = () =>
      (destroying ??= (async () => {
        const stillRunning = vm.process.exitCode === null && vm.process.signalCode === null;
        if (stillRunning) {
          await readCounters();
          // What the agent wrote must reach the disk before the VM is stopped.
          await Promise.race([end.sync().catch(() => undefined), new Promise((resolveWait) => setTimeout(resolveWait, syncTimeoutMs))]);
          vm.process.kill('SIGTERM');
          const timer = setTimeout(() => vm.process.kill('SIGKILL'), 5000);
          await exited;
          clearTimeout(timer);
        }
        client.close();
        await end.close();
        vm.carrier.destroy();
        options.logStream.end();
        await options.egress?.close().catch((error: unknown) => log?.error({ err: error }, 'closing the egress proxy failed'));
        try {
          await copyWorkspaceBack({ image: options.workspaceImage, workspace: options.workspace, bwrap: options.bwrap });
        } catch (error) {
          // Keep the disk: the workspace is in it.
          log?.error({ err: error, image: options.workspaceImage }, 'copying the microVM workspace back failed; its disk is kept');
          throw error;
        } finally {
          await rm(options.runDir, { recursive: true, force: true });
        }
        await rm(options.workspaceImage, { force: true });
        log?.debug('microVM destroyed');
      })());
    const limitCounters = async (): Promise<LimitCounters> => {
      const counters = await readCounters();
      return {
        oomKills: counters.oomKills ?? 0,
        pidsRefused: counters.pidsRefused ?? 0,
        processes: counters.processes,
        workspaceFreeBytes: counters.workspaceFreeBytes,
        tmpFreeBytes: counters.tmpFreeBytes,
      };
    };
    const usage = async (): Promise<SandboxUsage> => {
      const counters = destroying === undefined ? await readCounters() : lastCounters;
      return { cpuSeconds: counters.cpuSeconds, peakMemoryBytes: counters.peakMemoryBytes };
    };
    const network = options.egress === undefined ? 'no network device' : `no network device; only ${spec.network?.allow.length ?? 0} allow-listed destination${spec.network?.allow.length === 1 ? '' : 's'} through the host's egress proxy`;
    return {
      id: options.sandboxId,
      jobId: spec.jobId,
      runtime: this.name,
      isolation:
        `microvm: ${describeVmm(options.vmm)}, its own guest kernel (the host kernel is not reachable from the sandbox), ${options.vcpus} vCPU, ${options.memoryMb} MB RAM; ` +
        `uid 1000 in the guest under the seccomp filter (on the guest's kernel), ${network}; limits: ${limits.cpus} CPU, ${limits.memoryMb} MB memory, ${limits.pids} processes (guest cgroup), /tmp ${limits.diskMb} MB, workspace disk copied back when the VM stops`,
      client,
      exited,
      destroy,
      limits,
      limitCounters,
      usage,
      stopProcesses: () => end.stopProcesses(),
    };
  }
}

/** The prefix that runs the VMM as the unprivileged sandbox user (as root), with no capabilities. */
function asUser(user: { uid: number; gid: number } | undefined, extraGroups: number[] = []): string[] {
  if (user === undefined) return [];
  const setpriv = findExecutable('setpriv');
  if (setpriv === undefined) throw new WorkcellError('runtime_unavailable', 'setpriv not found (apt-get install util-linux)');
  return [setpriv, `--reuid=${user.uid}`, `--regid=${user.gid}`, ...(extraGroups.length > 0 ? [`--groups=${extraGroups.join(',')}`] : ['--clear-groups']), '--inh-caps=-all', '--bounding-set=-all', '--no-new-privs', '--'];
}

async function kvmGroup(): Promise<number[]> {
  const info = await stat('/dev/kvm').catch(() => undefined);
  return info === undefined ? [] : [info.gid];
}

/** Connects to a unix socket the VMM is about to create. */
async function connectWhenThere(path: string, timeoutMs: number, child: ChildProcess): Promise<Socket> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`the VMM exited (${child.signalCode ?? `exit ${child.exitCode}`}); see sandbox.log`);
    if (existsSync(path)) {
      try {
        return await new Promise<Socket>((resolveSocket, reject) => {
          const socket = connect({ path, allowHalfOpen: true });
          socket.once('connect', () => {
            socket.off('error', reject);
            resolveSocket(socket);
          });
          socket.once('error', reject);
        });
      } catch {
        // not listening yet
      }
    }
    if (Date.now() > deadline) throw new Error(`the VMM did not open ${path} within ${timeoutMs} ms`);
    await new Promise((resolveWait) => setTimeout(resolveWait, 20));
  }
}

interface StartOptions {
  runDir: string;
  vmlinux: string;
  initramfs: string;
  rootfsImage: string;
  workspaceImage: string;
  bootArgs: string[];
  vcpus: number;
  memoryMb: number;
  user: { uid: number; gid: number } | undefined;
  logStream: NodeJS.WritableStream;
  consoleTail: ConsoleTail;
  signal: AbortSignal;
}

/** QEMU's argv for the sandbox's VM (exported for tests). */
export function qemuArgs(options: Omit<StartOptions, 'user' | 'logStream' | 'consoleTail' | 'signal'> & { accel: 'kvm' | 'tcg' }): string[] {
  return [
    // Option ROMs stay on: they are how the firmware boots -kernel where it is SeaBIOS (QEMU 10 on Debian 13; Debian
    // 12's QEMU 7.2 uses qboot, which loads the kernel itself). Turning them off left the guest at "No bootable device".
    '-M', 'microvm,isa-serial=on,rtc=on',
    '-accel', options.accel,
    '-cpu', options.accel === 'kvm' ? 'host' : 'max',
    '-m', `${options.memoryMb}M`,
    '-smp', String(options.vcpus),
    '-nodefaults', '-no-user-config', '-nographic', '-no-reboot',
    // QEMU's own system-call filter: no spawning, no privilege changes, no obsolete calls.
    '-sandbox', 'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny',
    '-kernel', options.vmlinux,
    '-initrd', options.initramfs,
    // Under TCG the guest finds no timer to calibrate its TSC and delay loop against (no HPET or PM timer on microvm)
    // and waits forever: give it both.
    '-append', [...options.bootArgs, ...(options.accel === 'tcg' ? ['tsc_early_khz=2000000', 'lpj=4000000'] : [])].join(' '),
    // The guest's console (kernel messages, the init's and the guest agent's logs) to QEMU's stdout: sandbox.log. The
    // ISA serial port, not a virtio console: its driver (8250) is built into every distribution kernel, so whatever
    // the guest prints before its virtio modules load (or when they fail to) is there too.
    '-chardev', 'stdio,id=console,signal=off',
    '-serial', 'chardev:console',
    '-device', 'virtio-serial-device,max_ports=2',
    '-chardev', `socket,id=mux,path=${join(options.runDir, 'mux.sock')},server=on,wait=off`,
    '-device', 'virtserialport,chardev=mux,name=workcell.mux',
    '-drive', `id=rootfs,file=${options.rootfsImage},format=raw,if=none,readonly=on`,
    '-device', 'virtio-blk-device,drive=rootfs',
    '-drive', `id=workspace,file=${options.workspaceImage},format=raw,if=none`,
    '-device', 'virtio-blk-device,drive=workspace',
  ];
}

async function startQemu(options: StartOptions & { vmm: Extract<Vmm, { kind: 'qemu' }> }): Promise<{ process: ChildProcess; carrier: Socket }> {
  const prefix = asUser(options.user, options.vmm.accel === 'kvm' ? await kvmGroup() : []);
  const argv = [...prefix, options.vmm.qemu, ...qemuArgs({ ...options, accel: options.vmm.accel })];
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  child.stdout.pipe(options.logStream, { end: false });
  child.stderr.pipe(options.logStream, { end: false });
  options.consoleTail.attach(child.stdout);
  options.consoleTail.attach(child.stderr);
  child.on('error', () => undefined);
  const carrier = await connectWhenThere(join(options.runDir, 'mux.sock'), 10_000, child);
  return { process: child, carrier };
}

async function startFirecracker(options: StartOptions & { vmm: Extract<Vmm, { kind: 'firecracker' }>; sandboxId: string }): Promise<{ process: ChildProcess; carrier: Socket }> {
  const launch = await launchFirecracker({
    firecracker: options.vmm.firecracker,
    jailer: options.vmm.jailer,
    id: options.sandboxId,
    runDir: options.runDir,
    user: options.user,
    vm: {
      kernelPath: options.vmlinux,
      initrdPath: options.initramfs,
      bootArgs: options.bootArgs.join(' '),
      vcpus: options.vcpus,
      memoryMib: options.memoryMb,
      drives: [
        { id: 'rootfs', path: options.rootfsImage, readOnly: true },
        { id: 'workspace', path: options.workspaceImage, readOnly: false },
      ],
      vsockPath: join(options.runDir, 'vsock.sock'),
    },
  });
  launch.process.stdout!.pipe(options.logStream, { end: false });
  launch.process.stderr!.pipe(options.logStream, { end: false });
  options.consoleTail.attach(launch.process.stdout!);
  options.consoleTail.attach(launch.process.stderr!);
  launch.process.on('error', () => undefined);
  (await connectWhenThere(launch.apiSocket, 10_000, launch.process)).destroy();
  await configureAndStart(launch.apiSocket, launch.vm);
  const carrier = await connectGuestVsock(launch.hostVsockPath, guestVsockPort, { timeoutMs: 60_000, signal: options.signal });
  return { process: launch.process, carrier };
}
