// Measurement 3: POST /schedule throughput and latency on the real app (startApp: API, job store, scheduler),
// against GET /healthz on the same server under the same load as the baseline. The scheduler is stopped before
// the load starts, so the jobs the benchmark creates stay pending and none starts a sandbox; schedule() then
// costs what it costs when every worker slot is busy (its wake() claims nothing). The server is always closed
// and its temp data dir removed.
import { execFile } from 'node:child_process';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { startApp } from '../src/app.ts';
import { loadConfig } from '../src/config.ts';
import type { LoadOptions, LoadReport } from './http-load.ts';
import { summarize, type Result } from './stats.ts';

const loadScript = fileURLToPath(new URL('./http-load.ts', import.meta.url));

export interface HttpBenchOptions {
  connections: number;
  durationMs: number;
  warmupMs: number;
  signal: AbortSignal;
  progress: (message: string) => void;
}

/** Runs the load generator in a child process and waits for its report. */
function generateLoad(options: LoadOptions, signal: AbortSignal): Promise<LoadReport> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [loadScript, JSON.stringify(options)], { signal, maxBuffer: 256 * 1024 * 1024, encoding: 'utf8' }, (error, stdout, stderr) => {
      if (error !== null) reject(new Error(`the load generator failed: ${error.message}\n${stderr}`));
      else resolve(JSON.parse(stdout) as LoadReport);
    });
  });
}

function loadResult(group: string, name: string, baseline: boolean, report: LoadReport): Result {
  if (report.latenciesMs.length === 0) throw new Error(`${name}: no request succeeded (${report.errors} failed: ${report.firstError ?? 'no request completed'})`);
  return {
    group,
    name,
    baseline,
    latencyMs: summarize(report.latenciesMs),
    requestsPerSecond: report.latenciesMs.length / (report.windowMs / 1000),
    errors: report.errors,
  };
}

export async function benchSchedule(options: HttpBenchOptions): Promise<Result[]> {
  const { connections, durationMs, warmupMs, signal, progress } = options;
  const group = `3. POST /schedule, ${connections} keep-alive connections, ${durationMs / 1000} s`;
  const dataDir = await mkdtemp(join(tmpdir(), 'workcell-bench-'));
  try {
    await chmod(dataDir, 0o711);
    const config = loadConfig(process.env, { dataDir, host: '127.0.0.1', port: 0, logLevel: 'silent' });
    const app = await startApp(config, pino({ level: 'silent' }));
    try {
      await app.scheduler.stop();
      const load = { connections, durationMs, warmupMs };
      progress('GET /healthz load');
      const health = await generateLoad({ url: `${app.url}/healthz`, method: 'GET', ...load }, signal);
      progress('POST /schedule load');
      const body = JSON.stringify({ task: 'benchmark job: never runs' });
      const schedule = await generateLoad({ url: `${app.url}/schedule`, method: 'POST', body, contentType: 'application/json', ...load }, signal);
      if (app.scheduler.runningJobIds.length > 0) throw new Error('a benchmark job was claimed: the scheduler should have been stopped');
      return [
        loadResult(group, "`POST /schedule` (JSON task; writes the job's row: its directory and event log are made when first needed)", false, schedule),
        loadResult(group, 'baseline: `GET /healthz` on the same server, same load', true, health),
      ];
    } finally {
      await app.close();
    }
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
}
