// The webhook outbox on a real store, against every implementation (SQLite and a real Postgres): the triggers
// record every status change of a job with a hook in the same transaction, claims keep order per job and respect
// leases, and ended deliveries are pruned.
import { beforeEach, describe, expect, it } from 'vitest';
import { storeBackends, useStore } from '../../test/helpers/stores.ts';
import { newJobId } from '../util/ids.ts';
import type { JobStore, WebhookOutbox } from './types.ts';

const limits = { wall_time_s: 60, max_steps: 10 };

describe.each(storeBackends())('WebhookOutbox (%s)', (_name, backend) => {
  const fixture = useStore(backend);
  let store: JobStore;
  let outbox: WebhookOutbox;
  beforeEach(() => {
    ({ jobs: store, outbox } = fixture.store);
  });

  const create = async (hook: { callbackUrl?: string; callbackDefault?: boolean }) => (await store.create({ id: newJobId(), task: 't', runtime: 'auto', limits, ...hook })).job.id;

  it('records each status change of jobs with a hook, and none of jobs without', async () => {
    const hooked = await create({ callbackUrl: 'https://example.com/hook' });
    const serverHook = await create({ callbackDefault: true });
    const none = await create({});
    // Claimed in id order, which for ids made in one millisecond is not the order they were made in.
    for (let claims = 0; claims < 3; claims++) {
      const claimed = await store.claim('w', 60_000);
      expect(claimed).toBeDefined();
      await store.finish(claimed!.id, 'w', { status: 'complete', summary: 'ok' });
    }
    expect((await outbox.forJob(hooked)).map((row) => [row.status, row.previous_status, row.url])).toEqual([
      ['pending', null, 'https://example.com/hook'],
      ['running', 'pending', 'https://example.com/hook'],
      ['complete', 'running', 'https://example.com/hook'],
    ]);
    expect((await outbox.forJob(serverHook)).map((row) => [row.status, row.url])).toEqual([
      ['pending', null],
      ['running', null],
      ['complete', null],
    ]);
    expect(await outbox.forJob(none)).toEqual([]);
    expect(new Set([...(await outbox.forJob(hooked)), ...(await outbox.forJob(serverHook))].map((row) => row.event_id)).size).toBe(6);
  });

  it("hands out only each job's oldest pending delivery, respects leases and retry times", async () => {
    const a = await create({ callbackUrl: 'https://example.com/a' });
    const b = await create({ callbackUrl: 'https://example.com/b' });
    (await store.requestCancel(a)); // a: pending, then cancelled
    const first = await outbox.claim('w1', 10, 1000, 5000);
    expect(first.map((row) => [row.job_id, row.status])).toEqual([
      [a, 'pending'],
      [b, 'pending'],
    ]);
    // Leased: nobody else gets them, and a's next change waits for its first.
    expect(await outbox.claim('w2', 10, 2000, 6000)).toEqual([]);
    await outbox.attemptFailed(first[0]!.id, 'w1', 'HTTP 503', 3000, new Date(2000));
    await outbox.delivered(first[1]!.id, 'w1', new Date(2000));
    expect(await outbox.claim('w2', 10, 2500, 6000)).toEqual([]); // a's retry is not due yet
    const retry = await outbox.claim('w2', 10, 3000, 7000);
    expect(retry.map((row) => [row.job_id, row.status, row.attempts])).toEqual([[a, 'pending', 1]]);
    // A worker that died: its lease runs out and another takes the delivery.
    expect((await outbox.claim('w3', 10, 7001, 9000)).map((row) => row.id)).toEqual([retry[0]!.id]);
    // The stale worker's report changes nothing.
    await outbox.delivered(retry[0]!.id, 'w2', new Date(7002));
    expect((await outbox.forJob(a))[0]?.state).toBe('pending');
    await outbox.delivered(retry[0]!.id, 'w3', new Date(7002));
    expect((await outbox.claim('w3', 10, 7003, 9000)).map((row) => [row.job_id, row.status])).toEqual([[a, 'cancelled']]);
  });

  it('prunes deliveries that ended before the cutoff, never pending ones', async () => {
    const a = await create({ callbackUrl: 'https://example.com/a' });
    const [row] = await outbox.claim('w', 1, 0, 1000);
    await outbox.delivered(row!.id, 'w', new Date('2026-01-01T00:00:00Z'));
    await store.requestCancel(a);
    expect(await outbox.prune(new Date('2026-02-01T00:00:00Z'))).toBe(1);
    expect((await outbox.forJob(a)).map((r) => r.status)).toEqual(['cancelled']);
    expect(await outbox.nextDue()).toBe(0);
  });

  it('writes event ids and times in one format, follows a job through its runs, and outlives it', async () => {
    const before = new Date().toISOString();
    const id = await create({ callbackUrl: 'https://example.com/hook' });
    await store.finish(id, null, { status: 'complete', summary: 'ok' });
    await store.reopen(id, { message: 'more', messageSeq: 3, startSeq: 2 });
    await store.finish(id, null, { status: 'error', error: 'broke' });
    expect(await store.deleteFinished(id)).toBe(true);
    const rows = await outbox.forJob(id);
    expect(rows.map((row) => [row.status, row.previous_status, row.run, row.summary, row.error])).toEqual([
      ['pending', null, 1, null, null],
      ['complete', 'pending', 1, 'ok', null],
      ['pending', 'complete', 2, null, null],
      ['error', 'pending', 2, null, 'broke'],
    ]);
    for (const row of rows) {
      expect(row.event_id).toMatch(/^evt_[0-9a-f]{32}$/);
      expect(row.time).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
      expect(row.time >= before && row.time <= new Date().toISOString()).toBe(true);
      expect(row).toMatchObject({ state: 'pending', attempts: 0, next_attempt_at: 0, last_error: null, done_at: null, locked_by: null, lease_expires_at: null });
    }
  });

  it('says when the next delivery is due: its retry time or the end of its lease', async () => {
    expect(await outbox.nextDue()).toBeUndefined();
    await create({ callbackUrl: 'https://example.com/a' });
    const [row] = await outbox.claim('w', 1, 1000, 5000);
    expect(await outbox.nextDue()).toBe(5000);
    await outbox.attemptFailed(row!.id, 'w', 'HTTP 500', 9000, new Date(2000));
    expect(await outbox.nextDue()).toBe(9000);
    const [again] = await outbox.claim('w', 1, 9000, 12_000);
    await outbox.release(again!.id, 'w');
    expect((await outbox.forJob(again!.job_id))[0]).toMatchObject({ attempts: 1, locked_by: null, lease_expires_at: null, last_error: 'HTTP 500' });
    await outbox.attemptFailed(again!.id, 'w', 'not held', undefined, new Date(9500)); // released: nothing changes
    const [last] = await outbox.claim('w', 1, 9000, 12_000);
    await outbox.attemptFailed(last!.id, 'w', 'HTTP 500', undefined, new Date(10_000));
    expect((await outbox.forJob(last!.job_id))[0]).toMatchObject({ state: 'failed', attempts: 2, done_at: new Date(10_000).toISOString() });
    expect(await outbox.nextDue()).toBeUndefined();
  });
});
