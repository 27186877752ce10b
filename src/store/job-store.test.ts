import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { newJobId } from '../util/ids.ts';
import { openSqliteStore } from './sqlite/index.ts';
import type { JobStore, NewJob, Store } from './types.ts';

const limits = { wall_time_s: 60, max_steps: 10 };
const newJob = (fields: Omit<NewJob, 'id'>, id = newJobId()): NewJob => ({ id, ...fields });
let dir: string;
let opened: Store;
let store: JobStore;

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'workcell-store-'));
  opened = openSqliteStore(dir);
  store = opened.jobs;
});
afterEach(async () => {
  await opened.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('JobStore', () => {
  it('creates pending jobs and honours idempotency keys', async () => {
    const first = await store.create(newJob({ task: 'a', runtime: 'auto', limits, idempotencyKey: 'k1' }));
    const again = await store.create(newJob({ task: 'different', runtime: 'auto', limits, idempotencyKey: 'k1' }));
    expect(first.created).toBe(true);
    expect(again.created).toBe(false);
    expect(again.job.id).toBe(first.job.id);
    expect(await store.get(first.job.id)).toMatchObject({ status: 'pending', task: 'a', limits, attempts: 0 });
  });

  it('records the caps a job reached once each, kept beside its resource usage', async () => {
    const job = (await store.create(newJob({ task: 'a', runtime: 'auto', limits }))).job;
    await store.recordLimitReached(job.id, 'sandbox_log_mb');
    await store.recordLimitReached(job.id, 'audit_log_mb');
    await store.recordLimitReached(job.id, 'sandbox_log_mb');
    await store.recordResourceUsage(job.id, { cpu_seconds: 1.5, peak_memory_mb: 20 });
    await store.recordLimitReached(job.id, 'context_mb');
    expect((await store.get(job.id))?.resource_usage).toEqual({ limits_reached: ['sandbox_log_mb', 'audit_log_mb', 'context_mb'], cpu_seconds: 1.5, peak_memory_mb: 20 });
  });

  it('claims the oldest pending job once, with a lease', async () => {
    const a = (await store.create(newJob({ task: 'a', runtime: 'auto', limits }, newJobId(1000)), new Date(1000))).job;
    const b = (await store.create(newJob({ task: 'b', runtime: 'auto', limits }, newJobId(2000)), new Date(2000))).job;
    expect((await store.claim('w1', 1000))?.id).toBe(a.id);
    expect((await store.claim('w2', 1000))?.id).toBe(b.id);
    expect(await store.claim('w3', 1000)).toBeUndefined();
    expect(await store.get(a.id)).toMatchObject({ status: 'running', locked_by: 'w1', attempts: 1 });
  });

  it('heartbeats only for the holder and reports cancel requests', async () => {
    const job = (await store.create(newJob({ task: 'a', runtime: 'auto', limits }))).job;
    await store.claim('w1', 1000);
    expect((await store.heartbeat(job.id, 'w2', 1000)).held).toBe(false);
    expect(await store.heartbeat(job.id, 'w1', 1000)).toEqual({ held: true, cancelRequested: false });
    expect(await store.requestCancel(job.id)).toBe('requested');
    expect(await store.heartbeat(job.id, 'w1', 1000)).toEqual({ held: true, cancelRequested: true });
  });

  it('cancels a pending job at once and refuses to cancel a finished one', async () => {
    const job = (await store.create(newJob({ task: 'a', runtime: 'auto', limits }))).job;
    expect(await store.requestCancel(job.id)).toBe('cancelled');
    expect((await store.get(job.id))?.status).toBe('cancelled');
    expect(await store.requestCancel(job.id)).toBe('already-finished');
    expect(await store.claim('w1', 1000)).toBeUndefined();
  });

  it('finishes only jobs the worker holds, once', async () => {
    const job = (await store.create(newJob({ task: 'a', runtime: 'auto', limits }))).job;
    await store.claim('w1', 1000);
    expect(await store.finish(job.id, 'w2', { status: 'complete' })).toBe(false);
    expect(await store.finish(job.id, 'w1', { status: 'complete', summary: 'done' })).toBe(true);
    expect(await store.finish(job.id, 'w1', { status: 'error' })).toBe(false);
    expect(await store.get(job.id)).toMatchObject({ status: 'complete', summary: 'done', locked_by: null });
  });

  it('finds expired leases', async () => {
    const job = (await store.create(newJob({ task: 'a', runtime: 'auto', limits }))).job;
    await store.claim('w1', 1000, 0);
    expect(await store.expiredLeases(500)).toEqual([]);
    expect((await store.expiredLeases(1500)).map((j) => j.id)).toEqual([job.id]);
  });

  it('pages newest first with a cursor and filters by status', async () => {
    const ids: string[] = [];
    for (const n of [1, 2, 3, 4, 5]) ids.push((await store.create(newJob({ task: `t${n}`, runtime: 'auto', limits }, newJobId(n * 1000)), new Date(n * 1000))).job.id);
    const page1 = await store.list({ limit: 2 });
    expect(page1.jobs.map((j) => j.id)).toEqual([ids[4], ids[3]]);
    const page2 = await store.list({ limit: 2, cursor: page1.nextCursor! });
    expect(page2.jobs.map((j) => j.id)).toEqual([ids[2], ids[1]]);
    const page3 = await store.list({ limit: 2, cursor: page2.nextCursor! });
    expect(page3).toEqual({ jobs: [expect.objectContaining({ id: ids[0] })], nextCursor: null });
    await store.requestCancel(ids[0]!);
    expect((await store.list({ limit: 10, status: 'cancelled' })).jobs.map((j) => j.id)).toEqual([ids[0]]);
  });

  it('survives reopening (migrations are applied once)', async () => {
    const job = (await store.create(newJob({ task: 'a', runtime: 'auto', limits }))).job;
    await opened.close();
    opened = openSqliteStore(dir);
    store = opened.jobs;
    expect((await store.get(job.id))?.task).toBe('a');
  });
});
