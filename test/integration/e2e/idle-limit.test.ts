// The watchdog through a real job: a command that runs far past the job's idle limit (and inside its own timeout)
// produces no event, so the job is ended with `error` naming the idle limit, its sandbox is destroyed and the
// workspace is still zipped.
import { execFileSync } from 'node:child_process';
import { afterEach, describe, expect, it } from 'vitest';
import { collectEvents, downloadZip, get, post, startTestApp, type TestApp } from '../../helpers/app.ts';

let app: TestApp | undefined;
afterEach(async () => {
  await app?.close();
  app = undefined;
});

describe('the idle limit', () => {
  it('ends a job that makes no progress for idle_time_s with an error naming the limit', async () => {
    app = await startTestApp();
    const started = Date.now();
    const { status, body } = await post<{ job_id: string }>(app, '/schedule', { task: 'wait', model: 'script:long-sleep.json', limits: { idle_time_s: 2 } });
    expect(status).toBe(202);
    let sandboxId = '';
    const events = await collectEvents(app, body.job_id, {
      onEvent: (event) => {
        if (event.type === 'sandbox-ready') sandboxId = String(event.data.sandbox_id);
      },
    });
    const job = await get<{ status: string; error?: string }>(app, `/jobs/${body.job_id}`);
    expect(job.status).toBe('error');
    expect(job.error).toMatch(/idle time limit \(2 s\) exceeded/);
    expect(events.at(-1)?.data).toMatchObject({ status: 'error', error: expect.stringMatching(/idle time limit/) });
    expect(Date.now() - started).toBeLessThan(60_000);
    expect(sandboxId).not.toBe('');
    const survivors = execFileSync('ps', ['-eo', 'args'], { encoding: 'utf8' }).split('\n').filter((line) => line.includes(sandboxId));
    expect(survivors).toEqual([]);
    expect((await downloadZip(app, body.job_id)).get('before.txt')?.content).toBe('written before the long command\n');
  });
});
