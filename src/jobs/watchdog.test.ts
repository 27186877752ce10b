import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { LocalEventBus } from '../bus/local/local-bus.ts';
import type { Sandbox } from '../runtimes/types.ts';
import { EventLog } from './event-log.ts';
import type { Job, JobStatus } from '../store/types.ts';
import type { JobStop } from './scheduler.ts';
import { Watchdog, type WatchdogOptions } from './watchdog.ts';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'workcell-watchdog-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const job = (id: string, status: JobStatus = 'running', idle?: number) => ({ id, status, limits: { wall_time_s: 3600, max_steps: 10, ...(idle === undefined ? {} : { idle_time_s: idle }) } }) as unknown as Job;

function fakeSandbox(jobId: string): Sandbox & { destroyed: number } {
  const sandbox = {
    id: `sb-${jobId}`,
    jobId,
    runtime: 'fake',
    isolation: 'none',
    client: undefined as never,
    exited: new Promise<never>(() => {}),
    destroyed: 0,
    destroy: async () => {
      sandbox.destroyed++;
    },
  };
  return sandbox;
}

const bus = new LocalEventBus();

function watchdog(overrides: Partial<WatchdogOptions>) {
  const stops: Array<[string, JobStop]> = [];
  const options: WatchdogOptions = {
    getJob: async () => undefined,
    bus,
    runningJobIds: () => [],
    stopJob: (jobId, reason) => {
      stops.push([jobId, reason]);
      return true;
    },
    liveSandboxes: () => new Map(),
    runtimes: [],
    defaultIdleTimeS: 600,
    logger: { info: () => {}, warn: () => {}, error: () => {} },
    ...overrides,
  };
  return { dog: new Watchdog(options), stops };
}

describe('Watchdog: idle jobs', () => {
  it('ends a running job that has had no event for idle_time_s, with a reason naming the limit', async () => {
    const jobs = new Map([['job_a', job('job_a', 'running', 2)], ['job_b', job('job_b', 'running')]]);
    const live = new Map<string, Sandbox>([['job_a', fakeSandbox('job_a')], ['job_b', fakeSandbox('job_b')]]);
    const { dog, stops } = watchdog({ getJob: async (id) => jobs.get(id), runningJobIds: () => [...jobs.keys()], liveSandboxes: () => live, defaultIdleTimeS: 5 });
    const log = new EventLog('job_a', join(dir, 'a.db'), { bus });
    vi.useFakeTimers({ toFake: ['Date'] });
    try {
      vi.setSystemTime(1_000_000);
      await dog.check(Date.now());
      await dog.check(1_001_900);
      expect(stops).toEqual([]);
      // An event resets the clock.
      vi.setSystemTime(1_001_900);
      log.append('log', 1, { message: 'progress' });
      await dog.check(1_003_800);
      expect(stops).toEqual([]);
      await dog.check(1_003_900);
      expect(stops.map(([id, reason]) => [id, reason.kind, reason.message])).toEqual([['job_a', 'idle', expect.stringMatching(/^idle time limit \(2 s\) exceeded/)]]);
      // Once only; job_b goes by the default (5 s).
      await dog.check(1_004_500);
      expect(stops).toHaveLength(1);
      await dog.check(1_005_000);
      expect(stops.map(([id]) => id)).toEqual(['job_a', 'job_b']);
      expect(stops[1]![1].message).toMatch(/\(5 s\)/);
    } finally {
      vi.useRealTimers();
      log.close();
      dog.stop();
    }
  });

  it('forgets jobs that are no longer running and starts afresh if they come back', async () => {
    let running = ['job_a'];
    const { dog, stops } = watchdog({ getJob: async (id) => job(id, 'running', 1), runningJobIds: () => running, liveSandboxes: () => new Map([['job_a', fakeSandbox('job_a')]]) });
    const start = Date.now();
    await dog.check(start);
    running = [];
    await dog.check(start + 500);
    running = ['job_a'];
    await dog.check(start + 1500);
    expect(stops).toEqual([]);
    await dog.check(start + 2600);
    expect(stops).toHaveLength(1);
    dog.stop();
  });

  it('does not count the time a job waits for its sandbox to start', async () => {
    const live = new Map<string, Sandbox>();
    const { dog, stops } = watchdog({ getJob: async (id) => job(id, 'running', 1), runningJobIds: () => ['job_a'], liveSandboxes: () => live });
    const start = Date.now();
    await dog.check(start);
    await dog.check(start + 5000); // still starting: not idle
    expect(stops).toEqual([]);
    live.set('job_a', fakeSandbox('job_a'));
    await dog.check(start + 5500);
    expect(stops).toEqual([]);
    await dog.check(start + 6600);
    expect(stops.map(([id, reason]) => [id, reason.kind])).toEqual([['job_a', 'idle']]);
    dog.stop();
  });
});

describe('Watchdog: sandboxes without a job', () => {
  it('destroys a live sandbox whose job is not running here, or has ended, and stops the job in the second case', async () => {
    const orphan = fakeSandbox('job_gone');
    const ended = fakeSandbox('job_ended');
    const fine = fakeSandbox('job_fine');
    const live = new Map<string, Sandbox>([['job_gone', orphan], ['job_ended', ended], ['job_fine', fine]]);
    const rows = new Map([['job_ended', job('job_ended', 'complete')], ['job_fine', job('job_fine')], ['job_gone', job('job_gone', 'error')]]);
    const forgotten: string[] = [];
    const { dog, stops } = watchdog({
      getJob: async (id) => rows.get(id),
      runningJobIds: () => ['job_ended', 'job_fine'],
      liveSandboxes: () => live,
      forgetSandbox: (id) => {
        forgotten.push(id);
        live.delete(id);
      },
    });
    await dog.check();
    await Promise.resolve();
    expect(forgotten.sort()).toEqual(['job_ended', 'job_gone']);
    expect([orphan.destroyed, ended.destroyed, fine.destroyed]).toEqual([1, 1, 0]);
    expect(stops.map(([id, reason]) => [id, reason.kind])).toEqual([['job_ended', 'lease-lost']]);
    dog.stop();
  });
});

describe('Watchdog: orphans', () => {
  it('asks every runtime to reap, one pass at a time, and logs failures', async () => {
    const calls: string[] = [];
    const errors: unknown[] = [];
    let release: () => void = () => {};
    const slow = new Promise<void>((resolve) => (release = resolve));
    const { dog } = watchdog({
      runtimes: [
        { name: 'a', reapOrphans: async () => (calls.push('a'), await slow, { dirs: [], processes: [] }) },
        { name: 'b', reapOrphans: () => Promise.reject(new Error('boom')) },
        { name: 'c' },
      ],
      logger: { info: () => {}, warn: () => {}, error: (fields: unknown) => errors.push(fields) },
    });
    const first = dog.reapOrphans();
    const second = dog.reapOrphans();
    expect(second).toBe(first);
    release();
    await first;
    expect(calls).toEqual(['a']);
    expect(errors).toHaveLength(1);
    await dog.reapOrphans();
    expect(calls).toEqual(['a', 'a']);
  });

  it('start() checks and reaps on its timers', async () => {
    vi.useFakeTimers();
    try {
      const reap = vi.fn(async () => ({ dirs: [], processes: [] }));
      const { dog } = watchdog({ runtimes: [{ name: 'x', reapOrphans: reap }], checkIntervalMs: 100, reapIntervalMs: 1000 });
      dog.start();
      await vi.advanceTimersByTimeAsync(2500);
      expect(reap).toHaveBeenCalledTimes(2);
      dog.stop();
      await vi.advanceTimersByTimeAsync(2500);
      expect(reap).toHaveBeenCalledTimes(2);
    } finally {
      vi.useRealTimers();
    }
  });
});
