// A job's life after it ends, over real HTTP to a real server with bwrap sandboxes: a message continues the finished
// job (same workspace, same history: the model is a real HTTP server speaking the OpenAI protocol, so the test reads
// the prompt the new run sent), `from_job` forks a new job from a finished one's workspace, and DELETE removes a
// finished job with its files. Each with the refusals a client can run into.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { collectEvents, downloadZip, get, post, startTestApp, type TestApp } from '../../helpers/app.ts';
import { startOpenAICompatibleServer, type OpenAICompatibleServer, type Reply } from '../../helpers/openai-compatible-server.ts';

interface Run {
  run: number;
  status: string;
  message: string | null;
  message_event_id: number | null;
  steps: number;
  summary: string | null;
  started_at: string | null;
  finished_at: string | null;
}
interface Detail {
  status: string;
  error: string | null;
  run: number;
  runs: Run[];
  from_job: string | null;
  usage: { steps: number };
  artifacts_url?: string;
}

let app: TestApp | undefined;
let llm: OpenAICompatibleServer | undefined;
afterEach(async () => {
  await app?.close();
  await llm?.close();
  app = undefined;
  llm = undefined;
});

const shell = (id: string, command: string): Reply => ({ tool_calls: [{ id, name: 'shell', arguments: { command } }] });
const finish = (id: string, summary: string): Reply => ({ tool_calls: [{ id, name: 'finish', arguments: { summary } }] });

async function schedule(body: Record<string, unknown>): Promise<string> {
  const response = await post<{ job_id: string }>(app!, '/schedule', body);
  expect(response.status, JSON.stringify(response.body)).toBe(202);
  return response.body.job_id;
}

async function send(jobId: string, text: string) {
  return post<{ job_id: string; event_id: number; run: number; reopened: boolean; detail?: string }>(app!, `/jobs/${jobId}/messages`, { text });
}

async function remove(jobId: string): Promise<{ status: number; body: string }> {
  const response = await fetch(`${app!.url}/jobs/${jobId}`, { method: 'DELETE' });
  return { status: response.status, body: await response.text() };
}

describe('continuing a finished job', () => {
  it('runs again on the same workspace with its whole history, the message read at the first step of the new run', async () => {
    const replies = [shell('c1', 'echo one > a.txt && echo FIRST-RUN-OUTPUT'), finish('c2', 'wrote a.txt'), shell('c3', 'cat a.txt && echo two >> a.txt'), finish('c4', 'appended two')];
    llm = await startOpenAICompatibleServer((_request, index) => replies[index] ?? finish(`late${index}`, 'nothing more'));
    app = await startTestApp({ model: 'openai-compatible:test-model', openaiCompatibleBaseUrl: llm.baseUrl });
    const jobId = await schedule({ task: 'write a.txt' });
    const first = await collectEvents(app, jobId);
    expect((await get<Detail>(app, `/jobs/${jobId}`)).status).toBe('complete');
    expect((await downloadZip(app, jobId)).get('a.txt')?.content).toBe('one\n');

    const sent = await send(jobId, 'now append two to a.txt');
    expect(sent.status).toBe(202);
    expect(sent.body).toMatchObject({ job_id: jobId, run: 2, reopened: true });
    const second = await collectEvents(app, jobId, { lastEventId: first.at(-1)!.id });
    const detail = await get<Detail>(app, `/jobs/${jobId}`);
    expect(detail.status, detail.error ?? '').toBe('complete');
    expect(detail.run).toBe(2);
    expect(detail.runs.map((run) => [run.run, run.status, run.message, run.steps, run.summary])).toEqual([
      [1, 'complete', null, 2, 'wrote a.txt'],
      [2, 'complete', 'now append two to a.txt', 2, 'appended two'],
    ]);
    expect(detail.runs[1]?.message_event_id).toBe(sent.body.event_id);
    expect(detail.usage.steps).toBe(4);

    // The new run's events: reopened, the message, running, its steps numbered on from the first run's, the end.
    const statuses = second.filter((event) => event.type === 'job-status').map((event) => [event.data.status, event.data.run]);
    expect(statuses).toEqual([
      ['pending', 2],
      ['running', 2],
      ['complete', 2],
    ]);
    expect(second.find((event) => event.type === 'user-message')?.data).toMatchObject({ text: 'now append two to a.txt', run: 2 });
    expect(second.filter((event) => event.type === 'model-turn').map((event) => event.step)).toEqual([3, 4]);
    // Same workspace: the first run's file was there, and the zip is the second run's.
    expect(second.find((event) => event.type === 'tool-result')?.data.output).toContain('one');
    expect((await downloadZip(app, jobId)).get('a.txt')?.content).toBe('one\ntwo\n');

    // The first prompt of run 2 holds the task, what run 1 did and said, and the message, in that order.
    const prompt = JSON.stringify(llm.requests[2]?.body.messages);
    const at = (text: string) => prompt.indexOf(text);
    for (const text of ['write a.txt', 'FIRST-RUN-OUTPUT', 'wrote a.txt', 'now append two to a.txt']) expect(at(text), text).toBeGreaterThan(-1);
    expect(at('write a.txt')).toBeLessThan(at('FIRST-RUN-OUTPUT'));
    expect(at('FIRST-RUN-OUTPUT')).toBeLessThan(at('now append two to a.txt'));
    expect(llm.requests).toHaveLength(4);

    // Followed from the start, the stream goes on through both runs and ends with the latest; from its end, at once.
    const all = await collectEvents(app, jobId);
    expect(all.filter((event) => event.type === 'job-status').map((event) => event.data.status)).toEqual(['pending', 'running', 'complete', 'pending', 'running', 'complete']);
    expect(await collectEvents(app, jobId, { lastEventId: all.at(-1)!.id })).toEqual([]);
  });

  it('continues a cancelled job, and of two messages at once one reopens the job and the other joins that run', async () => {
    app = await startTestApp();
    const jobId = await schedule({ task: 'sleep', model: 'script:long-sleep.json' });
    await expect.poll(async () => (await get<Detail>(app!, `/jobs/${jobId}`)).status, { timeout: 60_000 }).toBe('running');
    expect((await post(app, `/jobs/${jobId}/cancel`, {})).status).toBe(202);
    await collectEvents(app, jobId);
    expect((await get<Detail>(app, `/jobs/${jobId}`)).status).toBe('cancelled');

    const [a, b] = await Promise.all([send(jobId, 'first message'), send(jobId, 'second message')]);
    expect([a.status, b.status]).toEqual([202, 202]);
    expect([a.body.reopened, b.body.reopened].sort()).toEqual([false, true]);
    expect([a.body.run, b.body.run]).toEqual([2, 2]);
    const detail = await get<Detail>(app, `/jobs/${jobId}`);
    expect(detail.run).toBe(2);
    expect(detail.runs).toHaveLength(2);
    expect(detail.runs[0]?.status).toBe('cancelled');
    // Stop it again: the script sleeps.
    await post(app, `/jobs/${jobId}/cancel`, {});
    await expect.poll(async () => (await get<Detail>(app!, `/jobs/${jobId}`)).status, { timeout: 60_000 }).toBe('cancelled');
  });

  it('refuses an empty, oversized or malformed message, and a message to a job that does not exist', async () => {
    app = await startTestApp();
    const jobId = await schedule({ task: 'two files', model: 'script:two-files.json' });
    await collectEvents(app, jobId);
    for (const body of [{ text: '   ' }, { text: 'x'.repeat(200_000) }, { txt: 'typo' }, {}]) {
      const response = await post<{ detail: string }>(app, `/jobs/${jobId}/messages`, body);
      expect(response.status, JSON.stringify(body).slice(0, 50)).toBeGreaterThanOrEqual(400);
      expect(response.status).toBeLessThan(500);
    }
    expect((await send('job_00000000000000000000000000', 'hello')).status).toBe(404);
    expect((await send('../etc', 'hello')).status).toBe(404);
    // Nothing reopened it.
    expect((await get<Detail>(app, `/jobs/${jobId}`)).runs).toHaveLength(1);
  });
});

describe('forking a job', () => {
  it("starts a new job from a finished job's final workspace, and refuses a job that is not finished or not there", async () => {
    app = await startTestApp();
    const source = await schedule({ task: 'two files', model: 'script:two-files.json' });
    await collectEvents(app, source);
    const fork = await schedule({ task: 'two files again', model: 'script:two-files.json', from_job: source });
    const events = await collectEvents(app, fork);
    expect(events[0]?.data).toMatchObject({ status: 'pending', from_job: source });
    const detail = await get<Detail>(app, `/jobs/${fork}`);
    expect(detail.status, detail.error ?? '').toBe('complete');
    expect(detail.from_job).toBe(source);
    // The first shell call of two-files.json lists the workspace: the fork starts with the source's files.
    const listing = String(events.find((event) => event.type === 'tool-result')?.data.output);
    expect(listing).toMatch(/hello\.py|notes\.txt/);
    // It started from files, so its zip has the patch of what it changed: nothing (it wrote the same files again).
    const zip = await downloadZip(app, fork);
    expect([...zip.keys()].sort()).toEqual(['changes.patch', 'hello.py', 'notes.txt']);
    expect(zip.get('changes.patch')?.content).toBe('');

    const running = await schedule({ task: 'sleep', model: 'script:long-sleep.json' });
    const busy = await post<{ detail: string }>(app, '/schedule', { task: 'x', from_job: running });
    expect(busy.status).toBe(409);
    expect(busy.body.detail).toMatch(/fork starts from a finished job/);
    const missing = await post<{ detail: string }>(app, '/schedule', { task: 'x', from_job: 'job_00000000000000000000000000' });
    expect(missing.status).toBe(400);
    expect(missing.body.detail).toMatch(/from_job: no job with id/);
    await post(app, `/jobs/${running}/cancel`, {});
  });
});

describe('deleting a job', () => {
  it('removes a finished job and its files; refuses a live one (409) and answers 404 after', async () => {
    app = await startTestApp();
    const done = await schedule({ task: 'two files', model: 'script:two-files.json' });
    await collectEvents(app, done);
    const directory = join(app.dataDir, 'jobs', done);
    expect(existsSync(directory)).toBe(true);

    const running = await schedule({ task: 'sleep', model: 'script:long-sleep.json' });
    const refused = await remove(running);
    expect(refused.status).toBe(409);
    expect(refused.body).toMatch(/cancel it first/);

    expect((await remove(done)).status).toBe(204);
    expect(existsSync(directory)).toBe(false);
    expect((await fetch(`${app.url}/jobs/${done}`)).status).toBe(404);
    expect((await fetch(`${app.url}/jobs/${done}/artifacts.zip`)).status).toBe(404);
    expect((await remove(done)).status).toBe(404);
    expect((await remove('not-a-job-id')).status).toBe(404);

    await post(app, `/jobs/${running}/cancel`, {});
    await expect.poll(async () => (await get<Detail>(app!, `/jobs/${running}`)).status, { timeout: 60_000 }).toBe('cancelled');
    expect((await remove(running)).status).toBe(204);
    expect((await get<{ jobs: unknown[] }>(app, '/jobs')).jobs).toEqual([]);
  });
});
