// Every runtime in one run: `node bench/runtimes.ts [--quick] [--json]` (npm run bench:runtimes). For bwrap, docker,
// gvisor and microvm, as the server builds them (createRuntimes): create → sandboxd ready (the runtime's create() until
// it resolves, default limits, a fresh workspace; destroy() follows, untimed; one untimed create first, which builds
// bundles, imports the Docker image or makes the microVM disks), and the round trip of the shell tool
// (`shellExec {command: 'true'}`, after warm-up calls, on one live sandbox). A runtime that cannot run here is
// reported with the reason. dockerd is started for the Docker runtimes when none runs, and stopped afterwards.
import { chmod, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { loadConfig, runtimeNames, type RuntimeName } from '../src/config.ts';
import { errorMessage } from '../src/errors.ts';
import { createRuntimes, type RegisteredRuntime } from '../src/runtimes/index.ts';
import type { Sandbox } from '../src/runtimes/types.ts';
import { dockerUnavailableReason, useDockerDaemon, type DockerDaemon } from '../test/helpers/docker-daemon.ts';
import { describeMachine, markdownReport, type Report } from './report.ts';
import { summarize, type Result } from './stats.ts';

const { values: flags } = parseArgs({ options: { quick: { type: 'boolean', default: false }, json: { type: 'boolean', default: false } } });
/** microVMs under TCG take seconds to start: fewer of them. */
const creates = (name: RuntimeName) => (name === 'microvm' ? (flags.quick ? 2 : 3) : flags.quick ? 3 : 10);
const shellCalls = flags.quick ? 30 : 100;
const warmup = 10;
const progress = (message: string) => process.stderr.write(`bench: ${message}\n`);

async function withWorkspace<T>(run: (dirs: { workspace: string; logDir: string }) => Promise<T>): Promise<T> {
  const root = await mkdtemp(join(tmpdir(), 'workcell-bench-'));
  await chmod(root, 0o711);
  await mkdir(join(root, 'workspace'));
  try {
    return await run({ workspace: join(root, 'workspace'), logDir: join(root, 'logs') });
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

async function create(runtime: RegisteredRuntime, dirs: { workspace: string; logDir: string }, limits: NonNullable<Parameters<RegisteredRuntime['create']>[0]['limits']>): Promise<{ sandbox: Sandbox; ms: number }> {
  const started = performance.now();
  const sandbox = await runtime.create({ jobId: 'job_bench', workspaceDir: dirs.workspace, logDir: dirs.logDir, limits });
  return { sandbox, ms: performance.now() - started };
}

async function benchRuntime(name: RuntimeName, runtime: RegisteredRuntime, limits: { cpus: number; memoryMb: number; pids: number; diskMb: number }): Promise<Result[]> {
  const group = `${name}`;
  progress(`${name}: warm-up create`);
  await withWorkspace(async (dirs) => (await create(runtime, dirs, limits)).sandbox.destroy());
  const createMs: number[] = [];
  for (let i = 0; i < creates(name); i++) {
    await withWorkspace(async (dirs) => {
      const { sandbox, ms } = await create(runtime, dirs, limits);
      createMs.push(ms);
      await sandbox.destroy();
    });
  }
  progress(`${name}: ${shellCalls} shell calls`);
  const shellMs = await withWorkspace(async (dirs) => {
    const { sandbox } = await create(runtime, dirs, limits);
    try {
      for (let i = 0; i < warmup; i++) await sandbox.client.call('shellExec', { command: 'true' });
      const samples: number[] = [];
      for (let i = 0; i < shellCalls; i++) {
        const started = performance.now();
        await sandbox.client.call('shellExec', { command: 'true' });
        samples.push(performance.now() - started);
      }
      return samples;
    } finally {
      await sandbox.destroy();
    }
  });
  return [
    { group, name: `${name}: create → sandboxd ready`, baseline: false, latencyMs: summarize(createMs) },
    { group, name: `${name}: shell \`true\` round trip`, baseline: false, latencyMs: summarize(shellMs) },
  ];
}

async function main(): Promise<{ report: Report; skipped: string[] }> {
  const machine = describeMachine();
  const config = loadConfig(process.env, { logLevel: 'silent' });
  const runtimes = createRuntimes(config);
  const limits = { cpus: config.cpus, memoryMb: 1024, pids: config.pids, diskMb: 1024 };
  let daemon: DockerDaemon | undefined;
  const results: Result[] = [];
  const skipped: string[] = [];
  try {
    for (const name of runtimeNames) {
      const runtime = runtimes.get(name);
      if (runtime === undefined) continue;
      if ((name === 'docker' || name === 'gvisor') && daemon === undefined && dockerUnavailableReason() === undefined) daemon = await useDockerDaemon();
      const problem = await runtime.unavailableReason();
      if (problem !== undefined) {
        skipped.push(`${name}: ${problem}`);
        continue;
      }
      try {
        results.push(...(await benchRuntime(name, runtime, limits)));
      } catch (error) {
        skipped.push(`${name}: failed: ${errorMessage(error)}`);
      }
    }
  } finally {
    await daemon?.release();
  }
  machine.loadAverage.end = describeMachine().loadAverage.start;
  return { report: { machine, date: new Date().toISOString(), command: ['node', 'bench/runtimes.ts', ...process.argv.slice(2)].join(' '), results }, skipped };
}

try {
  const { report, skipped } = await main();
  process.stdout.write(flags.json ? `${JSON.stringify({ ...report, skipped }, null, 2)}\n` : `${markdownReport(report)}${skipped.map((line) => `\nnot measured: ${line}\n`).join('')}`);
} catch (error) {
  process.stderr.write(`bench failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exitCode = 1;
}
