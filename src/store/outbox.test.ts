// The webhook outbox on a real store: the triggers record every status change of a job with a hook in the same
// transaction, claims keep order per job and respect leases, and ended deliveries are pruned.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { newJobId } from '../util/ids.ts';
import { openSqliteStore } from './sqlite/index.ts';
import type { JobStore, Store, WebhookOutbox } from './types.ts';

const limits = { wall_time_s: 60, max_steps: 10 };
let dir: string;
let opened: Store;
let store: JobStore;
let outbox: WebhookOutbox;

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'workcell-outbox-'));
  opened = openSqliteStore(dir);
  store = opened.jobs;
  outbox = opened.outbox;
});
afterEach(async () => {
  await opened.close();
  rmSync(dir, { recursive: true, force: true });
});

const create = async (hook: { callbackUrl?: string; callbackDefault?: boolean }) => (await store.create({ id: newJobId(), task: 't', runtime: 'auto', limits, ...hook })).job.id;

describe('WebhookOutbox', () => {
  it('records each status change of jobs with a hook, and none of jobs without', async () => {
    const hooked = await create({ callbackUrl: 'https://example.com/hook' });
    const serverHook = await create({ callbackDefault: true });
    const none = await create({});
    for (const id of [hooked, serverHook, none]) {
      expect((await store.claim('w', 60_000))?.id).toBeDefined();
      await store.finish(id, 'w', { status: 'complete', summary: 'ok' });
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
});
