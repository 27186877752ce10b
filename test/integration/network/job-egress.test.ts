// Egress through a real job: the API, the scheduler, a real bwrap sandbox with the egress proxy and sandboxd's
// bridge, and the agent loop replaying test/fixtures/trajectories/network-egress.template.json (with this test's
// ports filled in). The allowed loopback server answers curl and python3 through HTTP_PROXY, the second port is
// refused with the proxy's 403, direct connections get nothing, and GET /jobs/:id/audit has all of it, with steps.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { collectEvents, get, post, startTestApp, trajectoriesDir, type TestApp } from '../../helpers/app.ts';

let allowed: HttpServer;
let allowedPort = 0;
const allowedRequests: string[] = [];
let denied: Server;
let deniedPort = 0;
let deniedConnections = 0;
let scriptDir: string;
let app: TestApp | undefined;

beforeAll(async () => {
  allowed = createHttpServer((request, response) => {
    allowedRequests.push(request.url ?? '');
    response.end(`hello from the host: ${request.url}\n`);
  });
  await new Promise<void>((resolve) => allowed.listen(0, '127.0.0.1', resolve));
  allowedPort = (allowed.address() as { port: number }).port;
  denied = createServer((socket) => {
    deniedConnections++;
    socket.end('HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsecret');
  });
  await new Promise<void>((resolve) => denied.listen(0, '127.0.0.1', resolve));
  deniedPort = (denied.address() as { port: number }).port;
  scriptDir = mkdtempSync(join(tmpdir(), 'workcell-egress-script-'));
  const template = readFileSync(join(trajectoriesDir, 'network-egress.template.json'), 'utf8');
  writeFileSync(join(scriptDir, 'network-egress.json'), template.replaceAll('{{ALLOWED_PORT}}', String(allowedPort)).replaceAll('{{DENIED_PORT}}', String(deniedPort)));
});

afterAll(async () => {
  await Promise.all([allowed, denied].map((server) => new Promise((resolve) => server.close(resolve))));
  rmSync(scriptDir, { recursive: true, force: true });
});

afterEach(async () => {
  await app?.close();
  app = undefined;
});

interface AuditLine {
  type: 'file' | 'network';
  step: number;
  [field: string]: unknown;
}

async function auditOf(jobId: string, after?: number): Promise<{ contentType: string | null; lines: AuditLine[] }> {
  const response = await fetch(`${app!.url}/jobs/${jobId}/audit${after === undefined ? '' : `?after=${after}`}`);
  expect(response.status).toBe(200);
  const body = await response.text();
  return { contentType: response.headers.get('content-type'), lines: body === '' ? [] : body.trimEnd().split('\n').map((line) => JSON.parse(line) as AuditLine) };
}

describe('a job with network.allow', () => {
  it('reaches the allowed server through the proxy, is refused elsewhere, gets nothing directly, and the audit shows each step', async () => {
    app = await startTestApp({ scriptDir });
    const scheduled = await post<{ job_id: string }>(app, '/schedule', { task: 'fetch', model: 'script:network-egress.json', network: { allow: [`127.0.0.1:${allowedPort}`] } });
    expect(scheduled.status).toBe(202);
    const jobId = scheduled.body.job_id;
    const events = await collectEvents(app, jobId);
    const job = await get<{ status: string; error?: string; isolation: string; network: { allow: string[] } }>(app, `/jobs/${jobId}`);
    expect(job.status, job.error).toBe('complete');
    expect(job.isolation).toMatch(/egress proxy/);
    expect(job.network.allow).toEqual([`127.0.0.1:${allowedPort}`]);

    const shell = events.filter((event) => event.type === 'tool-result' && event.data.name === 'shell').map((event) => String(event.data.output));
    expect(shell[0]).toContain('hello from the host: /hello');
    expect(shell[1]).toContain(`127.0.0.1:${deniedPort} was refused: it is not in this job's network allow-list`);
    expect(shell[1]).toContain('"network": {"allow"');
    expect(shell[1]).toContain('status=403');
    expect(shell[2]).toContain('hello from the host: /from-python');
    // A program that ignores HTTP_PROXY: the host's loopback is not the sandbox's, and there is no route out.
    expect(shell[3]).toContain(`DIRECT-FAILED ('127.0.0.1', ${allowedPort}) ConnectionRefusedError`);
    expect(shell[3]).toMatch(/DIRECT-FAILED \('1\.1\.1\.1', 443\) (OSError|ConnectionRefusedError|TimeoutError)/);
    expect(shell[3]).not.toContain('CONNECTED');
    expect(allowedRequests).toEqual(['/hello', '/from-python']);
    expect(deniedConnections).toBe(0);

    const { contentType, lines } = await auditOf(jobId);
    expect(contentType).toBe('application/x-ndjson; charset=utf-8');
    const network = lines.filter((line) => line.type === 'network');
    expect(network).toEqual([
      expect.objectContaining({ step: 1, method: 'GET', host: '127.0.0.1', port: allowedPort, ip: '127.0.0.1', allowed: true, status: 200, url: `http://127.0.0.1:${allowedPort}/hello` }),
      expect.objectContaining({ step: 2, method: 'GET', host: '127.0.0.1', port: deniedPort, allowed: false, status: 403, bytes_in: 0, reason: expect.stringMatching(/allow-list/) }),
      expect.objectContaining({ step: 3, method: 'GET', port: allowedPort, allowed: true, status: 200 }),
    ]);
    for (const line of network) {
      expect(line.time).toEqual(expect.stringMatching(/^\d{4}-\d\d-\d\dT/));
      expect(line.duration_ms).toEqual(expect.any(Number));
    }
    expect(network[0]!.bytes_in).toBeGreaterThan(0);
    expect(network[0]!.bytes_out).toBeGreaterThan(0);
    const files = lines.filter((line) => line.type === 'file');
    expect(files).toEqual([
      expect.objectContaining({ step: 1, op: 'write', path: 'notes.txt', ok: true }),
      expect.objectContaining({ step: 3, op: 'read', path: 'notes.txt', ok: true }),
      expect.objectContaining({ step: 3, op: 'read', path: '../../etc/passwd', ok: false, error: 'path_outside_workspace' }),
    ]);
    // Paging: the lines after the first two.
    expect((await auditOf(jobId, 2)).lines).toEqual(lines.slice(2));
  });

  it('has no egress without an allow-list: "no network" in its isolation, and only file operations in its audit', async () => {
    app = await startTestApp();
    const scheduled = await post<{ job_id: string }>(app, '/schedule', { task: 'files', model: 'script:two-files.json' });
    const jobId = scheduled.body.job_id;
    await collectEvents(app, jobId);
    const job = await get<{ status: string; isolation: string; network: { allow: string[] } }>(app, `/jobs/${jobId}`);
    expect(job.status).toBe('complete');
    expect(job.isolation).toMatch(/no network/);
    expect(job.network.allow).toEqual([]);
    const { lines } = await auditOf(jobId);
    expect(lines.map((line) => [line.type, line.step, line.op, line.path])).toEqual([
      ['file', 1, 'write', 'hello.py'],
      ['file', 1, 'write', 'notes.txt'],
      ['file', 3, 'edit', 'notes.txt'],
    ]);
  });
});
