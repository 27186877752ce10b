// The typed client (`workcell/client`) end to end against a real server with bwrap sandboxes and a script model
// (test/fixtures/trajectories/client.json): schedule with files, the event stream across a dropped connection (a TCP
// proxy cut mid-stream: resumed with Last-Event-ID, nothing lost or repeated), files with ETags while the job runs,
// waitFor, diff and patch, the audit log, the zip, continuing a finished job with a message, delete, and the errors a
// caller meets (problem+json as WorkcellApiError, an unreachable server, a timeout). Every wait is on a condition.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClient, isFinal, WorkcellApiError, WorkcellClientError, type JobEvent, type WorkcellClient } from 'workcell/client';
import { readZip, startTestApp, type TestApp } from '../../helpers/app.ts';
import { startTcpProxy, type TcpProxy } from '../../helpers/tcp-proxy.ts';

let app: TestApp;
let proxy: TcpProxy;
let workcell: WorkcellClient;

beforeAll(async () => {
  app = await startTestApp();
  proxy = await startTcpProxy(app.url);
  workcell = createClient({ baseUrl: app.url });
});
afterAll(async () => {
  await proxy?.close();
  await app?.close();
});

/** The error a promise rejects with (fails the test when it resolves). */
async function rejection(promise: Promise<unknown>): Promise<WorkcellClientError> {
  const error: unknown = await promise.then(
    (value) => {
      throw new Error(`expected an error, got ${JSON.stringify(value)}`);
    },
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(WorkcellClientError);
  return error as WorkcellClientError;
}

const isWaitForGo = (event: JobEvent) => event.type === 'tool-call' && String((event.data.args as { command?: string } | undefined)?.command).includes('[ -e go ]');

describe('a job through the client, from upload to delete', () => {
  let jobId = '';
  let firstRunEnd = 0;

  it('schedules with files, follows the events across a dropped connection, and reads and writes files with ETags while the job runs', async () => {
    const scheduled = await workcell.schedule(
      { task: 'Read the notes and wait for go', model: 'script:client.json', metadata: { suite: 'client' } },
      {
        files: [
          { path: 'notes.txt', content: 'uploaded notes\n' },
          { path: 'src/app.py', content: new TextEncoder().encode('print("uploaded app")\n') },
        ],
      },
    );
    expect(scheduled).toMatchObject({ job_id: expect.stringMatching(/^job_[0-9a-z]{26}$/), created: true });
    jobId = scheduled.job_id;

    // Through the proxy, which is cut once the agent waits for `go`; the files are written while the stream is down.
    const viaProxy = createClient({ baseUrl: proxy.url });
    const events: JobEvent[] = [];
    let dropped = false;
    for await (const event of viaProxy.events(jobId, { reconnectDelayMs: 50 })) {
      events.push(event);
      if (!dropped && isWaitForGo(event)) {
        dropped = true;
        expect(proxy.connections).toBe(1);
        proxy.dropAll();

        const listing = await workcell.files.list(jobId);
        expect(listing.entries.map((entry) => [entry.name, entry.type])).toEqual([
          ['hello.txt', 'file'],
          ['notes.txt', 'file'],
          ['src', 'directory'],
        ]);
        expect((await workcell.files.list(jobId, 'src')).entries.map((entry) => entry.name)).toEqual(['app.py']);
        const hello = await workcell.files.read(jobId, 'hello.txt');
        expect(hello).toMatchObject({ text: 'hello from the agent\n', etag: expect.stringMatching(/^"[0-9a-f]{64}"$/), contentType: expect.stringMatching(/^text\/plain/) });
        expect(new TextDecoder().decode(hello.bytes)).toBe('hello from the agent\n');

        // A write that names the version it read wins once; the same stale ETag then loses with the current one.
        const written = await workcell.files.write(jobId, 'hello.txt', 'hello from the client\n', { ifMatch: hello.etag });
        expect(written).toMatchObject({ path: 'hello.txt', size: 22, created: false });
        expect(written.etag).not.toBe(hello.etag);
        const stale = await rejection(workcell.files.write(jobId, 'hello.txt', 'lost update\n', { ifMatch: hello.etag }));
        expect(stale).toBeInstanceOf(WorkcellApiError);
        expect(stale).toMatchObject({ status: 412, code: 'precondition_failed', type: 'urn:workcell:problem:precondition_failed', title: 'Precondition Failed', etag: written.etag });
        expect((stale as WorkcellApiError).detail).toBeTruthy();
        expect(await rejection(workcell.files.write(jobId, 'hello.txt', 'create only\n', { ifNoneMatch: '*' }))).toMatchObject({ status: 412 });
        expect((await workcell.files.read(jobId, 'hello.txt')).text).toBe('hello from the client\n');

        // Binary bytes go and come back as they are; paths keep their slashes and odd characters.
        const binary = Uint8Array.from([0, 1, 2, 255, 10, 13]);
        expect(await workcell.files.write(jobId, 'data/raw file #1.bin', binary, { ifNoneMatch: '*' })).toMatchObject({ created: true, size: 6 });
        const readBack = await workcell.files.read(jobId, 'data/raw file #1.bin');
        expect([...readBack.bytes]).toEqual([...binary]);
        expect(readBack.text).toBeUndefined();
        expect(await workcell.files.remove(jobId, 'data/raw file #1.bin', { ifMatch: readBack.etag })).toEqual({ path: 'data/raw file #1.bin', type: 'file' });
        expect(await workcell.files.remove(jobId, 'data')).toEqual({ path: 'data', type: 'directory' });

        expect(await rejection(workcell.files.read(jobId, 'src'))).toMatchObject({ code: 'not_a_file' });
        expect(await rejection(workcell.files.list(jobId, 'notes.txt'))).toMatchObject({ code: 'not_a_directory' });
        expect(await rejection(workcell.files.read(jobId, 'missing.txt'))).toMatchObject({ status: 404, code: 'not_found' });
        // `..` would be resolved away by the URL parser (to another route): the client refuses it before sending.
        expect(await rejection(workcell.files.read(jobId, '../outside'))).toMatchObject({ code: 'invalid_path' });
        expect(await rejection(workcell.files.write(jobId, 'src/./app.py', 'x'))).toMatchObject({ code: 'invalid_path' });

        // The job goes on: the events it writes now are missed by the cut stream and must come after the reconnect.
        await workcell.files.write(jobId, 'from-client.txt', 'written by the client\n');
        await workcell.files.write(jobId, 'go', '');
      }
    }

    expect(dropped).toBe(true);
    expect(proxy.connections).toBeGreaterThanOrEqual(2);
    // Every event once, in order, and the same as the log holds.
    expect(events.map((event) => event.seq)).toEqual(events.map((_, index) => index + 1));
    const log: JobEvent[] = [];
    for await (const event of workcell.events(jobId, { follow: false })) log.push(event);
    expect(events).toEqual(log);
    expect(events.at(-1)).toMatchObject({ type: 'job-status', data: { status: 'complete' } });
    firstRunEnd = events.at(-1)!.seq;

    const uploads = events.find((event) => event.type === 'tool-result');
    expect(String(uploads?.data.output)).toContain('uploaded notes');
    expect(String(uploads?.data.output)).toContain('UPLOADS-READ');
    const waitCall = events.find(isWaitForGo)?.data.call_id;
    const afterGo = events.find((event) => event.type === 'tool-result' && event.data.call_id === waitCall);
    expect(String(afterGo?.data.output)).toContain('written by the client');
  });

  it('waits for the job, and shows its status, detail and place in the list', async () => {
    const job = await workcell.waitFor(jobId, { timeoutMs: 60_000 });
    expect(job).toMatchObject({ job_id: jobId, status: 'complete', run: 1, metadata: { suite: 'client' }, inputs: { upload: { entries: 3 } } });
    expect(job.summary).toContain('read from-client.txt');
    expect(await workcell.status(jobId)).toMatchObject({ job_id: jobId, status: 'complete', runtime: 'bwrap' });
    const listed = await workcell.list({ status: 'complete' });
    expect(listed.jobs.map((listedJob) => listedJob.job_id)).toContain(jobId);
    // A finished job's events, after where the caller stopped: nothing more, and the iterator ends.
    const after: JobEvent[] = [];
    for await (const event of workcell.events(jobId, { after: firstRunEnd })) after.push(event);
    expect(after).toEqual([]);
  });

  it('reads the final workspace, the diff and the patch, the audit log and the zip', async () => {
    expect((await workcell.files.read(jobId, 'from-client.txt')).text).toBe('written by the client\n');
    const diff = await workcell.diff(jobId);
    expect(diff).toMatchObject({ job_id: jobId, status: 'complete', base: { files: 2 }, summary: { added: 2, changed: 0, deleted: 0 } });
    expect(diff.files.map((file) => [file.path, file.change])).toEqual([
      ['from-client.txt', 'added'],
      ['hello.txt', 'added'],
    ]);
    const patch = await workcell.patch(jobId);
    expect(patch).toContain('diff --git a/hello.txt b/hello.txt');
    expect(patch).toContain('+hello from the client');

    const audit = await workcell.audit(jobId);
    expect(audit).toContainEqual(expect.objectContaining({ type: 'file', op: 'write', path: 'hello.txt', ok: true, by: 'local' }));
    expect(audit).toContainEqual(expect.objectContaining({ type: 'file', op: 'write', path: 'hello.txt', ok: false, error: 'precondition_failed', by: 'local' }));
    expect(await workcell.audit(jobId, { after: audit.length })).toEqual([]);

    const zip = await readZip(Buffer.from(await workcell.artifacts(jobId)));
    expect(zip.get('hello.txt')?.content).toBe('hello from the client\n');
    expect(zip.get('src/app.py')?.content).toBe('print("uploaded app")\n');
  });

  it('continues the finished job with a message: a second run on the same workspace', async () => {
    const sent = await workcell.send(jobId, 'Now write second.txt');
    expect(sent).toMatchObject({ job_id: jobId, run: 2, reopened: true });
    const job = await workcell.waitFor(jobId, { timeoutMs: 60_000 });
    expect(job).toMatchObject({ status: 'complete', run: 2 });
    expect(job.runs.map((run) => [run.run, run.status, run.message])).toEqual([
      [1, 'complete', null],
      [2, 'complete', 'Now write second.txt'],
    ]);
    expect((await workcell.files.read(jobId, 'second.txt')).text).toBe('second run\n');
    const second: JobEvent[] = [];
    for await (const event of workcell.events(jobId, { after: firstRunEnd })) second.push(event);
    expect(second[0]?.seq).toBe(firstRunEnd + 1);
    expect(second.find((event) => event.type === 'user-message')?.data).toMatchObject({ text: 'Now write second.txt', source: 'client' });
    expect(String(second.find((event) => event.type === 'tool-result')?.data.output)).toContain('hello from the client');
  });

  it('deletes the job: then it is not found', async () => {
    await workcell.delete(jobId);
    expect(await rejection(workcell.get(jobId))).toMatchObject({ status: 404, code: 'not_found' });
    expect(await rejection(workcell.delete(jobId))).toMatchObject({ status: 404 });
  });
});

describe('errors and limits', () => {
  it('a running job: waitFor times out, delete is refused, cancel ends it and waitFor sees that', async () => {
    const { job_id } = await workcell.schedule({ task: 'sleep', model: 'script:long-sleep.json' });
    const timedOut = await rejection(workcell.waitFor(job_id, { timeoutMs: 300 }));
    expect(timedOut).toMatchObject({ code: 'timeout' });
    expect(timedOut.message).toContain(job_id);
    await expect.poll(async () => (await workcell.status(job_id)).status, { timeout: 60_000 }).toBe('running');
    expect(await rejection(workcell.delete(job_id))).toMatchObject({ status: 409, code: 'conflict' });
    expect(await workcell.cancel(job_id)).toMatchObject({ job_id });
    const job = await workcell.waitFor(job_id, { timeoutMs: 60_000 });
    expect(job.status).toBe('cancelled');
    expect(isFinal(job.status)).toBe(true);
    expect(await rejection(workcell.cancel(job_id))).toMatchObject({ status: 409 });
    // An aborted wait rejects with the caller's reason.
    const abort = new AbortController();
    abort.abort(new Error('stop waiting'));
    await expect(workcell.waitFor(job_id, { signal: abort.signal })).rejects.toThrow('stop waiting');
  });

  it('problem+json becomes WorkcellApiError with the fields, and the schedule is refused whole', async () => {
    const invalid = await rejection(workcell.schedule({ task: '   ' }));
    expect(invalid).toMatchObject({ status: 400, code: 'invalid_request' });
    expect((invalid as WorkcellApiError).errors?.[0]?.message).toMatch(/task is empty/);
    const tooBig = await rejection(workcell.schedule({ task: 'x', limits: { cpus: 4096 } }));
    expect(tooBig).toMatchObject({ status: 400 });
    expect(await rejection(workcell.status('job_00000000000000000000000000'))).toMatchObject({ status: 404, code: 'not_found', instance: '/status/job_00000000000000000000000000' });
    expect(await rejection(workcell.send('job_00000000000000000000000000', 'hello'))).toMatchObject({ status: 404 });
    const again = await rejection(workcell.events('job_00000000000000000000000000').next());
    expect(again).toMatchObject({ status: 404 });
  });

  it('schedules once per idempotency key', async () => {
    const first = await workcell.schedule({ task: 'two files', model: 'script:two-files.json' }, { idempotencyKey: 'client-test-key' });
    const second = await workcell.schedule({ task: 'two files', model: 'script:two-files.json' }, { idempotencyKey: 'client-test-key' });
    expect(first.created).toBe(true);
    expect(second).toEqual({ job_id: first.job_id, created: false });
    expect((await workcell.waitFor(first.job_id, { timeoutMs: 60_000 })).status).toBe('complete');
  });

  it('says how to fix an unreachable server', async () => {
    const nowhere = createClient({ baseUrl: 'http://127.0.0.1:9/' });
    const error = await rejection(nowhere.health());
    expect(error).not.toBeInstanceOf(WorkcellApiError);
    expect(error.code).toBe('unreachable');
    expect(error.message).toMatch(/cannot reach the workcell server at http:\/\/127\.0\.0\.1:9 .*workcell serve/);
    const events = await rejection(nowhere.events('job_00000000000000000000000000', { reconnectAttempts: 1, reconnectDelayMs: 10 }).next());
    expect(events.code).toBe('unreachable');
  });
});

describe('with API keys', () => {
  let keyed: TestApp | undefined;
  afterAll(async () => keyed?.close());

  it('sends the key as a bearer token; without it the server answers 401', async () => {
    keyed = await startTestApp();
    const token = (await keyed.store.keys.create('client-test')).token;
    expect(await rejection(createClient({ baseUrl: keyed.url }).list())).toMatchObject({ status: 401, code: 'unauthorized' });
    expect(await rejection(createClient({ baseUrl: keyed.url, apiKey: 'wcs_wrong' }).list())).toMatchObject({ status: 401 });
    const client = createClient({ baseUrl: keyed.url, apiKey: token });
    expect(await client.list()).toEqual({ jobs: [], next_cursor: null });
    expect((await client.health()).ok).toBe(true);
  });
});
