// Measurement 7: idle sandboxes at once. N bwrap sandboxes with the default limits, each over a workspace disk as a
// job has (an ext4 image loop-mounted), started one after another and left idle; then what each costs in memory,
// two ways: the PSS of its processes (bwrap, sandboxd; shared pages such as the node binary split among all), and the
// host's MemAvailable drop over the whole start divided by N (everything: page cache, tmpfs, kernel memory, loop
// devices, the workspace disks' metadata). Every sandbox and disk is released, whatever fails.
import { chmod, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Config } from '../src/config.ts';
import { attachWorkspaceDisk, releaseWorkspaceDisk } from '../src/jobs/workspace-disk.ts';
import { pidNamespaceMembers, type BwrapRuntime, type BwrapSandbox } from '../src/runtimes/bwrap/bwrap-runtime.ts';
import { summarize, type Result } from './stats.ts';

const memAvailableKb = async () => Number(/^MemAvailable:\s+(\d+)/m.exec(await readFile('/proc/meminfo', 'utf8'))?.[1]);
const pssKb = async (pid: number) => Number(/^Pss:\s+(\d+)/m.exec(await readFile(`/proc/${pid}/smaps_rollup`, 'utf8').catch(() => ''))?.[1] ?? 0);

export async function benchDensity(options: { config: Config; runtime: BwrapRuntime; sandboxes: number; signal: AbortSignal; progress: (message: string) => void }): Promise<Result[]> {
  const { config, runtime, sandboxes, signal, progress } = options;
  const group = `7. ${sandboxes} idle sandboxes at once, each with a ${config.diskMb} MB workspace disk`;
  const root = await mkdtemp(join(tmpdir(), 'workcell-density-'));
  await chmod(root, 0o711);
  const started: Array<{ sandbox?: BwrapSandbox; paths: { workspace: string; workspaceImage: string } }> = [];
  const limits = { cpus: config.cpus, memoryMb: config.memoryMb, pids: config.pids, diskMb: config.diskMb };
  try {
    const before = await memAvailableKb();
    for (let index = 0; index < sandboxes; index++) {
      signal.throwIfAborted();
      const paths = { workspace: join(root, `workspace-${index}`), workspaceImage: join(root, `workspace-${index}.ext4`) };
      const entry: (typeof started)[number] = { paths };
      started.push(entry);
      await mkdir(paths.workspace);
      await attachWorkspaceDisk(paths, config.diskMb);
      entry.sandbox = await runtime.create({ jobId: `bench_density_${index}`, workspaceDir: paths.workspace, logDir: join(root, `logs-${index}`), limits }, signal);
      if ((index + 1) % 10 === 0) progress(`density ${index + 1}/${sandboxes}`);
    }
    // Idle: each answers once (its shell started, as a job's first call starts it), then the host settles.
    for (const { sandbox } of started) await sandbox!.client.call('shellExec', { command: 'true' }, { signal });
    await new Promise((resolve) => setTimeout(resolve, 2000));
    const after = await memAvailableKb();
    const pss: number[] = [];
    for (const { sandbox } of started) {
      let total = 0;
      for (const pid of [sandbox!.pid, ...(await pidNamespaceMembers(sandbox!.pidNamespace!))]) total += await pssKb(pid);
      pss.push(total / 1024);
    }
    const perSandbox = (before - after) / 1024 / sandboxes;
    return [
      { group, name: 'PSS of each sandbox\'s processes (bwrap, sandboxd, its shell)', baseline: false, unit: 'MiB', latencyMs: summarize(pss) },
      { group, name: `host MemAvailable drop over the start ÷ ${sandboxes} (everything a sandbox and its disk cost the host)`, baseline: false, unit: 'MiB', latencyMs: summarize([perSandbox]) },
    ];
  } finally {
    for (const { sandbox, paths } of started) {
      await sandbox?.destroy().catch(() => undefined);
      await releaseWorkspaceDisk(paths).catch(() => undefined);
    }
    await rm(root, { recursive: true, force: true });
  }
}
