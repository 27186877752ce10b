// The desktop/Jupyter/terminal proxies end to end on the host: orchestrator routes → a real sandboxd server on a
// unix socket → a real HTTP service on loopback (standing in for Jupyter/websockify, which the integration tests
// run for real inside sandboxes). HTTP and upgrades, auth, ownership, and what is stripped on the way.
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../config.ts';
import { JobService } from '../../jobs/job-service.ts';
import { JobStore } from '../../jobs/job-store.ts';
import { SandboxdClient } from '../../runtimes/sandboxd-client.ts';
import type { Sandbox } from '../../runtimes/types.ts';
import { createSandboxdServer, type SandboxdServer } from '../../sandboxd/server.ts';
import { ServiceRegistry } from '../../sandboxd/services.ts';
import { buildServer } from '../server.ts';

interface Seen {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: string;
}

let dir: string;
let store: JobStore;
let jobs: JobService;
let app: FastifyInstance;
let base: string;
let upstream: Server;
let sandboxd: SandboxdServer;
let client: SandboxdClient;
const seen: Seen[] = [];
const started: string[] = [];

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'workcell-proxy-'));
  seen.length = 0;
  started.length = 0;
  // The service: echoes what it got; upgrades answer 101 and echo bytes.
  upstream = createServer((request, response) => {
    let body = '';
    request.on('data', (chunk: Buffer) => (body += chunk.toString()));
    request.on('end', () => {
      seen.push({ method: request.method!, url: request.url!, headers: request.headers, body });
      response.writeHead(200, { 'content-type': 'text/plain', 'x-service': 'yes' }).end(`echo ${request.method} ${request.url}`);
    });
  });
  upstream.on('upgrade', (request, socket) => {
    seen.push({ method: request.method!, url: request.url!, headers: request.headers, body: '' });
    socket.write('HTTP/1.1 101 Switching Protocols\r\nupgrade: echo\r\nconnection: Upgrade\r\n\r\n');
    socket.pipe(socket);
  });
  await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
  const port = (upstream.address() as AddressInfo).port;
  const services = new ServiceRegistry();
  services.register('jupyter', { port, stripBasePath: false, ensureStarted: async (basePath) => void started.push(`jupyter ${basePath}`) });
  services.register('desktop', { port, stripBasePath: true, ensureStarted: async (basePath) => void started.push(`desktop ${basePath}`) });
  sandboxd = createSandboxdServer({ token: 'sandbox-token', workspaceRoot: dir, services });
  const socketPath = join(dir, 'sandboxd.sock');
  await new Promise<void>((resolve) => sandboxd.httpServer.listen(socketPath, resolve));
  client = new SandboxdClient({ socketPath }, 'sandbox-token');

  const config = loadConfig({}, { dataDir: dir });
  const logger = pino({ level: 'silent' });
  store = new JobStore(dir);
  jobs = new JobService({ config, store, logger });
  app = await buildServer({ config, jobs, logger });
  base = await app.listen({ host: '127.0.0.1', port: 0 });
});

afterEach(async () => {
  await app.close();
  client.close();
  await sandboxd.close();
  await new Promise((resolve) => upstream.close(resolve));
  store.close();
  rmSync(dir, { recursive: true, force: true });
});

async function runningJob(owner?: string): Promise<string> {
  const { job } = await jobs.schedule({ task: 'x' }, undefined, owner);
  jobs.setLiveSandbox(job.id, { id: 'sb-test', jobId: job.id, runtime: 'test', isolation: 'none', client, exited: new Promise(() => {}), destroy: async () => {} } satisfies Sandbox);
  return job.id;
}

/** A raw HTTP upgrade through the orchestrator; resolves with the response head and an echo of `payload`. */
function upgrade(path: string, payload: string, headers: Record<string, string> = {}): Promise<{ head: string; echoed: string }> {
  return new Promise((resolve, reject) => {
    const socket = connect(Number(new URL(base).port), '127.0.0.1');
    let data = '';
    socket.on('data', (chunk: Buffer) => {
      data += chunk.toString();
      const end = data.indexOf('\r\n\r\n');
      if (end >= 0 && !data.startsWith('HTTP/1.1 101')) {
        socket.destroy();
        resolve({ head: data.slice(0, end), echoed: '' });
      } else if (end >= 0 && data.length >= end + 4 + payload.length) {
        socket.destroy();
        resolve({ head: data.slice(0, end), echoed: data.slice(end + 4) });
      }
    });
    socket.on('error', reject);
    socket.on('close', () => resolve({ head: data, echoed: '' }));
    const extra = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('');
    socket.write(`GET ${path} HTTP/1.1\r\nhost: localhost\r\nconnection: Upgrade\r\nupgrade: echo\r\n${extra}\r\n`);
    socket.write(payload);
  });
}

describe('service proxies', () => {
  it('proxies Jupyter with its public path, and the desktop below its prefix, starting each on first use', async () => {
    const id = await runningJob();
    const jupyter = await fetch(`${base}/jobs/${id}/jupyter/api/status?x=1`, { headers: { cookie: 'workcell_token=secret; _xsrf=abc' } });
    expect(jupyter.status).toBe(200);
    expect(jupyter.headers.get('x-service')).toBe('yes');
    expect(await jupyter.text()).toBe(`echo GET /jobs/${id}/jupyter/api/status?x=1`);
    expect(seen[0]?.headers.cookie).toBe('_xsrf=abc'); // our credential is not passed on
    expect(seen[0]?.headers.authorization).toBeUndefined();
    const post = await fetch(`${base}/jobs/${id}/jupyter/api/sessions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"kernel":{"name":"python3"}}' });
    expect(post.status).toBe(200);
    expect(seen[1]).toMatchObject({ method: 'POST', url: `/jobs/${id}/jupyter/api/sessions`, body: '{"kernel":{"name":"python3"}}' });
    const page = await fetch(`${base}/jobs/${id}/desktop/vnc.html`);
    expect(await page.text()).toBe('echo GET /vnc.html');
    expect(started).toEqual([`jupyter /jobs/${id}/jupyter/`, `jupyter /jobs/${id}/jupyter/`, `desktop /jobs/${id}/desktop/`]);
  });

  it('sends /jobs/:id/desktop/ to the noVNC page with the websocket path', async () => {
    const id = await runningJob();
    const response = await fetch(`${base}/jobs/${id}/desktop/`, { redirect: 'manual' });
    expect(response.status).toBe(302);
    expect(response.headers.get('location')).toBe(`/jobs/${id}/desktop/vnc.html?path=${encodeURIComponent(`jobs/${id}/desktop/websockify`)}&autoconnect=1&resize=remote&reconnect=1`);
    expect((await fetch(`${base}/jobs/${id}/desktop`, { redirect: 'manual' })).headers.get('location')).toBe(`/jobs/${id}/desktop/`);
  });

  it('splices websocket upgrades through to the service', async () => {
    const id = await runningJob();
    const { head, echoed } = await upgrade(`/jobs/${id}/desktop/websockify`, 'hello over the tunnel');
    expect(head).toMatch(/^HTTP\/1.1 101/);
    expect(echoed).toBe('hello over the tunnel');
    expect(seen.at(-1)?.url).toBe('/websockify');
  });

  it('refuses jobs that are not running, unknown jobs and other paths', async () => {
    const { job } = await jobs.schedule({ task: 'x' });
    expect((await fetch(`${base}/jobs/${job.id}/jupyter/api`)).status).toBe(409);
    expect((await fetch(`${base}/jobs/job_00000000000000000000000000/jupyter/api`)).status).toBe(404);
    expect((await upgrade(`/jobs/${job.id}/desktop/websockify`, 'x')).head).toMatch(/^HTTP\/1.1 409/);
    expect((await upgrade('/jobs/job_00000000000000000000000000/desktop/websockify', 'x')).head).toMatch(/^HTTP\/1.1 404/);
    expect((await upgrade('/elsewhere', 'x')).head).toMatch(/^HTTP\/1.1 404/);
    expect(seen).toEqual([]);
  });

  it('with API keys: needs the owner\'s key; a link with ?access_token= becomes a cookie', async () => {
    const alice = store.createApiKey('alice').token;
    const bob = store.createApiKey('bob').token;
    const aliceOwner = store.verifyApiKey(alice)!;
    const id = await runningJob(aliceOwner);
    expect((await fetch(`${base}/jobs/${id}/jupyter/api`)).status).toBe(401);
    expect((await fetch(`${base}/jobs/${id}/jupyter/api`, { headers: { authorization: `Bearer ${bob}` } })).status).toBe(404);
    expect((await fetch(`${base}/jobs/${id}/jupyter/api`, { headers: { authorization: `Bearer ${alice}` } })).status).toBe(200);
    const link = await fetch(`${base}/jobs/${id}/jupyter/lab?access_token=${encodeURIComponent(alice)}&a=b`, { redirect: 'manual' });
    expect(link.status).toBe(303);
    expect(link.headers.get('location')).toBe(`/jobs/${id}/jupyter/lab?a=b`);
    const cookie = link.headers.get('set-cookie')!;
    expect(cookie).toMatch(new RegExp(`^workcell_token=.+; Path=/jobs/${id}/; HttpOnly; SameSite=Strict$`));
    expect((await fetch(`${base}/jobs/${id}/jupyter/lab`, { headers: { cookie: cookie.split(';')[0]! } })).status).toBe(200);
    // Query tokens are accepted only on browser entry points, not on the API.
    expect((await fetch(`${base}/jobs/${id}?access_token=${encodeURIComponent(alice)}`)).status).toBe(401);
    // Websockets: header, cookie or query token; a wrong owner is "not found".
    expect((await upgrade(`/jobs/${id}/desktop/websockify`, 'x')).head).toMatch(/^HTTP\/1.1 401/);
    expect((await upgrade(`/jobs/${id}/desktop/websockify`, 'x', { authorization: `Bearer ${bob}` })).head).toMatch(/^HTTP\/1.1 404/);
    expect((await upgrade(`/jobs/${id}/desktop/websockify?access_token=${encodeURIComponent(alice)}`, 'ok')).echoed).toBe('ok');
    expect((await upgrade(`/jobs/${id}/desktop/websockify`, 'ok', { cookie: cookie.split(';')[0]! })).echoed).toBe('ok');
  });
});
