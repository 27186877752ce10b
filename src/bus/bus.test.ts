import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { EventLog } from '../jobs/event-log.ts';
import { LocalEventBus } from './local/local-bus.ts';
import type { EventBus, EventNotice } from './types.ts';

describe.each([['local', () => new LocalEventBus()]])('event bus: %s', (_name, open: () => EventBus) => {
  let bus: EventBus;
  let dir: string;
  beforeEach(() => {
    bus = open();
    dir = mkdtempSync(join(tmpdir(), 'workcell-bus-'));
  });
  afterEach(async () => {
    await bus.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("tells each subscriber its own job's notices, in order, until it unsubscribes", async () => {
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
