// The job store, against every implementation (SQLite and a real Postgres): both must give the same Job objects
// and the same answers.
import { beforeEach, describe, expect, it } from 'vitest';
import { storeBackends, useStore } from '../../test/helpers/stores.ts';
import { newJobId } from '../util/ids.ts';
import type { JobStore, NewJob } from './types.ts';

const limits = { wall_time_s: 60, max_steps: 10 };
const newJob = (fields: Omit<NewJob, 'id'>, id = newJobId()): NewJob => ({ id, ...fields });

describe.each(storeBackends())('JobStore (%s)', (_name, backend) => {
  const fixture = useStore(backend);
  let store: JobStore;
  beforeEach(() => {
    store = fixture.store.jobs;
  });

  it('creates pending jobs and honours idempotency keys', async () => {
    const first = await store.create(newJob({ task: 'a', runtime: 'auto', limits, idempotencyKey: 'k1' }));
    const again = await store.create(newJob({ task: 'different', runtime: 'auto', limits, idempotencyKey: 'k1' }));
    expect(first.created).toBe(true);
    expect(again.created).toBe(false);
    expect(again.job.id).toBe(first.job.id);
    expect(await store.get(first.job.id)).toMatchObject({ status: 'pending', task: 'a', limits, attempts: 0 });
  });

  it('keeps idempotency keys per owner', async () => {
    const mine = await store.create(newJob({ task: 'a', runtime: 'auto', limits, idempotencyKey: 'k', owner: 'key_0000000000000001' }));
    const theirs = await store.create(newJob({ task: 'b', runtime: 'auto', limits, idempotencyKey: 'k', owner: 'key_0000000000000002' }));
    expect(theirs.created).toBe(true);
    expect((await store.findByIdempotencyKey('k', 'key_0000000000000001'))?.id).toBe(mine.job.id);
    expect((await store.findByIdempotencyKey('k', 'key_0000000000000002'))?.id).toBe(theirs.job.id);
    expect(await store.findByIdempotencyKey('k', null)).toBeUndefined();
  });

  it('reads every field back as the same Job, field for field and in order', async () => {
    const id = newJobId(5000);
    const input: NewJob = {
      id,
      task: 'build it',
      model: 'openai:gpt-5',
      runtime: 'bwrap',
      limits: { wall_time_s: 60, max_steps: 10, memory_mb: 512, cpus: 0.5 },
      metadata: { zeta: '1', alpha: '2' },
      owner: 'key_0000000000000001',
      callbackUrl: 'https://example.com/hook',
      forkedFrom: newJobId(4000),
      network: { allow: ['example.com'] },
      contextWindow: 65_536,
      inputs: { git: { url: 'https://example.com/repo.git', ref: 'main', depth: 1 } },
    };
    const { job } = await store.create(input, new Date(5000));
    const expected = {
      id,
      status: 'pending',
      task: 'build it',
      model: 'openai:gpt-5',
      runtime: 'bwrap',
      limits: input.limits,
      metadata: input.metadata,
      created_at: new Date(5000).toISOString(),
      started_at: null,
      finished_at: null,
      error: null,
      summary: null,
      runtime_used: null,
      isolation: null,
      model_used: null,
      steps: 0,
      input_tokens: 0,
      output_tokens: 0,
      attempts: 0,
      cancel_requested: false,
      locked_by: null,
      owner: 'key_0000000000000001',
      resource_usage: null,
      network: { allow: ['example.com'] },
      context_window: 65_536,
      inputs: input.inputs,
      run: 1,
      forked_from: input.forkedFrom,
      callback_url: 'https://example.com/hook',
    };
    expect(job).toEqual(expected);
    expect(Object.keys(job)).toEqual(Object.keys(expected));
    const read = (await store.get(id))!;
    expect(read).toEqual(expected);
    // The client's JSON comes back with its keys in the client's order.
    expect(Object.keys(read.metadata)).toEqual(['zeta', 'alpha']);
    expect(Object.keys(read.limits)).toEqual(['wall_time_s', 'max_steps', 'memory_mb', 'cpus']);
    // The empty defaults.
    const bare = (await store.create(newJob({ task: 'b', runtime: 'auto', limits }))).job;
    expect(bare).toMatchObject({ metadata: {}, network: { allow: [] }, inputs: {}, callback_url: null, forked_from: null, context_window: null, model: null });
  });

  it('records progress', async () => {
    const job = (await store.create(newJob({ task: 'a', runtime: 'auto', limits }))).job;
    await store.update(job.id, { runtime_used: 'bwrap', isolation: 'namespaces', model_used: 'm', steps: 3, input_tokens: 3_000_000_000, output_tokens: 7 });
    await store.update(job.id, {});
    expect(await store.get(job.id)).toMatchObject({ runtime_used: 'bwrap', isolation: 'namespaces', model_used: 'm', steps: 3, input_tokens: 3_000_000_000, output_tokens: 7 });
  });

  it('records the caps a job reached once each, kept beside its resource usage', async () => {
    const job = (await store.create(newJob({ task: 'a', runtime: 'auto', limits }))).job;
    await store.recordLimitReached(job.id, 'sandbox_log_mb');
    await store.recordLimitReached(job.id, 'audit_log_mb');
    await store.recordLimitReached(job.id, 'sandbox_log_mb');
    await store.recordResourceUsage(job.id, { cpu_seconds: 1.5, peak_memory_mb: 20 });
    await store.recordLimitReached(job.id, 'context_mb');
    expect((await store.get(job.id))?.resource_usage).toEqual({ limits_reached: ['sandbox_log_mb', 'audit_log_mb', 'context_mb'], cpu_seconds: 1.5, peak_memory_mb: 20 });
    await store.recordResourceUsage(job.id, { peak_memory_mb: 30 });
    expect((await store.get(job.id))?.resource_usage).toEqual({ limits_reached: ['sandbox_log_mb', 'audit_log_mb', 'context_mb'], cpu_seconds: 1.5, peak_memory_mb: 30 });
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
    expect(await store.get(job.id)).toMatchObject({ status: 'cancelled', error: 'cancelled before it started' });
    expect(await store.requestCancel(job.id)).toBe('already-finished');
    expect(await store.requestCancel(newJobId())).toBe('already-finished');
    expect(await store.claim('w1', 1000)).toBeUndefined();
  });

  it('finishes only jobs the worker holds, once', async () => {
    const job = (await store.create(newJob({ task: 'a', runtime: 'auto', limits }))).job;
    await store.claim('w1', 1000);
    expect(await store.finish(job.id, 'w2', { status: 'complete' })).toBe(false);
    expect(await store.finish(job.id, 'w1', { status: 'complete', summary: 'done' })).toBe(true);
    expect(await store.finish(job.id, 'w1', { status: 'error' })).toBe(false);
    expect(await store.get(job.id)).toMatchObject({ status: 'complete', summary: 'done', locked_by: null });
    // No worker: any job not yet ended.
    const other = (await store.create(newJob({ task: 'b', runtime: 'auto', limits }))).job;
    expect(await store.finish(other.id, null, { status: 'error', error: 'gone' })).toBe(true);
    expect(await store.get(other.id)).toMatchObject({ status: 'error', error: 'gone' });
  });

  it('finds expired leases and requeues a job only for the worker that held it', async () => {
    const job = (await store.create(newJob({ task: 'a', runtime: 'auto', limits }))).job;
    await store.claim('w1', 1000, 0);
    expect(await store.expiredLeases(500)).toEqual([]);
    expect((await store.expiredLeases(1500)).map((j) => j.id)).toEqual([job.id]);
    expect(await store.requeue(job.id, 'w2')).toBe(false);
    expect(await store.requeue(job.id, 'w1')).toBe(true);
    expect(await store.requeue(job.id, 'w1')).toBe(false);
    expect(await store.get(job.id)).toMatchObject({ status: 'pending', locked_by: null, attempts: 1 });
    expect(await store.claim('w2', 1000)).toMatchObject({ id: job.id, attempts: 2 });
  });

  it('pages newest first with a cursor and filters by status and owner', async () => {
    const ids: string[] = [];
    for (const n of [1, 2, 3, 4, 5]) ids.push((await store.create(newJob({ task: `t${n}`, runtime: 'auto', limits, owner: n === 3 ? 'key_0000000000000003' : null }, newJobId(n * 1000)), new Date(n * 1000))).job.id);
    const page1 = await store.list({ limit: 2 });
    expect(page1.jobs.map((j) => j.id)).toEqual([ids[4], ids[3]]);
    const page2 = await store.list({ limit: 2, cursor: page1.nextCursor! });
    expect(page2.jobs.map((j) => j.id)).toEqual([ids[2], ids[1]]);
    const page3 = await store.list({ limit: 2, cursor: page2.nextCursor! });
    expect(page3).toEqual({ jobs: [expect.objectContaining({ id: ids[0] })], nextCursor: null });
    await store.requestCancel(ids[0]!);
    expect((await store.list({ limit: 10, status: 'cancelled' })).jobs.map((j) => j.id)).toEqual([ids[0]]);
    expect((await store.list({ limit: 10, owner: 'key_0000000000000003' })).jobs.map((j) => j.id)).toEqual([ids[2]]);
  });

  it('keeps each run through status changes and reopening', async () => {
    const job = (await store.create(newJob({ task: 'a', runtime: 'auto', limits }), new Date(1000))).job;
    expect(await store.reopen(job.id, { message: 'more', messageSeq: 9, startSeq: 8 })).toBeUndefined(); // not finished
    await store.claim('w1', 1000, 2000);
    await store.update(job.id, { steps: 3 });
    await store.finish(job.id, 'w1', { status: 'complete', summary: 'first' }, new Date(3000));
    const reopened = await store.reopen(job.id, { message: 'more', messageSeq: 9, startSeq: 8 }, new Date(4000));
    expect(reopened).toMatchObject({ status: 'pending', run: 2, attempts: 0, started_at: null, finished_at: null, summary: null, steps: 3, cancel_requested: false });
    expect(await store.reopen(job.id, { message: 'again', messageSeq: 10, startSeq: 10 })).toBeUndefined(); // of two, one reopens
    await store.claim('w2', 1000, 5000);
    await store.update(job.id, { steps: 5 });
    await store.finish(job.id, 'w2', { status: 'error', error: 'broke' }, new Date(6000));
    expect(await store.runs(job.id)).toEqual([
      expect.objectContaining({ run: 1, status: 'complete', message: null, message_seq: null, start_seq: 0, steps_before: 0, created_at: new Date(1000).toISOString(), started_at: new Date(2000).toISOString(), finished_at: new Date(3000).toISOString(), summary: 'first', error: null, steps: 3 }),
      expect.objectContaining({ run: 2, status: 'error', message: 'more', message_seq: 9, start_seq: 8, steps_before: 3, created_at: new Date(4000).toISOString(), started_at: new Date(5000).toISOString(), finished_at: new Date(6000).toISOString(), summary: null, error: 'broke', steps: 2 }),
    ]);
    expect(await store.getRun(job.id, 2)).toMatchObject({ run: 2, status: 'error' });
    expect(await store.getRun(job.id, 3)).toBeUndefined();
  });

  it('deletes only finished jobs, with their runs, and finds them by when they ended', async () => {
    const live = (await store.create(newJob({ task: 'a', runtime: 'auto', limits }))).job;
    const early = (await store.create(newJob({ task: 'b', runtime: 'auto', limits }))).job;
    const late = (await store.create(newJob({ task: 'c', runtime: 'auto', limits }))).job;
    await store.finish(late.id, null, { status: 'complete' }, new Date('2026-03-01T00:00:00Z'));
    await store.finish(early.id, null, { status: 'complete' }, new Date('2026-01-01T00:00:00Z'));
    expect((await store.finishedBefore(new Date('2026-04-01T00:00:00Z'), 10)).map((j) => j.id)).toEqual([early.id, late.id]);
    expect((await store.finishedBefore(new Date('2026-02-01T00:00:00Z'), 10)).map((j) => j.id)).toEqual([early.id]);
    expect((await store.finishedBefore(new Date('2026-04-01T00:00:00Z'), 1)).map((j) => j.id)).toEqual([early.id]);
    expect(await store.deleteFinished(live.id)).toBe(false);
    expect(await store.deleteFinished(early.id)).toBe(true);
    expect(await store.deleteFinished(early.id)).toBe(false);
    expect(await store.get(early.id)).toBeUndefined();
    expect(await store.runs(early.id)).toEqual([]);
    expect(await store.runs(live.id)).toHaveLength(1);
  });

  it('survives reopening (migrations are applied once)', async () => {
    const job = (await store.create(newJob({ task: 'a', runtime: 'auto', limits }))).job;
    store = (await fixture.reopen()).jobs;
    expect((await store.get(job.id))?.task).toBe('a');
  });
});
