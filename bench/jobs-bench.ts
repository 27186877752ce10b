// Measurement 6: short scripted jobs end to end on the real app (API, store, scheduler, bwrap sandboxes, workspace
// disks, zip): each job writes two files, runs python3 and finishes (test/fixtures/trajectories/two-files.json); N
// are scheduled at once and the clock stops when the last one has ended. Run cold (no pool) and with a warm pool of
// as many sandboxes as jobs run at once (root servers). Baseline in the same run: the floor of the same work, bare
// bwrap sandboxes running `python3` that writes a file, as many at once as the app runs jobs.
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { startApp } from '../src/app.ts';
import { loadConfig, type Config } from '../src/config.ts';
import { ensureRootfs } from '../src/runtimes/image.ts';
import { bwrapCommand, compareVersions, findBwrapHost } from '../src/runtimes/probe.ts';
import { runToExit } from './spawn-timing.ts';
import { summarize, type Result } from './stats.ts';

const scriptDir = fileURLToPath(new URL('../test/fixtures/trajectories', import.meta.url));

/** Runs `count` jobs through a fresh app; per-job latencies (schedule → final event) and jobs per second. */
async function runJobs(overrides: Partial<Config>, count: number, signal: AbortSignal): Promise<{ latencies: number[]; perSecond: number }> {
  const dataDir = await mkdtemp(join(tmpdir(), 'workcell-bench-jobs-'));
  await chmod(dataDir, 0o711);
  const config = loadConfig(process.env, { dataDir, host: '127.0.0.1', port: 0, logLevel: 'silent', scriptDir, runtime: 'bwrap', ...overrides });
  const app = await startApp(config, pino({ level: 'silent' }));
  try {
    if (app.pool !== undefined) {
      while (app.pool.stats.ready < config.poolSize) {
        signal.throwIfAborted();
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    }
    const started = performance.now();
    const latencies = await Promise.all(
      Array.from({ length: count }, async () => {
        const scheduledAt = performance.now();
        const response = await fetch(`${app.url}/schedule`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ task: 'write two files', model: 'script:two-files.json' }), signal });
        const { job_id: jobId } = (await response.json()) as { job_id: string };
        // The event stream ends with the job's final status.
        const events = await fetch(`${app.url}/jobs/${jobId}/events`, { signal });
        const text = await events.text();
        if (!text.includes('"status":"complete"')) throw new Error(`job ${jobId} did not complete: ${text.slice(-500)}`);
        return performance.now() - scheduledAt;
      }),
    );
    return { latencies, perSecond: count / ((performance.now() - started) / 1000) };
  } finally {
    await app.close();
    await rm(dataDir, { recursive: true, force: true });
  }
}

export async function benchJobs(options: { config: Config; jobs: number; signal: AbortSignal; progress: (message: string) => void }): Promise<Result[]> {
  const { config, jobs, signal, progress } = options;
  const concurrency = Math.min(config.concurrency, availableParallelism());
  const group = `6. ${jobs} short scripted jobs end to end (write two files, run python3, finish), ${concurrency} at once`;
  const results: Result[] = [];
  const cold = await runJobs({ concurrency, poolSize: 0 }, jobs, signal);
  progress('jobs: cold done');
  results.push({ group, name: 'schedule → complete, each job its own sandbox (latency per job; req/s: jobs per second)', baseline: false, latencyMs: summarize(cold.latencies), requestsPerSecond: cold.perSecond });
  if (process.getuid?.() === 0) {
    const warm = await runJobs({ concurrency, poolSize: concurrency }, jobs, signal);
    progress('jobs: warm pool done');
    results.push({ group, name: `the same with a warm pool of ${concurrency} (WORKCELL_POOL_SIZE)`, baseline: false, latencyMs: summarize(warm.latencies), requestsPerSecond: warm.perSecond });
  }
  // The floor: bare bwrap + python3 writing a file, `concurrency` at once.
  const host = await findBwrapHost(config);
  if ('missing' in host) throw new Error(host.missing);
  const [file, ...prefix] = bwrapCommand(host) as [string, ...string[]];
  const args = [
    ...prefix,
    '--unshare-all', '--unshare-user', ...(compareVersions(host.version, '0.8.0') >= 0 ? ['--disable-userns'] : []),
    '--die-with-parent', '--uid', '1000', '--gid', '1000', '--ro-bind', ensureRootfs(config), '/', '--proc', '/proc', '--dev', '/dev', '--tmpfs', '/tmp',
    '--', '/usr/bin/python3', '-c', "open('/tmp/hello.py', 'w').write('print(1)')",
  ];
  const latencies: number[] = [];
  const started = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < jobs) {
        next++;
        signal.throwIfAborted();
        const at = performance.now();
        await runToExit(file, args);
        latencies.push(performance.now() - at);
      }
    }),
  );
  results.push({ group, name: `baseline: bare bwrap + python3 writing a file, ${concurrency} at once`, baseline: true, latencyMs: summarize(latencies), requestsPerSecond: jobs / ((performance.now() - started) / 1000) });
  return results;
}
