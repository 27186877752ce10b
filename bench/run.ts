// The benchmarks: `node bench/run.ts [--quick] [--json] [--only create|shell|http|isolation|code|jobs|density ...]` (npm run bench). Measures sandbox start-up, a shell call
// through sandboxd and POST /schedule throughput, each next to baselines measured in the same run, and prints a
// Markdown table (or JSON with --json) on stdout; progress goes to stderr. Needs what the integration tests need:
// bwrap, the built rootfs and (as root) the sandbox user. Ctrl-C stops it after cleaning up.
import { parseArgs } from 'node:util';
import { loadConfig } from '../src/config.ts';
import { BwrapRuntime } from '../src/runtimes/bwrap/bwrap-runtime.ts';
import { createRuntimes } from '../src/runtimes/index.ts';
import { benchSchedule } from './http-bench.ts';
import { benchRunCode } from './code-bench.ts';
import { benchDensity } from './density-bench.ts';
import { benchJobs } from './jobs-bench.ts';
import { benchIsolation } from './isolation-bench.ts';
import { describeMachine, printReport, type Report } from './report.ts';
import { benchSandboxCreate, benchShellCall } from './sandbox-bench.ts';
import type { Result } from './stats.ts';

const measurements = ['create', 'shell', 'http', 'isolation', 'code', 'jobs', 'density'] as const;
const { values: flags } = parseArgs({ options: { quick: { type: 'boolean', default: false }, json: { type: 'boolean', default: false }, only: { type: 'string', multiple: true } } });
for (const name of flags.only ?? []) {
  if (!(measurements as readonly string[]).includes(name)) throw new Error(`--only ${name}: not a measurement (${measurements.join(', ')})`);
}
/** Whether this run takes the measurement (all of them without --only). */
const wanted = (name: (typeof measurements)[number]) => flags.only === undefined || flags.only.includes(name);
const sizes = flags.quick
  ? { createIterations: 5, shellIterations: 50, shellWarmup: 10, httpDurationMs: 2000, isolationIterations: 5, codeSandboxes: 3, codeIterations: 20, densitySandboxes: 20, jobs: 20 }
  : { createIterations: 20, shellIterations: 200, shellWarmup: 20, httpDurationMs: 5000, isolationIterations: 20, codeSandboxes: 5, codeIterations: 50, densitySandboxes: 100, jobs: 60 };

const interrupted = new AbortController();
process.once('SIGINT', () => interrupted.abort(new Error('interrupted (SIGINT)')));
const progress = (message: string) => process.stderr.write(`bench: ${message}\n`);

async function main(): Promise<Report> {
  const machine = describeMachine();
  const date = new Date().toISOString();
  const command = ['node', 'bench/run.ts', ...process.argv.slice(2)].join(' ');
  const config = loadConfig(process.env, { logLevel: 'silent' });
  // The runtime exactly as the server builds it.
  const runtime = createRuntimes(config).get('bwrap');
  if (!(runtime instanceof BwrapRuntime)) throw new Error(`the bwrap runtime does not run on ${process.platform}`);
  const unavailable = runtime.unavailableReason();
  if (unavailable !== undefined) throw new Error(`the bwrap runtime is not available: ${unavailable}`);
  const signal = interrupted.signal;

  const results: Result[] = [];
  if (wanted('create')) {
    progress(`sandbox create, n=${sizes.createIterations}`);
    results.push(...(await benchSandboxCreate({ config, runtime, iterations: sizes.createIterations, signal, progress })));
  }
  if (wanted('shell')) {
    progress(`shell call, n=${sizes.shellIterations}`);
    results.push(...(await benchShellCall({ config, runtime, iterations: sizes.shellIterations, warmup: sizes.shellWarmup, signal, progress })));
  }
  if (wanted('http')) {
    progress(`HTTP load, ${sizes.httpDurationMs / 1000} s each`);
    results.push(...(await benchSchedule({ connections: 16, durationMs: sizes.httpDurationMs, warmupMs: 500, signal, progress })));
  }
  if (wanted('isolation')) {
    progress(`isolation overhead, n=${sizes.isolationIterations}`);
    results.push(...(await benchIsolation({ config, iterations: sizes.isolationIterations, signal, progress })));
  }
  if (wanted('code')) {
    progress(`run_code, ${sizes.codeSandboxes} fresh sandboxes, n=${sizes.codeIterations} warm`);
    results.push(...(await benchRunCode({ config, runtime, sandboxes: sizes.codeSandboxes, iterations: sizes.codeIterations, signal, progress })));
  }
  if (wanted('jobs')) {
    progress(`${sizes.jobs} short jobs end to end, cold and from a warm pool`);
    results.push(...(await benchJobs({ config, jobs: sizes.jobs, signal, progress })));
  }
  if (wanted('density')) {
    progress(`${sizes.densitySandboxes} idle sandboxes`);
    results.push(...(await benchDensity({ config, runtime, sandboxes: sizes.densitySandboxes, signal, progress })));
  }
  machine.loadAverage.end = describeMachine().loadAverage.start;
  return { machine, date, command, results };
}

await printReport(main, flags.json);
