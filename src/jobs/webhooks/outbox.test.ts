// The webhook outbox on a real store: the triggers record every status change of a job with a hook in the same
// transaction, claims keep order per job and respect leases, and ended deliveries are pruned.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { newJobId } from '../../util/ids.ts';
import { JobStore } from '../job-store.ts';
import { WebhookOutbox } from './outbox.ts';

const limits = { wall_time_s: 60, max_steps: 10 };
let dir: string;
let store: JobStore;
let outbox: WebhookOutbox;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'workcell-outbox-'));
  store = new JobStore(dir);
  outbox = new WebhookOutbox(store.database);
});
afterEach(() => {
  store.close();
  rmSync(dir, { recursive: true, force: true });
});

const create = (hook: { callbackUrl?: string; callbackDefault?: boolean }) => store.create({ id: newJobId(), task: 't', runtime: 'auto', limits, ...hook }).job.id;

describe('WebhookOutbox', () => {
  it('records each status change of jobs with a hook, and none of jobs without', () => {
    const hooked = create({ callbackUrl: 'https://example.com/hook' });
    const serverHook = create({ callbackDefault: true });
    const none = create({});
    for (const id of [hooked, serverHook, none]) {
      expect(store.claim('w', 60_000)?.id).toBeDefined();
      store.finish(id, 'w', { status: 'complete', summary: 'ok' });
    }
    expect(outbox.forJob(hooked).map((row) => [row.status, row.previous_status, row.url])).toEqual([
      ['pending', null, 'https://example.com/hook'],
      ['running', 'pending', 'https://example.com/hook'],
      ['complete', 'running', 'https://example.com/hook'],
    ]);
    expect(outbox.forJob(serverHook).map((row) => [row.status, row.url])).toEqual([
      ['pending', null],
      ['running', null],
      ['complete', null],
    ]);
    expect(outbox.forJob(none)).toEqual([]);
    expect(new Set([...outbox.forJob(hooked), ...outbox.forJob(serverHook)].map((row) => row.event_id)).size).toBe(6);
  });

  it("hands out only each job's oldest pending delivery, respects leases and retry times", () => {
    const a = create({ callbackUrl: 'https://example.com/a' });
    const b = create({ callbackUrl: 'https://example.com/b' });
    store.requestCancel(a); // a: pending, then cancelled
    const first = outbox.claim('w1', 10, 1000, 5000);
    expect(first.map((row) => [row.job_id, row.status])).toEqual([
      [a, 'pending'],
      [b, 'pending'],
    ]);
    // Leased: nobody else gets them, and a's next change waits for its first.
    expect(outbox.claim('w2', 10, 2000, 6000)).toEqual([]);
    outbox.attemptFailed(first[0]!.id, 'w1', 'HTTP 503', 3000, new Date(2000));
    outbox.delivered(first[1]!.id, 'w1', new Date(2000));
    expect(outbox.claim('w2', 10, 2500, 6000)).toEqual([]); // a's retry is not due yet
    const retry = outbox.claim('w2', 10, 3000, 7000);
    expect(retry.map((row) => [row.job_id, row.status, row.attempts])).toEqual([[a, 'pending', 1]]);
    // A worker that died: its lease runs out and another takes the delivery.
    expect(outbox.claim('w3', 10, 7001, 9000).map((row) => row.id)).toEqual([retry[0]!.id]);
    // The stale worker's report changes nothing.
    outbox.delivered(retry[0]!.id, 'w2', new Date(7002));
    expect(outbox.forJob(a)[0]?.state).toBe('pending');
    outbox.delivered(retry[0]!.id, 'w3', new Date(7002));
    expect(outbox.claim('w3', 10, 7003, 9000).map((row) => [row.job_id, row.status])).toEqual([[a, 'cancelled']]);
  });

  it('prunes deliveries that ended before the cutoff, never pending ones', () => {
    const a = create({ callbackUrl: 'https://example.com/a' });
    const [row] = outbox.claim('w', 1, 0, 1000);
    outbox.delivered(row!.id, 'w', new Date('2026-01-01T00:00:00Z'));
    store.requestCancel(a);
    expect(outbox.prune(new Date('2026-02-01T00:00:00Z'))).toBe(1);
    expect(outbox.forJob(a).map((r) => r.status)).toEqual(['cancelled']);
    expect(outbox.nextDue()).toBe(0);
  });
});
