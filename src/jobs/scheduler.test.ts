import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { newJobId } from '../util/ids.ts';
import { openSqliteStore } from '../store/sqlite/index.ts';
import type { Store, Job } from '../store/types.ts';
import { JobStop, Scheduler } from './scheduler.ts';

const limits = { wall_time_s: 60, max_steps: 10 };
const logger = pino({ level: 'silent' });
let clock = 0;
const n0 = () => ++clock; // strictly increasing creation times, so ids sort in creation order
let dir: string;
let store: Store;
let scheduler: Scheduler | undefined;

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'workcell-scheduler-'));
  store = openSqliteStore(dir);
});
afterEach(async () => {
  await scheduler?.stop();
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

/** A runner whose jobs end when the test says so (or when aborted). */
function controllableRunner() {
  const started: string[] = [];
  const release = new Map<string, () => void>();
  const reasons = new Map<string, unknown>();
  let onStart: (() => void) | undefined;
  const run = (job: Job, signal: AbortSignal) =>
    new Promise<void>((resolve) => {
      started.push(job.id);
      const end = async () => {
        await store.jobs.finish(job.id, 'w1', { status: signal.aborted ? 'cancelled' : 'complete' });
        resolve();
      };
      release.set(job.id, end);
      signal.addEventListener('abort', () => (reasons.set(job.id, signal.reason), end()));
      onStart?.();
    });
  const waitForStarts = (n: number) =>
    new Promise<void>((resolve) => {
      const check = () => (started.length >= n ? resolve() : undefined);
      onStart = check;
      check();
    });
  return { run, started, release, reasons, waitForStarts };
}

describe('Scheduler', () => {
  it('runs at most `concurrency` jobs and takes the next when one ends', async () => {
    const runner = controllableRunner();
    const ids: string[] = [];
    for (const n of [1, 2, 3]) ids.push((await store.jobs.create({ id: newJobId(n0()), task: `t${n}`, runtime: 'auto', limits }, new Date(n))).job.id);
    scheduler = new Scheduler({ store: store.jobs, run: runner.run, workerId: 'w1', concurrency: 2, leaseMs: 60_000, logger, pollMs: 60_000 });
    scheduler.start();
    await runner.waitForStarts(2);
    expect(runner.started).toEqual([ids[0], ids[1]]);
    expect((await store.jobs.get(ids[2]!))?.status).toBe('pending');
    runner.release.get(ids[0]!)!();
    await runner.waitForStarts(3);
    expect(runner.started[2]).toBe(ids[2]);
  });

  it('stops a job whose cancel was requested, at the next heartbeat', async () => {
    const runner = controllableRunner();
    const id = (await store.jobs.create({ id: newJobId(n0()), task: 't', runtime: 'auto', limits })).job.id;
    scheduler = new Scheduler({ store: store.jobs, run: runner.run, workerId: 'w1', concurrency: 1, leaseMs: 1000, logger, pollMs: 60_000 });
    scheduler.start();
    await runner.waitForStarts(1);
    expect(await store.jobs.requestCancel(id)).toBe('requested');
    await expect.poll(async () => (await store.jobs.get(id))?.status, { timeout: 5000 }).toBe('cancelled');
    expect(runner.reasons.get(id)).toBeInstanceOf(JobStop);
    expect((runner.reasons.get(id) as JobStop).kind).toBe('cancel');
  });

  it('ends jobs whose worker died (expired lease)', async () => {
    const id = (await store.jobs.create({ id: newJobId(n0()), task: 't', runtime: 'auto', limits })).job.id;
    await store.jobs.claim('dead-worker', 1, Date.now() - 10_000);
    const runner = controllableRunner();
    scheduler = new Scheduler({ store: store.jobs, run: runner.run, workerId: 'w1', concurrency: 1, leaseMs: 60_000, logger, pollMs: 60_000 });
    scheduler.start();
    await expect.poll(async () => (await store.jobs.get(id))?.status).toBe('error');
    expect((await store.jobs.get(id))?.error).toMatch(/lease expired/);
    expect(runner.started).toEqual([]);
  });

  it('stop() aborts running jobs with a shutdown reason and waits for them', async () => {
    const runner = controllableRunner();
    const id = (await store.jobs.create({ id: newJobId(n0()), task: 't', runtime: 'auto', limits })).job.id;
    scheduler = new Scheduler({ store: store.jobs, run: runner.run, workerId: 'w1', concurrency: 1, leaseMs: 60_000, logger, pollMs: 60_000 });
    scheduler.start();
    await runner.waitForStarts(1);
    await scheduler.stop();
    expect((runner.reasons.get(id) as JobStop).kind).toBe('shutdown');
    expect(scheduler.runningJobIds).toEqual([]);
  });
});
