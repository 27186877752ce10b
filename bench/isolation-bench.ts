// Measurement 4: what the seccomp filter and the cgroup limits cost. The same bare bwrap command (the runtime's
// namespaces over the rootfs, as the sandbox user) runs three ways, interleaved sample by sample: plain, with the
// seccomp filter (`--seccomp`), and with the filter inside a fresh cgroup of the default limits (created, joined by
// the runtime's wrapper, removed: the whole per-sandbox cost). Each way runs three workloads: `/bin/true` (start-up),
// a CPU-bound python loop, and a syscall-heavy one (stat and getpid in a loop, every call through the filter).
import { spawn } from 'node:child_process';
import { closeSync, openSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Config } from '../src/config.ts';
import { cgroupWrapper, createSandboxCgroup, findCgroupHost } from '../src/runtimes/cgroups.ts';
import { ensureRootfs } from '../src/runtimes/image.ts';
import { bwrapCommand, compareVersions, findBwrapHost } from '../src/runtimes/probe.ts';
import { hostSeccompProgram } from '../src/runtimes/seccomp.ts';
import { summarize, type Result } from './stats.ts';

export interface IsolationBenchOptions {
  config: Config;
  iterations: number;
  signal: AbortSignal;
  progress: (message: string) => void;
}

const workloads = [
  { name: '`/bin/true` (start-up)', command: ['/bin/true'] },
  { name: 'CPU-bound: python3, 2·10⁶ multiplications', command: ['/usr/bin/python3', '-c', 'sum(i * i for i in range(2_000_000))'] },
  { name: 'syscall-heavy: python3, 10⁵ × (stat + getpid)', command: ['/usr/bin/python3', '-c', 'import os\nfor _ in range(100_000):\n    os.stat("/"); os.getpid()'] },
] as const;

/** Spawn to exit, with the seccomp program readable on fd 3 when given; rejects on a non-zero exit. */
function timeRun(file: string, args: string[], seccompFile: string | undefined): Promise<number> {
  return new Promise((resolve, reject) => {
    const fd = seccompFile === undefined ? undefined : openSync(seccompFile, 'r');
    const started = performance.now();
    const child = spawn(file, args, { stdio: ['ignore', 'ignore', 'pipe', fd ?? 'ignore'], env: { PATH: '/usr/bin:/bin' } });
    if (fd !== undefined) closeSync(fd);
    let stderr = '';
    child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
    child.once('error', reject);
    child.once('close', (code) => (code === 0 ? resolve(performance.now() - started) : reject(new Error(`${args.join(' ')} exited ${code}: ${stderr.trim()}`))));
  });
}

export async function benchIsolation(options: IsolationBenchOptions): Promise<Result[]> {
  const { config, iterations, signal, progress } = options;
  const group = '4. isolation overhead: seccomp filter and cgroup limits';
  const host = await findBwrapHost(config);
  if ('missing' in host) throw new Error(host.missing);
  const cgroups = await findCgroupHost({ parent: config.cgroupParent });
  const [file, ...prefix] = bwrapCommand(host) as [string, ...string[]];
  const namespaces = [
    '--unshare-all', '--unshare-user', ...(compareVersions(host.version, '0.8.0') >= 0 ? ['--disable-userns'] : []),
    '--new-session', '--die-with-parent', '--uid', '1000', '--gid', '1000',
    '--ro-bind', ensureRootfs(config), '/', '--proc', '/proc', '--dev', '/dev', '--tmpfs', '/tmp', '--cap-drop', 'ALL',
  ];
  const dir = await mkdtemp(join(tmpdir(), 'workcell-bench-seccomp-'));
  const seccompFile = join(dir, 'filter.bpf');
  writeFileSync(seccompFile, hostSeccompProgram() ?? Buffer.alloc(0));
  try {
    const plain = (command: readonly string[]) => timeRun(file, [...prefix, ...namespaces, '--', ...command], undefined);
    const filtered = (command: readonly string[]) => timeRun(file, [...prefix, ...namespaces, '--seccomp', '3', '--', ...command], seccompFile);
    let sandboxIndex = 0;
    const limited = async (command: readonly string[]) => {
      if ('problem' in cgroups) throw new Error(cgroups.problem);
      const started = performance.now();
      const cgroup = await createSandboxCgroup(cgroups, `sb-bench${process.pid}x${sandboxIndex++}`, { cpus: config.cpus, memoryMb: config.memoryMb, pids: config.pids });
      try {
        const [wrapper, ...wrapperArgs] = cgroupWrapper(cgroup);
        await timeRun(wrapper!, [...wrapperArgs, file, ...prefix, ...namespaces, '--seccomp', '3', '--', ...command], seccompFile);
      } finally {
        await cgroup.remove();
      }
      return performance.now() - started;
    };
    const ways = [
      { label: 'bwrap + seccomp + cgroup (created, joined, removed)', run: limited, baseline: false, skip: 'problem' in cgroups },
      { label: 'bwrap + seccomp', run: filtered, baseline: false, skip: false },
      { label: 'baseline: plain bwrap', run: plain, baseline: true, skip: false },
    ].filter((way) => !way.skip);
    const results: Result[] = [];
    for (const workload of workloads) {
      for (const way of ways) await way.run(workload.command); // warm-up
      const samples = ways.map(() => [] as number[]);
      for (let index = 0; index < iterations; index++) {
        signal.throwIfAborted();
        // Rotate the order so that no way always runs right after another.
        for (let k = 0; k < ways.length; k++) {
          const which = (index + k) % ways.length;
          samples[which]!.push(await ways[which]!.run(workload.command));
        }
      }
      progress(`isolation: ${workload.name}`);
      ways.forEach((way, i) => results.push({ group, name: `${workload.name}: ${way.label}`, baseline: way.baseline, latencyMs: summarize(samples[i]!) }));
    }
    return results;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
