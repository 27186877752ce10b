// The queue across processes: `node bench/scale.ts [--quick] [--json]` (npm run bench:scale). For the SQLite store and
// a real Postgres (started here, as the tests start theirs), with 1, 2 and 4 worker processes (bench/scale-worker.ts):
//
// - claims/s: M pending jobs, drained by the workers at once (claim, finish, next); the rate is M over the time from
//    the first worker's start to the last one's end, the latency each claim's round trip. Every job must be claimed
//    exactly once, or the run fails. Baseline: `SELECT 1` round trips on the same Postgres.
// - schedule → start: jobs made pending one at a time (the store's create and the queue notice, as POST /schedule
//    does) while the workers idle; from the create's start to the moment a worker's Scheduler hands the job to its
//    runner. Postgres workers are woken by LISTEN/NOTIFY; SQLite has no bus between processes, so its workers find
//    jobs by their one-second poll. Baseline: SQLite with the Scheduler in the scheduling process itself, woken
//    in-process: `workcell serve` on one host.
//
// Jobs start no sandbox here: this is the queue's cost, apart from the runtime's (measurement 1 in bench/run.ts).
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { pino } from 'pino';
import { LocalEventBus } from '../src/bus/local/local-bus.ts';
import { PostgresEventBus } from '../src/bus/postgres/postgres-bus.ts';
import { queueTopic, type EventBus } from '../src/bus/types.ts';
import { Scheduler } from '../src/jobs/scheduler.ts';
import { openPostgresStore } from '../src/store/postgres/index.ts';
import { openSqliteStore } from '../src/store/sqlite/index.ts';
import type { Store } from '../src/store/types.ts';
import { newJobId } from '../src/util/ids.ts';
import { startPostgres } from '../test/helpers/postgres.ts';
import { describeMachine, printReport, type Report } from './report.ts';
import type { ClaimNotice, DrainReport, WorkerOptions } from './scale-worker.ts';
import { summarize, type Result } from './stats.ts';

const { values: flags } = parseArgs({ options: { quick: { type: 'boolean', default: false }, json: { type: 'boolean', default: false } } });
const sizes = flags.quick ? { drainJobs: 200, latencyJobs: 20 } : { drainJobs: 1000, latencyJobs: 60 };
const workerCounts = [1, 2, 4];
const workerScript = fileURLToPath(new URL('./scale-worker.ts', import.meta.url));
const progress = (message: string) => process.stderr.write(`bench: ${message}\n`);
const limits = { wall_time_s: 60, max_steps: 10 };
/** Milliseconds since the epoch, to the microsecond, as the workers report theirs (one machine, one clock). */
const now = () => performance.timeOrigin + performance.now();

interface Backend {
  name: 'sqlite' | 'postgres';
  /** A new, empty store: its location for the workers, and the store opened on it (migrated). */
  fresh(): Promise<{ location: string; store: Store; bus: EventBus; remove: () => Promise<void> }>;
}

interface Worker {
  child: ChildProcess;
  lines: AsyncIterableIterator<string>;
}

async function startWorker(options: WorkerOptions): Promise<Worker> {
  const child = spawn(process.execPath, [workerScript, JSON.stringify(options)], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const first = await lines.next();
  if (first.done || first.value !== 'ready') throw new Error(`a worker did not start (${options.store}, ${options.mode})`);
  return { child, lines };
}

async function stopWorkers(workers: Worker[]): Promise<void> {
  await Promise.all(
    workers.map(async ({ child }) => {
      if (child.exitCode !== null) return;
      child.stdin!.end();
      await once(child, 'exit');
    }),
  );
}

async function benchDrain(backend: Backend, workers: number): Promise<Result> {
  const { location, store, bus, remove } = await backend.fresh();
  const started: Worker[] = [];
  try {
    for (let index = 0; index < sizes.drainJobs; index++) await store.jobs.create({ id: newJobId(), task: 'bench', runtime: 'auto', limits });
    for (let index = 0; index < workers; index++) started.push(await startWorker({ store: backend.name, location, mode: 'drain', workerId: `drain-${index}` }));
    for (const { child } of started) child.stdin!.write('go\n');
    const reports = await Promise.all(
      started.map(async ({ lines }) => {
        const line = await lines.next();
        if (line.done) throw new Error('a worker ended without a report');
        return JSON.parse(line.value) as DrainReport;
      }),
    );
    const ids = reports.flatMap((report) => report.ids);
    if (ids.length !== sizes.drainJobs || new Set(ids).size !== ids.length) throw new Error(`${backend.name}, ${workers} workers: ${ids.length} claims (${new Set(ids).size} distinct) of ${sizes.drainJobs} jobs: a job was claimed twice or lost`);
    const seconds = (Math.max(...reports.map((report) => report.endedAt)) - Math.min(...reports.map((report) => report.startedAt))) / 1000;
    return { group: `claims/s: ${sizes.drainJobs} pending jobs drained (claim + finish)`, name: `${backend.name}, ${workers} worker process${workers === 1 ? '' : 'es'} (ms per claim)`, baseline: false, latencyMs: summarize(reports.flatMap((report) => report.claimMs)), requestsPerSecond: sizes.drainJobs / seconds };
  } finally {
    await stopWorkers(started);
    await bus.close();
    await store.close();
    await remove();
  }
}

/** Makes jobs pending one at a time and measures until `claimed` reports each. */
async function scheduleOneByOne(store: Store, bus: EventBus, claimed: (id: string) => Promise<number>): Promise<number[]> {
  const latencies: number[] = [];
  for (let index = 0; index < sizes.latencyJobs; index++) {
    const id = newJobId();
    const start = now();
    const at = claimed(id);
    await store.jobs.create({ id, task: 'bench', runtime: 'auto', limits });
    bus.publish({ job_id: queueTopic, seq: 0, type: 'pending' });
    latencies.push((await at) - start);
  }
  return latencies;
}

async function benchLatency(backend: Backend, workers: number): Promise<Result> {
  const { location, store, bus, remove } = await backend.fresh();
  const started: Worker[] = [];
  const waiting = new Map<string, (at: number) => void>();
  try {
    for (let index = 0; index < workers; index++) started.push(await startWorker({ store: backend.name, location, mode: 'serve', workerId: `serve-${index}` }));
    for (const { lines } of started) {
      void (async () => {
        for await (const line of lines) {
          const notice = JSON.parse(line) as ClaimNotice;
          waiting.get(notice.id)?.(notice.claimedAt);
        }
      })();
    }
    const latencies = await scheduleOneByOne(store, bus, (id) => new Promise((resolve) => waiting.set(id, resolve)));
    return { group: `schedule → start: ${sizes.latencyJobs} jobs made pending one at a time, idle workers`, name: `${backend.name}, ${workers} worker process${workers === 1 ? '' : 'es'}`, baseline: false, latencyMs: summarize(latencies) };
  } finally {
    await stopWorkers(started);
    await bus.close();
    await store.close();
    await remove();
  }
}

/** `workcell serve` on one host: the scheduler in the scheduling process, on SQLite, woken in-process. */
async function benchLatencyInProcess(backend: Backend): Promise<Result> {
  const { store, bus, remove } = await backend.fresh();
  const waiting = new Map<string, (at: number) => void>();
  const scheduler = new Scheduler({
    store: store.jobs,
    workerId: 'in-process',
    concurrency: 4,
    leaseMs: 60_000,
    logger: pino({ level: 'silent' }),
    run: async (job) => {
      waiting.get(job.id)?.(now());
      await store.jobs.finish(job.id, 'in-process', { status: 'complete' });
    },
  });
  const unsubscribe = bus.subscribe(queueTopic, () => scheduler.wake());
  scheduler.start();
  try {
    const latencies = await scheduleOneByOne(store, bus, (id) => new Promise((resolve) => waiting.set(id, resolve)));
    return { group: `schedule → start: ${sizes.latencyJobs} jobs made pending one at a time, idle workers`, name: `${backend.name}, scheduler in the same process (workcell serve)`, baseline: true, latencyMs: summarize(latencies) };
  } finally {
    unsubscribe();
    await scheduler.stop();
    await bus.close();
    await store.close();
    await remove();
  }
}

async function benchRoundTrip(url: string): Promise<Result> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const samples: number[] = [];
    for (let index = 0; index < 500; index++) {
      const start = performance.now();
      await client.query('SELECT 1');
      samples.push(performance.now() - start);
    }
    return { group: `claims/s: ${sizes.drainJobs} pending jobs drained (claim + finish)`, name: 'postgres: SELECT 1 round trip, one connection', baseline: true, latencyMs: summarize(samples), requestsPerSecond: 1000 / summarize(samples).median };
  } finally {
    await client.end();
  }
}

async function main(): Promise<Report> {
  const machine = describeMachine();
  const date = new Date().toISOString();
  const command = ['node', 'bench/scale.ts', ...process.argv.slice(2)].join(' ');
  progress('starting Postgres');
  const cluster = await startPostgres();
  try {
    const sqlite: Backend = {
      name: 'sqlite',
      async fresh() {
        const dir = await mkdtemp(join(tmpdir(), 'workcell-bench-scale-'));
        return { location: dir, store: openSqliteStore(dir), bus: new LocalEventBus(), remove: () => rm(dir, { recursive: true, force: true }) };
      },
    };
    const postgres: Backend = {
      name: 'postgres',
      async fresh() {
        const url = await cluster.createDatabase();
        return { location: url, store: await openPostgresStore(url), bus: await PostgresEventBus.open(url), remove: async () => {} };
      },
    };
    const results: Result[] = [];
    for (const backend of [sqlite, postgres]) {
      for (const workers of workerCounts) {
        progress(`claims: ${backend.name}, ${workers} workers`);
        results.push(await benchDrain(backend, workers));
      }
    }
    results.push(await benchRoundTrip(cluster.url));
    progress('schedule → start: SQLite in one process');
    results.push(await benchLatencyInProcess(sqlite));
    for (const backend of [sqlite, postgres]) {
      for (const workers of workerCounts) {
        progress(`schedule → start: ${backend.name}, ${workers} workers`);
        results.push(await benchLatency(backend, workers));
      }
    }
    machine.loadAverage.end = describeMachine().loadAverage.start;
    return { machine, date, command, results };
  } finally {
    await cluster.stop();
  }
}

await printReport(main, flags.json);
