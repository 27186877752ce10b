// An API replica and a worker as two apps on one real Postgres and one data dir (`workcell serve --no-worker` and
// `workcell worker`): a job scheduled on the replica runs on the worker; its events stream from the replica (Postgres
// LISTEN/NOTIFY between two buses); its files and terminal open through the replica, which reaches the sandbox over
// the worker's internal route; a cancel on the replica stops it on the worker. The internal route answers only
// signed, fresh, unreplayed requests, and relays only what the API's routes use.
import { mkdtempSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { internalHeader, internalSecretName, signInternal } from '../../../src/jobs/remote/internal-auth.ts';
import { internalPath } from '../../../src/jobs/remote/remote-channel.ts';
import { collectEvents, startTestApp, type StreamedEvent, type TestApp } from '../../helpers/app.ts';
import { startPostgres, type PostgresCluster } from '../../helpers/postgres.ts';

let postgres: PostgresCluster;
let dataDir: string;
let worker: TestApp;
let api: TestApp;
let jobId: string;
let events: Promise<StreamedEvent[]>;

beforeAll(async () => {
  postgres = await startPostgres();
  const databaseUrl = await postgres.createDatabase();
  dataDir = mkdtempSync(join(tmpdir(), 'workcell-replicas-'));
  worker = await startTestApp({ databaseUrl }, { role: 'worker', dataDir });
  api = await startTestApp({ databaseUrl }, { role: 'api', dataDir });
}, 120_000);

afterAll(async () => {
  await api?.close();
  await worker?.close();
  await postgres?.stop();
  if (dataDir !== undefined) rmSync(dataDir, { recursive: true, force: true });
}, 120_000);

describe('a job scheduled on an API replica and run by a worker', () => {
  it('runs on the worker, and its events stream from the replica as they happen', async () => {
    expect(worker.url).toBe('');
    expect(worker.internalUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(api.workerId).toBeUndefined();
    const response = await fetch(`${api.url}/schedule`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ task: 'sleep', model: 'script:long-sleep.json' }) });
    expect(response.status).toBe(202);
    jobId = ((await response.json()) as { job_id: string }).job_id;
    let sleeping!: () => void;
    const inSleep = new Promise<void>((resolve) => (sleeping = resolve));
    events = collectEvents(api, jobId, {
      onEvent: (event) => {
        if (event.type === 'tool-call' && event.data.name === 'shell') sleeping();
      },
    });
    events.catch(() => undefined);
    await inSleep;
    expect(worker.scheduler.runningJobIds).toContain(jobId);
    expect(worker.jobs.liveSandbox(jobId)).toBeDefined();
    expect(api.jobs.liveSandbox(jobId)).toBeUndefined();
    const job = await api.store.jobs.get(jobId);
    expect(job?.locked_by).toBe(worker.workerId);
    expect(job?.locked_by).toContain(`@${worker.internalUrl}`);
  }, 120_000);

  it("reads and writes the running job's files through the replica", async () => {
    const before = await fetch(`${api.url}/jobs/${jobId}/files/before.txt`);
    expect(before.status).toBe(200);
    expect(await before.text()).toBe('written before the long command\n');
    const etag = before.headers.get('etag');
    expect(etag).toMatch(/^"[0-9a-f]{64}"$/);
    expect((await fetch(`${api.url}/jobs/${jobId}/files/before.txt`, { headers: { 'if-none-match': etag! } })).status).toBe(304);

    const put = await fetch(`${api.url}/jobs/${jobId}/files/notes/from-replica.txt`, { method: 'PUT', body: 'through the internal route', headers: { 'content-type': 'application/octet-stream', 'if-none-match': '*' } });
    expect(put.status).toBe(201);
    const stale = await fetch(`${api.url}/jobs/${jobId}/files/notes/from-replica.txt`, { method: 'PUT', body: 'again', headers: { 'content-type': 'application/octet-stream', 'if-none-match': '*' } });
    expect(stale.status).toBe(412);
    // The worker's own view of the sandbox has it: one workspace, reached two ways.
    expect(await (await fetch(`${api.url}/jobs/${jobId}/files/notes/from-replica.txt`)).text()).toBe('through the internal route');
    const listing = (await (await fetch(`${api.url}/jobs/${jobId}/files/notes`)).json()) as { entries: Array<{ name: string }> };
    expect(listing.entries.map((entry) => entry.name)).toEqual(['from-replica.txt']);
  });

  it("opens a terminal in the worker's sandbox through the replica", async () => {
    const ws = new WebSocket(`${api.url.replace(/^http/, 'ws')}/jobs/${jobId}/terminal?cols=80&rows=24`);
    let text = '';
    ws.on('message', (data: Buffer) => (text += data.toString('utf8')));
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
      ws.once('unexpected-response', (_request, response) => reject(new Error(`terminal refused: ${response.statusCode}`)));
    });
    ws.send('cat /workspace/notes/from-replica.txt; echo; echo "r""eplica-ok"\r');
    await expect.poll(() => text, { timeout: 20_000 }).toMatch(/through the internal route\r\nreplica-ok\r\n/);
    ws.close();
  }, 60_000);

  it('answers only signed, fresh requests on the internal route, and only for what the API relays', async () => {
    const internal = worker.internalUrl!;
    expect(await (await fetch(`${internal}/healthz`)).text()).toBe('ok\n');
    const secret = await worker.store.keys.serverSecret(internalSecretName);
    const path = internalPath(jobId, '/v1/files/raw?path=before.txt');
    const unsigned = await fetch(`${internal}${path}`);
    expect(unsigned.status).toBe(401);
    expect(await unsigned.text()).toMatch(/missing x-workcell-internal/);
    const forged = await fetch(`${internal}${path}`, { headers: { [internalHeader]: signInternal(Buffer.alloc(32), 'GET', path) } });
    expect(forged.status).toBe(401);
    const old = await fetch(`${internal}${path}`, { headers: { [internalHeader]: signInternal(secret, 'GET', path, Date.now() - 5 * 60_000) } });
    expect(old.status).toBe(401);
    // Signed for another path or method: refused.
    const otherPath = internalPath(jobId, '/v1/files/raw?path=other.txt');
    expect((await fetch(`${internal}${otherPath}`, { headers: { [internalHeader]: signInternal(secret, 'GET', path) } })).status).toBe(401);
    expect((await fetch(`${internal}${path}`, { method: 'DELETE', headers: { [internalHeader]: signInternal(secret, 'GET', path) } })).status).toBe(401);

    const signature = signInternal(secret, 'GET', path);
    const signed = await fetch(`${internal}${path}`, { headers: { [internalHeader]: signature } });
    expect(signed.status).toBe(200);
    expect(await signed.text()).toBe('written before the long command\n');
    const replayed = await fetch(`${internal}${path}`, { headers: { [internalHeader]: signature } });
    expect(replayed.status).toBe(401);
    expect(await replayed.text()).toMatch(/used before/);

    // A valid signature opens nothing beyond the relayed routes: not the agent's shell, not another job.
    const shell = internalPath(jobId, '/v1/shell/exec');
    const exec = await fetch(`${internal}${shell}`, { method: 'POST', body: JSON.stringify({ command: 'id' }), headers: { 'content-type': 'application/json', [internalHeader]: signInternal(secret, 'POST', shell) } });
    expect(exec.status).toBe(404);
    for (const hidden of ['/v1/services/desktop/../../shell/exec', '/v1/services/desktop/%2e%2E/%2e%2e/shell/exec', '/v1/services/jupyter/..%2f..%2fshell/exec']) {
      const traversal = internalPath(jobId, hidden);
      expect(await rawStatus(internal, 'POST', traversal, { [internalHeader]: signInternal(secret, 'POST', traversal) })).toBe(404);
    }
    const otherJob = internalPath('job_00000000000000000000000000', '/v1/files/raw?path=x');
    expect((await fetch(`${internal}${otherJob}`, { headers: { [internalHeader]: signInternal(secret, 'GET', otherJob) } })).status).toBe(409);
  });

  it('is cancelled on the worker by a cancel sent to the replica, and the replica streams the end', async () => {
    const response = await fetch(`${api.url}/jobs/${jobId}/cancel`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
    expect(response.status).toBe(202);
    const all = await events;
    expect(all.at(-1)).toMatchObject({ type: 'job-status', data: { status: 'cancelled' } });
    expect((await api.store.jobs.get(jobId))?.status).toBe('cancelled');
    expect(worker.jobs.liveSandbox(jobId)).toBeUndefined();
    // Its files are now the host's copy, read by the replica from the shared data dir.
    expect(await (await fetch(`${api.url}/jobs/${jobId}/files/notes/from-replica.txt`)).text()).toBe('through the internal route');
  }, 60_000);
});

describe('a process whose data dir is not the shared one', () => {
  it('refuses to start, naming the volume to mount', async () => {
    const databaseUrl = await postgres.createDatabase();
    const shared = mkdtempSync(join(tmpdir(), 'workcell-shared-'));
    const elsewhere = mkdtempSync(join(tmpdir(), 'workcell-elsewhere-'));
    try {
      const first = await startTestApp({ databaseUrl }, { role: 'api', dataDir: shared });
      await first.close();
      await expect(startTestApp({ databaseUrl }, { role: 'worker', dataDir: elsewhere })).rejects.toThrow(/not the one the other processes of this database use.*WORKCELL_DATA_DIR/s);
      const second = await startTestApp({ databaseUrl }, { role: 'worker', dataDir: shared });
      await second.close();
    } finally {
      rmSync(shared, { recursive: true, force: true });
      rmSync(elsewhere, { recursive: true, force: true });
    }
  }, 120_000);
});

/** A request with its path exactly as given (fetch would resolve dot segments before sending). */
function rawStatus(base: string, method: string, path: string, headers: Record<string, string>): Promise<number | undefined> {
  return new Promise((resolve, reject) => {
    const url = new URL(base);
    const req = request({ host: url.hostname, port: url.port, method, path, headers }, (response) => {
      response.resume();
      resolve(response.statusCode);
    });
    req.on('error', reject);
    req.end();
  });
}
