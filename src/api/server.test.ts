// The API against a real store and job directories, without a worker: jobs stay pending unless cancelled.
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../config.ts';
import { JobService } from '../jobs/job-service.ts';
import { openSqliteStore } from '../store/sqlite/index.ts';
import type { Store } from '../store/types.ts';
import { buildServer } from './server.ts';

let dir: string;
let store: Store;
let jobs: JobService;
let app: FastifyInstance;

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'workcell-api-'));
  const config = loadConfig({}, { dataDir: dir, maxBodyBytes: 1 << 20 });
  const logger = pino({ level: 'silent' });
  store = openSqliteStore(dir);
  jobs = new JobService({ config, store: store.jobs, logger });
  app = await buildServer({ config, jobs, keys: store.keys, logger });
});
afterEach(async () => {
  await app.close();
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

const schedule = (payload: unknown, headers: Record<string, string> = {}) =>
  app.inject({ method: 'POST', url: '/schedule', payload: typeof payload === 'string' ? payload : JSON.stringify(payload), headers: { 'content-type': typeof payload === 'string' ? 'text/plain' : 'application/json', ...headers } });

function expectProblem(response: { statusCode: number; headers: Record<string, unknown>; json(): unknown }, status: number, detail: RegExp) {
  expect(response.statusCode).toBe(status);
  expect(response.headers['content-type']).toMatch(/^application\/problem\+json/);
  const body = response.json() as { type: string; status: number; detail: string };
  expect(body.status).toBe(status);
  expect(body.type).toMatch(/^urn:workcell:problem:/);
  expect(body.detail).toMatch(detail);
  expect(JSON.stringify(body)).not.toMatch(/at .*\.ts:\d+/); // no stack traces
  return body;
}

describe('POST /schedule', () => {
  it('accepts a text/plain task: 202, job id, Location; the job directory with input.txt follows at its first need', async () => {
    const response = await schedule('Build me a todo app in React');
    expect(response.statusCode).toBe(202);
    const { job_id } = response.json<{ job_id: string }>();
    expect(job_id).toMatch(/^job_[0-9a-z]{26}$/);
    expect(response.headers.location).toBe(`/jobs/${job_id}`);
    const status = await app.inject(`/status/${job_id}`);
    expect(status.json()).toEqual({ job_id, status: 'pending', created_at: expect.any(String), runtime: null, isolation: null });
    // Scheduling wrote the row alone; the first reader of its events (or the worker's claim) makes the directory.
    expect(existsSync(join(dir, 'jobs', job_id))).toBe(false);
    const events = await app.inject(`/jobs/${job_id}/events?follow=false`);
    expect(events.body).toContain(`"data":{"status":"pending"}`);
    expect(events.body).toContain(`"time":"${status.json<{ created_at: string }>().created_at}"`);
    expect(readFileSync(join(dir, 'jobs', job_id, 'input.txt'), 'utf8')).toBe('Build me a todo app in React');
    expect(existsSync(join(dir, 'jobs', job_id, 'workspace'))).toBe(true);
    // Opened again: the same first event, once.
    expect((await app.inject(`/jobs/${job_id}/events?follow=false`)).body).toBe(events.body);
  });

  it('accepts JSON with options and applies defaults to unset limits', async () => {
    const response = await schedule({ task: 'x', runtime: 'bwrap', limits: { max_steps: 7 }, metadata: { team: 'a' } });
    expect(response.statusCode).toBe(202);
    const detail = (await app.inject(`/jobs/${response.json<{ job_id: string }>().job_id}`)).json<Record<string, unknown>>();
    expect(detail).toMatchObject({ task: 'x', runtime: 'bwrap', limits: { max_steps: 7, wall_time_s: 3600 }, metadata: { team: 'a' }, status: 'pending' });
  });

  it('honours Idempotency-Key', async () => {
    const first = await schedule('same', { 'idempotency-key': 'abc' });
    const second = await schedule('same', { 'idempotency-key': 'abc' });
    expect(first.statusCode).toBe(202);
    expect(second.statusCode).toBe(200);
    expect(second.json()).toEqual(first.json());
    expect((await store.jobs.list({ limit: 10 })).jobs).toHaveLength(1);
  });

  it.each([
    ['an empty text task', ''],
    ['a blank text task', '   \n\t '],
    ['an empty JSON task', { task: '' }],
    ['a blank JSON task', { task: '  ' }],
  ])('refuses %s', async (_name, payload) => {
    expectProblem(await schedule(payload), 400, /empty/);
    expect((await store.jobs.list({ limit: 10 })).jobs).toHaveLength(0);
  });

  it('refuses a missing task, unknown fields, a bad runtime, a bad model and bad limits with the field named', async () => {
    expectProblem(await schedule({}), 400, /task/);
    expectProblem(await schedule({ task: 'x', tsak: 'typo' }), 400, /tsak/);
    expectProblem(await schedule({ task: 'x', runtime: 'vmware' }), 400, /runtime/);
    expectProblem(await schedule({ task: 'x', model: 'gpt' }), 400, /provider:model/);
    expectProblem(await schedule({ task: 'x', limits: { max_steps: -1 } }), 400, /max_steps/);
    expectProblem(await schedule({ task: 'x', limits: { wall_time_s: 'soon' } }), 400, /wall_time_s/);
    expectProblem(await schedule([1, 2]), 400, /./);
    expect((await store.jobs.list({ limit: 10 })).jobs).toHaveLength(0);
  });

  it('refuses malformed JSON, a wrong content type and a 10 MiB body', async () => {
    const malformed = await app.inject({ method: 'POST', url: '/schedule', payload: '{"task": "x"', headers: { 'content-type': 'application/json' } });
    expectProblem(malformed, 400, /JSON/);
    const xml = await app.inject({ method: 'POST', url: '/schedule', payload: '<task/>', headers: { 'content-type': 'application/xml' } });
    expectProblem(xml, 415, /Content-Type/);
    const huge = await schedule('x'.repeat(10 * 1024 * 1024));
    expectProblem(huge, 413, /too large/);
    const hugeJson = await schedule({ task: 'x'.repeat(10 * 1024 * 1024) });
    expectProblem(hugeJson, 413, /too large/);
    expectProblem(await app.inject({ method: 'POST', url: '/schedule' }), 400, /empty/);
    expect((await store.jobs.list({ limit: 10 })).jobs).toHaveLength(0);
  });

  it('stores hostile text verbatim and never interprets it', async () => {
    const task = "$(rm -rf /); `id`; ../../etc/passwd\u0000 <script>alert(1)</script> '\"";
    const { job_id } = (await schedule({ task })).json<{ job_id: string }>();
    expect((await app.inject(`/jobs/${job_id}`)).json<{ task: string }>().task).toBe(task);
    jobs.jobFiles((await store.jobs.get(job_id))!);
    expect(readFileSync(join(dir, 'jobs', job_id, 'input.txt'), 'utf8')).toBe(task);
  });
});

describe('job routes', () => {
  it.each(['/status/', '/jobs/', '/jobs/ID/events', '/jobs/ID/artifacts.zip'])('404s unknown and malformed ids on %s', async (route) => {
    for (const id of ['job_00000000000000000000000000', '..%2F..%2Fetc%2Fpasswd', 'nope']) {
      const url = route.includes('ID') ? route.replace('ID', id) : `${route}${id}`;
      expectProblem(await app.inject(url), 404, /no job/);
    }
    expectProblem(await app.inject({ method: 'POST', url: '/jobs/job_00000000000000000000000000/cancel' }), 404, /no job/);
  });

  it('cancels a pending job at once, zips its workspace, and refuses a second cancel', async () => {
    const { job_id } = (await schedule('x')).json<{ job_id: string }>();
    expect((await app.inject(`/jobs/${job_id}/artifacts.zip`)).statusCode).toBe(409);
    const cancel = await app.inject({ method: 'POST', url: `/jobs/${job_id}/cancel` });
    expect(cancel.statusCode).toBe(202);
    expect(cancel.json()).toEqual({ job_id, status: 'cancelled' });
    expectProblem(await app.inject({ method: 'POST', url: `/jobs/${job_id}/cancel` }), 409, /already ended/);
    const detail = (await app.inject(`/jobs/${job_id}`)).json<{ artifacts_url?: string; download_url?: string }>();
    expect(detail.artifacts_url).toBe(`http://localhost:80/jobs/${job_id}/artifacts.zip`);
    expect(detail.download_url).toBeUndefined(); // only complete jobs have a download_url in /status
    const zip = await app.inject(`/jobs/${job_id}/artifacts.zip`);
    expect(zip.statusCode).toBe(200);
    expect(zip.headers['content-type']).toBe('application/zip');
    expect(zip.rawPayload.subarray(0, 4).toString('hex')).toBe('504b0506'); // an empty zip: end-of-central-directory
    const range = await app.inject({ url: `/jobs/${job_id}/artifacts.zip`, headers: { range: 'bytes=0-1' } });
    expect(range.statusCode).toBe(206);
    expect(range.headers['content-range']).toBe(`bytes 0-1/${zip.rawPayload.length}`);
    expect(range.rawPayload.toString('hex')).toBe('504b');
    expectProblem(await app.inject({ url: `/jobs/${job_id}/artifacts.zip`, headers: { range: 'bytes=999999-' } }), 416, /range/);
  });

  it('lists newest first with a cursor and a status filter; refuses bad queries', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push((await schedule(`t${i}`)).json<{ job_id: string }>().job_id);
    const page = (await app.inject('/jobs?limit=2')).json<{ jobs: Array<{ job_id: string }>; next_cursor: string }>();
    expect(page.jobs.map((j) => j.job_id)).toEqual([ids[2], ids[1]]);
    const rest = (await app.inject(`/jobs?limit=2&cursor=${page.next_cursor}`)).json<{ jobs: Array<{ job_id: string }>; next_cursor: null }>();
    expect(rest).toMatchObject({ jobs: [{ job_id: ids[0] }], next_cursor: null });
    expect((await app.inject('/jobs?status=complete')).json()).toEqual({ jobs: [], next_cursor: null });
    expectProblem(await app.inject('/jobs?status=done'), 400, /status/);
    expectProblem(await app.inject('/jobs?limit=0'), 400, /limit/);
    expectProblem(await app.inject('/jobs?cursor=../../x'), 400, /cursor/);
  });

  it('streams events as SSE, resumable with Last-Event-ID', async () => {
    const { job_id } = (await schedule('x')).json<{ job_id: string }>();
    await app.inject({ method: 'POST', url: `/jobs/${job_id}/cancel` });
    const all = await app.inject(`/jobs/${job_id}/events`);
    expect(all.headers['content-type']).toMatch(/^text\/event-stream/);
    const ids = [...all.body.matchAll(/^id: (\d+)$/gm)].map((m) => Number(m[1]));
    const types = [...all.body.matchAll(/^event: (.+)$/gm)].map((m) => m[1]);
    expect(types).toEqual(['job-status', 'job-status']);
    expect(all.body).toContain('"status":"cancelled"');
    const resumed = await app.inject({ url: `/jobs/${job_id}/events`, headers: { 'last-event-id': String(ids[0]) } });
    expect([...resumed.body.matchAll(/^id: (\d+)$/gm)].map((m) => Number(m[1]))).toEqual([ids[1]]);
    expectProblem(await app.inject({ url: `/jobs/${job_id}/events`, headers: { 'last-event-id': 'abc' } }), 400, /Last-Event-ID/);
  });
});

describe('the final event of an ended job', () => {
  const finalEvents = (body: string) => [...body.matchAll(/^data: (.*)$/gm)].map((m) => JSON.parse(m[1]!) as { type: string; data: Record<string, unknown> }).filter((e) => e.type === 'job-status' && ['complete', 'error', 'cancelled'].includes(e.data.status as string));

  it('is written from the row when a crash lost it (once, whoever writes it first), and the stream ends', async () => {
    const { job_id } = (await schedule('x')).json<{ job_id: string }>();
    const claimed = await store.jobs.claim('w1', 60_000);
    expect(claimed?.id).toBe(job_id);
    // The worker ended the row 10 s ago and died before its final event.
    expect(await store.jobs.finish(job_id, 'w1', { status: 'complete', summary: 'done' }, new Date(Date.now() - 10_000))).toBe(true);
    const first = await app.inject(`/jobs/${job_id}/events`);
    expect(finalEvents(first.body)).toEqual([expect.objectContaining({ data: { status: 'complete', summary: 'done', run: 1, repaired: true } })]);
    // A late end from the worker, and another reader: still one final event.
    await jobs.recordEnd((await store.jobs.get(job_id))!, { status: 'complete', summary: 'done' }, 1);
    expect(finalEvents((await app.inject(`/jobs/${job_id}/events`)).body)).toHaveLength(1);
  });

  it('is recorded once when the store lost its answer to finish (committed, then the connection broke)', async () => {
    const { job_id } = (await schedule('x')).json<{ job_id: string }>();
    const job = (await store.jobs.claim('w1', 60_000))!;
    const finish = store.jobs.finish.bind(store.jobs);
    let calls = 0;
    store.jobs.finish = async (...args) => {
      const done = await finish(...args);
      if (++calls === 1) throw new Error('Connection terminated unexpectedly');
      return done;
    };
    await jobs.endJob(job, 'w1', { status: 'complete', summary: 'done' });
    expect(calls).toBe(2);
    expect(finalEvents((await app.inject(`/jobs/${job_id}/events`)).body)).toEqual([expect.objectContaining({ data: { status: 'complete', summary: 'done', run: 1 } })]);
  });

  it('is not written when another party ended the job first', async () => {
    const { job_id } = (await schedule('x')).json<{ job_id: string }>();
    const job = (await store.jobs.claim('w1', 60_000))!;
    expect(await store.jobs.finish(job_id, 'w1', { status: 'error', error: 'lease expired' })).toBe(true);
    const finish = store.jobs.finish.bind(store.jobs);
    let calls = 0;
    store.jobs.finish = async (...args) => {
      if (++calls === 1) throw new Error('Connection terminated unexpectedly');
      return finish(...args);
    };
    await jobs.endJob(job, 'w1', { status: 'complete', summary: 'done' });
    expect(calls).toBe(2);
    expect(finalEvents((await app.inject(`/jobs/${job_id}/events?follow=false`)).body)).toEqual([]);
  });
});

describe('service routes', () => {
  it('answers /healthz, /openapi.json, and 404 problems for unknown routes', async () => {
    expect((await app.inject('/healthz')).json()).toEqual({ ok: true, version: expect.any(String) });
    const doc = (await app.inject('/openapi.json')).json<{ openapi: string; paths: Record<string, unknown> }>();
    expect(doc.openapi).toBe('3.1.0');
    expect(Object.keys(doc.paths)).toEqual(expect.arrayContaining(['/schedule', '/status/{id}', '/jobs', '/jobs/{id}', '/jobs/{id}/cancel', '/jobs/{id}/events', '/jobs/{id}/artifacts.zip', '/healthz']));
    expectProblem(await app.inject('/nope'), 404, /no route GET \/nope/);
    expectProblem(await app.inject({ method: 'DELETE', url: '/schedule' }), 404, /no route/);
  });
});
