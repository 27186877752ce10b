// One worker process of bench/scale.ts, on the store it is given (argv[2]: JSON WorkerOptions). `drain`: on "go"
// (a line on stdin), claims and finishes jobs until none is pending, then prints what it claimed and how long each
// claim took. `serve`: the real Scheduler (4 slots, woken by the Postgres bus's queue notices, polling every second
// as in the server), whose runner only reports the moment it got the job and finishes it; until stdin ends.
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { pino } from 'pino';
import { PostgresEventBus } from '../src/bus/postgres/postgres-bus.ts';
import { queueTopic } from '../src/bus/types.ts';
import { Scheduler } from '../src/jobs/scheduler.ts';
import { openPostgresStore } from '../src/store/postgres/index.ts';
import { openSqliteStore } from '../src/store/sqlite/index.ts';

export interface WorkerOptions {
  store: 'sqlite' | 'postgres';
  /** The SQLite data dir, or the Postgres URL. */
  location: string;
  mode: 'drain' | 'serve';
  workerId: string;
}

export interface DrainReport {
  ids: string[];
  claimMs: number[];
  startedAt: number;
  endedAt: number;
}

export interface ClaimNotice {
  id: string;
  claimedAt: number;
}

const options = JSON.parse(process.argv[2] ?? '{}') as WorkerOptions;
const store = options.store === 'postgres' ? await openPostgresStore(options.location) : openSqliteStore(options.location);
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const leaseMs = 60_000;

if (options.mode === 'drain') {
  process.stdout.write('ready\n');
  await lines.next();
  const report: DrainReport = { ids: [], claimMs: [], startedAt: Date.now(), endedAt: 0 };
  for (;;) {
    const start = performance.now();
    const job = await store.jobs.claim(options.workerId, leaseMs);
    report.claimMs.push(performance.now() - start);
    if (job === undefined) break;
    report.ids.push(job.id);
    await store.jobs.finish(job.id, options.workerId, { status: 'complete' });
  }
  report.endedAt = Date.now();
  report.claimMs.pop(); // the last claim found nothing
  process.stdout.write(`${JSON.stringify(report)}\n`);
} else {
  const scheduler = new Scheduler({
    store: store.jobs,
    workerId: options.workerId,
    concurrency: 4,
    leaseMs,
    logger: pino({ level: 'silent' }),
    run: async (job) => {
      process.stdout.write(`${JSON.stringify({ id: job.id, claimedAt: performance.timeOrigin + performance.now() } satisfies ClaimNotice)}\n`);
      await store.jobs.finish(job.id, options.workerId, { status: 'complete' });
    },
  });
  const bus = options.store === 'postgres' ? await PostgresEventBus.open(options.location) : undefined;
  bus?.subscribe(queueTopic, () => scheduler.wake());
  scheduler.start();
  process.stdout.write('ready\n');
  while (!(await lines.next()).done);
  await scheduler.stop();
  await bus?.close();
}
await store.close();
process.stdin.destroy();
await once(process.stdout.end(), 'finish');
