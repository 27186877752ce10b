import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startPostgres, type PostgresCluster } from '../../test/helpers/postgres.ts';
import { EventLog } from '../jobs/event-log.ts';
import { quietWarning } from './index.ts';
import { LocalEventBus } from './local/local-bus.ts';
import { PostgresEventBus } from './postgres/postgres-bus.ts';
import type { EventBus, EventNotice } from './types.ts';

let cluster: PostgresCluster | undefined;
beforeAll(async () => {
  cluster = await startPostgres();
}, 120_000);
afterAll(async () => {
  await cluster?.stop();
});

/** Waits until `condition` holds: notices from other processes arrive through Postgres, not at once. */
async function until(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 60_000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

const backends: Array<[string, () => Promise<EventBus>]> = [
  ['local', async () => new LocalEventBus()],
  ['postgres', async () => PostgresEventBus.open(cluster!.url)],
];

describe.each(backends)('event bus: %s', (_name, open) => {
  let bus: EventBus;
  let dir: string;
  beforeEach(async () => {
    bus = await open();
    dir = mkdtempSync(join(tmpdir(), 'workcell-bus-'));
  });
  afterEach(async () => {
    await bus.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("tells each subscriber its own job's notices, in order, until it unsubscribes", () => {
    const a: EventNotice[] = [];
    const b: EventNotice[] = [];
    const stopA = bus.subscribe('job_a', (notice) => a.push(notice));
    bus.subscribe('job_b', (notice) => b.push(notice));
    bus.publish({ job_id: 'job_a', seq: 1, type: 'log' });
    bus.publish({ job_id: 'job_b', seq: 1, type: 'log' });
    bus.publish({ job_id: 'job_a', seq: 2, type: 'tool-call' });
    expect(a).toEqual([
      { job_id: 'job_a', seq: 1, type: 'log' },
      { job_id: 'job_a', seq: 2, type: 'tool-call' },
    ]);
    expect(b).toEqual([{ job_id: 'job_b', seq: 1, type: 'log' }]);
    stopA();
    bus.publish({ job_id: 'job_a', seq: 3, type: 'log' });
    expect(a).toHaveLength(2);
  });

  it('is told of every event an EventLog appends, after it is readable', () => {
    const log = new EventLog('job_a', join(dir, 'context.db'), { bus });
    const reader = new EventLog('job_a', join(dir, 'context.db'));
    const seen: Array<{ notice: EventNotice; readable: number }> = [];
    bus.subscribe('job_a', (notice) => seen.push({ notice, readable: reader.list(notice.seq - 1, 1).length }));
    log.append('job-status', 0, { status: 'pending' });
    log.append('log', 1, { message: 'hello' });
    expect(seen).toEqual([
      { notice: { job_id: 'job_a', seq: 1, type: 'job-status' }, readable: 1 },
      { notice: { job_id: 'job_a', seq: 2, type: 'log' }, readable: 1 },
    ]);
    log.close();
    reader.close();
  });
});

describe('event bus: postgres, across processes', () => {
  it("carries notices to other processes' subscribers once each, in order, and never back to the publisher twice", async () => {
    const [a, b] = await Promise.all([PostgresEventBus.open(cluster!.url), PostgresEventBus.open(cluster!.url)]);
    try {
      const atA: EventNotice[] = [];
      const atB: EventNotice[] = [];
      a.subscribe('job_x', (notice) => atA.push(notice));
      b.subscribe('job_x', (notice) => atB.push(notice));
      b.subscribe('job_other', () => atB.push({ job_id: 'wrong', seq: -1, type: 'wrong' }));
      for (let seq = 1; seq <= 50; seq++) a.publish({ job_id: 'job_x', seq, type: 'log' });
      await until(() => atB.length >= 50, 'the notices at the other bus');
      // A notice published after them all arrives after them: nothing more is on its way.
      b.publish({ job_id: 'job_x', seq: 51, type: 'log' });
      await until(() => atA.length >= 51, "the other bus's notice");
      expect(atB.map((notice) => notice.seq)).toEqual(Array.from({ length: 51 }, (_, index) => index + 1));
      expect(atA.map((notice) => notice.seq)).toEqual(Array.from({ length: 51 }, (_, index) => index + 1));
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });

  it('listens again after Postgres restarts, and wakes every follower to read what it may have missed', async () => {
    const errors: Error[] = [];
    const [a, b] = await Promise.all([PostgresEventBus.open(cluster!.url), PostgresEventBus.open(cluster!.url, { onError: (error) => errors.push(error) })]);
    try {
      const atB: EventNotice[] = [];
      b.subscribe('job_y', (notice) => atB.push(notice));
      await cluster!.restart();
      await until(() => atB.some((notice) => notice.type === 'resync'), 'the resync notice after reconnecting');
      expect(atB.find((notice) => notice.type === 'resync')).toEqual({ job_id: 'job_y', seq: 0, type: 'resync' });
      expect(errors.length).toBeGreaterThan(0); // the lost connection was reported
      // a's pool reconnects on its own; its first notify after the restart may be lost with a broken connection.
      let seq = 0;
      await until(() => {
        a.publish({ job_id: 'job_y', seq: ++seq, type: 'log' });
        return atB.some((notice) => notice.type === 'log');
      }, 'a notice through the restarted server');
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });
});

describe('connection trouble in the logs', () => {
  it('is one warning per interval, saying how many were left out', () => {
    const logged: Array<{ unlogged: number }> = [];
    let clock = 0;
    const warn = quietWarning({ warn: (fields: { unlogged: number }) => void logged.push(fields) } as never, 'trouble', 10_000, () => clock);
    for (let i = 0; i < 50; i++) warn(new Error('refused'));
    expect(logged.map((fields) => fields.unlogged)).toEqual([0]);
    clock = 10_000;
    warn(new Error('refused'));
    warn(new Error('refused'));
    expect(logged.map((fields) => fields.unlogged)).toEqual([0, 49]);
  });
});
