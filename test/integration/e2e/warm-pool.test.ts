// Jobs on a worker with a warm pool, over real HTTP with real bwrap sandboxes: jobs with the default limits get
// sandboxes started ahead (their detail and sandbox-ready event say so), a job with other limits gets one of its own,
// each job sees only its own workspace, and the pool leaves nothing mounted when the server stops.
import { afterEach, describe, expect, it } from 'vitest';
import { collectEvents, downloadZip, get, post, startTestApp, type TestApp } from '../../helpers/app.ts';
import { sandboxMounts, waitUntil } from '../../helpers/sandbox.ts';

let app: TestApp | undefined;
afterEach(async () => {
  await app?.close();
  app = undefined;
});

describe.runIf(process.getuid?.() === 0)('jobs on a worker with a warm pool', () => {
  it('run in sandboxes started ahead when their limits are the defaults, and in their own otherwise', async () => {
    app = await startTestApp({ poolSize: 2 });
    const pool = app.pool!;
    await waitUntil(async () => pool.stats.ready === 2, 120_000, 'the pool to fill');

    const schedule = async (body: Record<string, unknown>) => {
      const response = await post<{ job_id: string }>(app!, '/schedule', { task: 'write two files', model: 'script:two-files.json', ...body });
      expect(response.status).toBe(202);
      return response.body.job_id;
    };
    const jobs = [await schedule({}), await schedule({}), await schedule({ limits: { pids: 100 } })];
    const sandboxes: string[] = [];
    for (const [index, jobId] of jobs.entries()) {
      const events = await collectEvents(app, jobId);
      const ready = events.find((event) => event.type === 'sandbox-ready')!;
      const detail = await get<{ status: string; isolation: string }>(app, `/jobs/${jobId}`);
      expect(detail.status).toBe('complete');
      const pooled = index < 2;
      expect(ready.data.pooled, jobId).toBe(pooled);
      expect(detail.isolation.includes('warm pool'), detail.isolation).toBe(pooled);
      sandboxes.push(ready.data.sandbox_id as string);
      // Each job's workspace holds what it wrote, and nothing of another job.
      const listing = await get<{ entries: Array<{ name: string }> }>(app, `/jobs/${jobId}/files/`);
      expect(listing.entries.map((entry) => entry.name).sort()).toEqual(['hello.py', 'notes.txt']);
      expect([...(await downloadZip(app, jobId)).keys()]).toContain('hello.py');
    }
    expect(new Set(sandboxes).size).toBe(3);
    expect(pool.stats).toMatchObject({ hits: 2, misses: 1 });
    // The pool refills behind the jobs.
    await waitUntil(async () => pool.stats.ready === 2, 120_000, 'the pool to refill');
    const runDir = app.config.runDir;
    const waiting = pool.readyIds;
    await app.close();
    app = undefined;
    for (const id of [...sandboxes, ...waiting]) expect(sandboxMounts(runDir, id), id).toBe(0);
  });
});
