// Measurements 1 and 2: starting a real bwrap sandbox until its sandboxd is ready, and one shell call through
// sandboxd (and the shell session alone: the PTY session against the pipe session it replaced, bench/baseline/).
// Each is interleaved, iteration by iteration, with baselines that bound it from below on this machine (a bare
// bwrap, a bare Node start, a bare HTTP round trip, a bare spawn), so a noisy machine slows them alike.
// Every sandbox is destroyed and every temp dir removed, whatever fails.
import { chmod, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Config } from '../src/config.ts';
import type { BwrapRuntime } from '../src/runtimes/bwrap/bwrap-runtime.ts';
import { ensureRootfs } from '../src/runtimes/image.ts';
import { bwrapCommand, compareVersions, findBwrapHost } from '../src/runtimes/probe.ts';
import type { Sandbox } from '../src/runtimes/types.ts';
import { BashSession } from '../src/sandboxd/shell/bash-session.ts';
import { PipeBashSession } from './baseline/pipe-bash-session.ts';
import { runToExit, timeMs } from './spawn-timing.ts';
import { summarize, type Result } from './stats.ts';

export interface SandboxBenchOptions {
  config: Config;
  runtime: BwrapRuntime;
  iterations: number;
  signal: AbortSignal;
  progress: (message: string) => void;
}

/** A temp root the sandbox user can traverse (workspaces live under it), removed after `use`. */
async function withTempRoot<T>(use: (root: string) => Promise<T>): Promise<T> {
  const root = await mkdtemp(join(tmpdir(), 'workcell-bench-'));
  try {
    await chmod(root, 0o711);
    return await use(root);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

/** A fresh workspace and log dir under `root` for sandbox number `index`. */
async function sandboxSpec(root: string, index: number) {
  const workspaceDir = join(root, `workspace-${index}`);
  await mkdir(workspaceDir);
  return { jobId: `bench_${index}`, workspaceDir, logDir: join(root, `logs-${index}`) };
}

/** `bwrap ... /bin/true` over the rootfs with the runtime's namespaces, as the sandbox user when root (setpriv). */
async function bareBwrapCommand(config: Config): Promise<[string, ...string[]]> {
  const host = await findBwrapHost(config);
  if ('missing' in host) throw new Error(host.missing);
  const [file, ...prefix] = bwrapCommand(host) as [string, ...string[]];
  const options = [
    '--unshare-all',
    '--unshare-user',
    ...(compareVersions(host.version, '0.8.0') >= 0 ? ['--disable-userns'] : []),
    '--new-session',
    '--die-with-parent',
    '--uid', '1000',
    '--gid', '1000',
    '--ro-bind', ensureRootfs(config), '/',
    '--proc', '/proc',
    '--dev', '/dev',
    '--tmpfs', '/tmp',
    '--cap-drop', 'ALL',
  ];
  return [file, ...prefix, ...options, '--', '/bin/true'];
}

export async function benchSandboxCreate(options: SandboxBenchOptions): Promise<Result[]> {
  const { runtime, iterations, signal, progress } = options;
  const group = '1. sandbox create → sandboxd ready';
  const [bwrap, ...bwrapArgs] = await bareBwrapCommand(options.config);
  const createAndDestroy = async (root: string, index: number): Promise<number> => {
    // With the default limits, as the server starts every sandbox (a cgroup, sized tmpfs; the seccomp filter always).
    const { cpus, memoryMb, pids, diskMb } = options.config;
    const spec = { ...(await sandboxSpec(root, index)), limits: { cpus, memoryMb, pids, diskMb } };
    const started = performance.now();
    const sandbox = await runtime.create(spec, signal);
    const elapsed = performance.now() - started;
    await sandbox.destroy();
    return elapsed;
  };
  // The warm pool's handover: a sandbox started ahead (not timed, as the pool does it before any job), then given a
  // job's workspace until sandboxd answers for it: what a job waits for when the pool has one ready.
  const attachAndDestroy = async (root: string, index: number): Promise<number> => {
    const { cpus, memoryMb, pids, diskMb } = options.config;
    const limits = { cpus, memoryMb, pids, diskMb };
    const spec = { ...(await sandboxSpec(root, -1 - index)), limits };
    const warm = await runtime.prepare({ limits }, signal);
    let sandbox: Sandbox | undefined;
    try {
      const started = performance.now();
      sandbox = await warm.attach(spec);
      return performance.now() - started;
    } finally {
      await (sandbox ?? warm).destroy();
    }
  };
  const pooled = process.getuid?.() === 0;
  const bareBwrap = () => timeMs(() => runToExit(bwrap, bwrapArgs));
  const bareNode = () => timeMs(() => runToExit(process.execPath, ['-e', '0']));

  return withTempRoot(async (root) => {
    // Warm-up, not recorded: the first create builds the sandboxd bundle and pulls the rootfs into the page cache.
    await createAndDestroy(root, 0);
    if (pooled) await attachAndDestroy(root, 0);
    await bareBwrap();
    await bareNode();
    const samples = { create: [] as number[], pooled: [] as number[], bwrap: [] as number[], node: [] as number[] };
    for (let index = 1; index <= iterations; index++) {
      signal.throwIfAborted();
      samples.create.push(await createAndDestroy(root, index));
      if (pooled) samples.pooled.push(await attachAndDestroy(root, index));
      samples.bwrap.push(await bareBwrap());
      samples.node.push(await bareNode());
      progress(`create ${index}/${iterations}`);
    }
    return [
      { group, name: '`BwrapRuntime.create()` until it resolves (sandboxd ready)', baseline: false, latencyMs: summarize(samples.create) },
      ...(pooled ? [{ group, name: 'from the warm pool: a started sandbox handed a job (`WarmSandbox.attach()` until it resolves; the server runs as root)', baseline: false, latencyMs: summarize(samples.pooled) }] : []),
      { group, name: 'baseline: bare `bwrap --unshare-all --ro-bind <rootfs> / … /bin/true` (via setpriv), spawn to exit', baseline: true, latencyMs: summarize(samples.bwrap) },
      { group, name: 'baseline: `node -e 0` on the host, spawn to exit', baseline: true, latencyMs: summarize(samples.node) },
    ];
  });
}

export async function benchShellCall(options: SandboxBenchOptions & { warmup: number }): Promise<Result[]> {
  const { runtime, iterations, warmup, signal, progress } = options;
  const group = '2. shell call `true` through sandboxd';
  return withTempRoot(async (root) => {
    const sandbox: Sandbox = await runtime.create(await sandboxSpec(root, 0), signal);
    // The session alone, in this process on the host (no HTTP, no sandbox): the PTY session sandboxd runs, and the
    // pipe session it replaced (bench/baseline/), each in its own bash.
    const ptySession = new BashSession({ cwd: root });
    const pipeSession = new PipeBashSession({ cwd: root });
    try {
      const shell = async () => {
        const result = await sandbox.client.call('shellExec', { command: 'true' }, { signal });
        if (result.exit_code !== 0) throw new Error(`true exited ${result.exit_code} in the sandbox: ${result.output}`);
      };
      const health = async () => {
        if (!(await sandbox.client.healthy(signal))) throw new Error('sandboxd did not answer GET /v1/health');
      };
      const hostTrue = () => runToExit('/bin/true', []);
      const inSession = (session: BashSession | PipeBashSession) => async () => {
        const result = await session.exec({ command: 'true', timeoutMs: 10_000 });
        if (result.exit_code !== 0) throw new Error(`true exited ${result.exit_code} in a local session: ${result.output}`);
      };
      const pty = inSession(ptySession);
      const pipe = inSession(pipeSession);
      for (let index = 0; index < warmup; index++) {
        await shell();
        await health();
        await hostTrue();
        await pty();
        await pipe();
      }
      const samples = { shell: [] as number[], health: [] as number[], spawn: [] as number[], pty: [] as number[], pipe: [] as number[] };
      for (let index = 1; index <= iterations; index++) {
        signal.throwIfAborted();
        samples.shell.push(await timeMs(shell));
        samples.health.push(await timeMs(health));
        samples.spawn.push(await timeMs(hostTrue));
        samples.pty.push(await timeMs(pty));
        samples.pipe.push(await timeMs(pipe));
        if (index % 50 === 0) progress(`shell ${index}/${iterations}`);
      }
      return [
        { group, name: "`client.call('shellExec', {command: 'true'})` on a live sandbox (PTY session)", baseline: false, latencyMs: summarize(samples.shell) },
        { group, name: 'baseline: `GET /v1/health` through the same client (HTTP over the unix socket)', baseline: true, latencyMs: summarize(samples.health) },
        { group, name: 'baseline: spawn `/bin/true` on the host (child_process), spawn to exit', baseline: true, latencyMs: summarize(samples.spawn) },
        { group, name: "PTY session alone, on the host: `BashSession.exec({command: 'true'})` (no HTTP, no sandbox)", baseline: false, latencyMs: summarize(samples.pty) },
        { group, name: 'baseline: the pipe session it replaced (bench/baseline/), same call', baseline: true, latencyMs: summarize(samples.pipe) },
      ];
    } finally {
      await Promise.all([ptySession.close(), pipeSession.close()]);
      await sandbox.destroy();
    }
  });
}
