// The desktop/Jupyter/terminal proxies end to end on the host: orchestrator routes → a real sandboxd server on a
// unix socket → a real HTTP service on loopback (standing in for Jupyter/websockify, which the integration tests
// run for real inside sandboxes). HTTP and upgrades on the job's own host, links and sessions, ownership,
// revocation, Host and Origin checks, and what is stripped on the way.
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import { request as httpRequest } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../config.ts';
import { JobService } from '../../jobs/job-service.ts';
import { openSqliteStore } from '../../store/sqlite/index.ts';
import type { Store } from '../../store/types.ts';
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
let store: Store;
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
      response.writeHead(200, { 'content-type': 'text/plain', 'x-service': 'yes', 'set-cookie': 'workcell_token=planted; Domain=localhost; Path=/' }).end(`echo ${request.method} ${request.url}`);
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
  store = openSqliteStore(dir);
  jobs = new JobService({ config, store: store.jobs, logger });
  app = await buildServer({ config, jobs, keys: store.keys, logger });
  base = await app.listen({ host: '127.0.0.1', port: 0 });
});

afterEach(async () => {
  await app.close();
  client.close();
  await sandboxd.close();
  await new Promise((resolve) => upstream.close(resolve));
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

async function runningJob(owner?: string): Promise<string> {
  const { job } = await jobs.schedule({ task: 'x' }, undefined, owner);
  jobs.setLiveSandbox(job.id, { id: 'sb-test', jobId: job.id, runtime: 'test', isolation: 'none', client, exited: new Promise(() => {}), destroy: async () => {} } satisfies Sandbox);
  return job.id;
}

const port = () => new URL(base).port;
/** The Host of a job's own origin (browsers resolve *.localhost to loopback; here the connection goes to 127.0.0.1). */
const jobHost = (id: string) => `${id.replace('_', '-')}.localhost:${port()}`;

interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

/** One HTTP request to the orchestrator with any Host and headers (fetch may not set Host). */
function send(path: string, options: { host?: string; method?: string; headers?: Record<string, string>; body?: string } = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port: port(), path, method: options.method ?? 'GET', headers: { host: options.host ?? `127.0.0.1:${port()}`, ...options.headers } }, (res) => {
      let body = '';
      res.on('data', (chunk: Buffer) => (body += chunk.toString()));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end(options.body);
  });
}

/** A raw HTTP upgrade through the orchestrator; resolves with the response head and an echo of `payload`. */
function upgrade(path: string, payload: string, headers: Record<string, string> = {}, host = 'localhost'): Promise<{ head: string; echoed: string; closed: Promise<void> }> {
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port()), '127.0.0.1');
    const closed = new Promise<void>((done) => socket.on('close', () => done()));
    let data = '';
    socket.on('data', (chunk: Buffer) => {
      data += chunk.toString();
      const end = data.indexOf('\r\n\r\n');
      if (end >= 0 && !data.startsWith('HTTP/1.1 101')) {
        socket.destroy();
        resolve({ head: data.slice(0, end), echoed: '', closed });
      } else if (end >= 0 && data.length >= end + 4 + payload.length) {
        resolve({ head: data.slice(0, end), echoed: data.slice(end + 4), closed });
      }
    });
    socket.on('error', reject);
    socket.on('close', () => resolve({ head: data, echoed: '', closed }));
    const extra = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('');
    socket.write(`GET ${path} HTTP/1.1\r\nhost: ${host}\r\nconnection: Upgrade\r\nupgrade: echo\r\n${extra}\r\n`);
    socket.write(payload);
  });
}

/** Raw bytes to the orchestrator (what an HTTP client library would refuse to send); resolves with the status line. */
function raw(text: string): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect(Number(port()), '127.0.0.1', () => socket.end(text));
    let data = '';
    socket.on('data', (chunk: Buffer) => (data += chunk.toString()));
    socket.on('error', () => undefined);
    socket.on('close', () => resolve(data.split('\r\n')[0]!));
  });
}

/** Follows a link from POST /jobs/:id/links: the job's host trades it for a session cookie. */
async function openLink(url: string): Promise<{ answer: Answer; cookie: string | undefined }> {
  const parsed = new URL(url);
  const answer = await send(`${parsed.pathname}${parsed.search}`, { host: parsed.host });
  return { answer, cookie: answer.headers['set-cookie']?.[0]?.split(';')[0] };
}

describe('service pages on the job\'s own host', () => {
  it('proxies Jupyter with its public path and the desktop below its prefix; the sandbox may not set cookies or be framed by others', async () => {
    const id = await runningJob();
    const jupyter = await send(`/jobs/${id}/jupyter/api/status?x=1`, { host: jobHost(id), headers: { cookie: 'workcell_session=secret; _xsrf=abc' } });
    expect(jupyter.status).toBe(200);
    expect(jupyter.headers['x-service']).toBe('yes');
    expect(jupyter.body).toBe(`echo GET /jobs/${id}/jupyter/api/status?x=1`);
    expect(jupyter.headers['set-cookie']).toBeUndefined();
    expect(jupyter.headers['content-security-policy']).toMatch(/^frame-ancestors 'self' http:\/\/localhost:\*/);
    expect(seen[0]?.headers.cookie).toBe('_xsrf=abc'); // our credential is not passed on
    expect(seen[0]?.headers.authorization).toBeUndefined();
    const post = await send(`/jobs/${id}/jupyter/api/sessions`, { host: jobHost(id), method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"kernel":{"name":"python3"}}' });
    expect(post.status).toBe(200);
    expect(seen[1]).toMatchObject({ method: 'POST', url: `/jobs/${id}/jupyter/api/sessions`, body: '{"kernel":{"name":"python3"}}' });
    const page = await send(`/jobs/${id}/desktop/vnc.html`, { host: jobHost(id) });
    expect(page.body).toBe('echo GET /vnc.html');
    expect(started).toEqual([`jupyter /jobs/${id}/jupyter/`, `jupyter /jobs/${id}/jupyter/`, `desktop /jobs/${id}/desktop/`]);
  });

  it("sends the API's /jobs/:id/desktop/ to the job's host, and the job's host to the noVNC page", async () => {
    const id = await runningJob();
    const fromApi = await send(`/jobs/${id}/desktop/`);
    expect(fromApi.status).toBe(303);
    const target = new URL(fromApi.headers.location!);
    expect(target.host).toBe(jobHost(id));
    expect(target.pathname).toBe(`/jobs/${id}/desktop/`);
    const { answer } = await openLink(target.href);
    expect(answer.status).toBe(303);
    expect(answer.headers.location).toBe(`/jobs/${id}/desktop/`);
    const entry = await send(`/jobs/${id}/desktop/`, { host: jobHost(id) });
    expect(entry.status).toBe(302);
    expect(entry.headers.location).toBe(`/jobs/${id}/desktop/vnc.html?path=${encodeURIComponent(`jobs/${id}/desktop/websockify`)}&autoconnect=1&resize=remote&reconnect=1`);
    expect((await send(`/jobs/${id}/desktop`, { host: jobHost(id) })).headers.location).toBe(`/jobs/${id}/desktop/`);
    // The API's own pages of Jupyter keep their path on the job's host.
    expect(new URL((await send(`/jobs/${id}/jupyter/tree?a=b`)).headers.location!).pathname).toBe(`/jobs/${id}/jupyter/tree`);
    expect(seen).toEqual([]); // nothing reached the sandbox from the API's host
  });

  it('splices websocket upgrades through to the service on the job\'s host only', async () => {
    const id = await runningJob();
    const { head, echoed } = await upgrade(`/jobs/${id}/desktop/websockify`, 'hello over the tunnel', {}, jobHost(id));
    expect(head).toMatch(/^HTTP\/1.1 101/);
    expect(echoed).toBe('hello over the tunnel');
    expect(seen.at(-1)?.url).toBe('/websockify');
    expect((await upgrade(`/jobs/${id}/desktop/websockify`, 'x')).head).toMatch(/^HTTP\/1.1 404/); // not on the API's host
    expect((await upgrade(`/jobs/${id}/terminal`, 'x', {}, jobHost(id))).head).toMatch(/^HTTP\/1.1 404/); // the terminal is not a page
  });

  it('refuses jobs that are not running, unknown jobs, other jobs and the API on a job\'s host', async () => {
    const { job } = await jobs.schedule({ task: 'x' });
    const other = await runningJob();
    expect((await send(`/jobs/${job.id}/jupyter/api`, { host: jobHost(job.id) })).status).toBe(409);
    expect((await send('/jobs/job_00000000000000000000000000/jupyter/api', { host: jobHost('job_00000000000000000000000000') })).status).toBe(404);
    expect((await send(`/jobs/${other}/jupyter/api`, { host: jobHost(job.id) })).status).toBe(404);
    for (const path of ['/jobs', `/jobs/${job.id}`, '/openapi.json', `/jobs/${job.id}/events`]) expect((await send(path, { host: jobHost(job.id) })).status).toBe(404);
    expect((await send('/schedule', { host: jobHost(job.id), method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'x' })).status).toBe(404);
    expect((await send(`/jobs/${job.id}/jupyter/api`, { method: 'POST' })).status).toBe(404); // pages are not served on the API's host
    expect((await upgrade(`/jobs/${job.id}/desktop/websockify`, 'x', {}, jobHost(job.id))).head).toMatch(/^HTTP\/1.1 409/);
    expect((await upgrade('/jobs/job_00000000000000000000000000/desktop/websockify', 'x', {}, jobHost('job_00000000000000000000000000'))).head).toMatch(/^HTTP\/1.1 404/);
    expect((await upgrade(`/jobs/${other}/desktop/websockify`, 'x', {}, jobHost(job.id))).head).toMatch(/^HTTP\/1.1 404/);
    expect((await upgrade('/elsewhere', 'x')).head).toMatch(/^HTTP\/1.1 404/);
    expect(seen).toEqual([]);
  });
});

describe('with API keys', () => {
  it('opens pages only through one-time links that become a session for that job', async () => {
    const alice = (await store.keys.create('alice')).token;
    const bob = (await store.keys.create('bob')).token;
    const id = await runningJob((await store.keys.verify(alice)));
    const other = await runningJob((await store.keys.verify(alice)));
    expect((await send(`/jobs/${id}/jupyter/api`, { host: jobHost(id) })).status).toBe(401);
    expect((await send(`/jobs/${id}/jupyter/api`, { host: jobHost(id), headers: { authorization: `Bearer ${bob}` } })).status).toBe(404);
    expect((await send(`/jobs/${id}/jupyter/api`, { host: jobHost(id), headers: { authorization: `Bearer ${alice}` } })).status).toBe(200);
    // The key never travels in a URL or a cookie: links do.
    expect((await send(`/jobs/${id}/links`, { method: 'POST', headers: { authorization: `Bearer ${bob}`, 'content-type': 'application/json' }, body: '{"service":"jupyter"}' })).status).toBe(404);
    const made = await send(`/jobs/${id}/links`, { method: 'POST', headers: { authorization: `Bearer ${alice}`, 'content-type': 'application/json' }, body: '{"service":"jupyter"}' });
    expect(made.status).toBe(201);
    const { url, expires_at } = JSON.parse(made.body) as { url: string; expires_at: string };
    expect(url).not.toContain(alice.slice(-20));
    expect(Date.parse(expires_at) - Date.now()).toBeLessThanOrEqual(120_000);
    const { answer, cookie } = await openLink(url);
    expect(answer.status).toBe(303);
    expect(answer.headers.location).toBe(`/jobs/${id}/jupyter/`);
    expect(answer.headers['set-cookie']?.[0]).toMatch(/^workcell_session=[^;]+; Path=\/; Max-Age=28800; HttpOnly; SameSite=Lax$/);
    expect(cookie).toBeDefined();
    expect((await openLink(url)).answer.status).toBe(401); // once
    expect((await send(`/jobs/${id}/jupyter/lab`, { host: jobHost(id), headers: { cookie: cookie! } })).status).toBe(200);
    // The session is good for its job alone, and never for the API.
    expect((await send(`/jobs/${other}/jupyter/lab`, { host: jobHost(other), headers: { cookie: cookie! } })).status).toBe(401);
    expect((await send(`/jobs/${id}`, { headers: { cookie: cookie! } })).status).toBe(401);
    // A link for one page does not open another, nor another job's.
    const desktopLink = JSON.parse((await send(`/jobs/${id}/links`, { method: 'POST', headers: { authorization: `Bearer ${alice}`, 'content-type': 'application/json' }, body: '{"service":"desktop"}' })).body) as { url: string };
    const parsed = new URL(desktopLink.url);
    expect((await send(`/jobs/${id}/jupyter/${parsed.search}`, { host: parsed.host })).status).toBe(401);
    expect((await send(`/jobs/${other}/desktop/${parsed.search}`, { host: jobHost(other) })).status).toBe(401);
    expect((await send(`/jobs/${id}/desktop/?workcell_link=${'x'.repeat(50)}.${'y'.repeat(43)}`, { host: jobHost(id) })).status).toBe(401);
    // Websockets: the key in a header or the session cookie.
    expect((await upgrade(`/jobs/${id}/desktop/websockify`, 'x', {}, jobHost(id))).head).toMatch(/^HTTP\/1.1 401/);
    expect((await upgrade(`/jobs/${id}/desktop/websockify`, 'x', { authorization: `Bearer ${bob}` }, jobHost(id))).head).toMatch(/^HTTP\/1.1 404/);
    const viaCookie = await upgrade(`/jobs/${id}/desktop/websockify`, 'ok', { cookie: cookie! }, jobHost(id));
    expect(viaCookie.echoed).toBe('ok');
  });

  it('closes every session, stream and websocket of a key when it is revoked', async () => {
    const alice = await store.keys.create('alice');
    const id = await runningJob(alice.id);
    const link = JSON.parse((await send(`/jobs/${id}/links`, { method: 'POST', headers: { authorization: `Bearer ${alice.token}`, 'content-type': 'application/json' }, body: '{"service":"desktop"}' })).body) as { url: string };
    const { cookie } = await openLink(link.url);
    const socket = await upgrade(`/jobs/${id}/desktop/websockify`, 'ok', { cookie: cookie! }, jobHost(id));
    expect(socket.echoed).toBe('ok');
    const events = await fetch(`${base}/jobs/${id}/events`, { headers: { authorization: `Bearer ${alice.token}` } });
    expect(events.status).toBe(200);
    const streamEnded = events.text();
    await store.keys.revoke(alice.id);
    await socket.closed; // the watcher polls the store: within a second or so
    await streamEnded;
    expect((await send(`/jobs/${id}/jupyter/api`, { host: jobHost(id), headers: { cookie: cookie! } })).status).toBe(401);
  });
});

describe('hosts and origins', () => {
  it('refuses other Host names (DNS rebinding) but answers /healthz to any', async () => {
    for (const host of ['evil.example', 'evil.example:80', `127.0.0.1.evil.example:${port()}`, 'job-00000000000000000000000000.evil.example', 'localhost:80:80', '%00']) {
      expect((await send('/jobs', { host })).status).toBe(403);
    }
    for (const host of ['', 'a b', '[::1', 'localhost\u0000.evil.example']) expect(await raw(`GET /jobs HTTP/1.1\r\nhost: ${host}\r\n\r\n`)).toMatch(/^HTTP\/1.1 40[03]/);
    expect(await raw('GET /jobs HTTP/1.1\r\n\r\n')).toMatch(/^HTTP\/1.1 40[03]/);
    expect((await send('/jobs', { host: 'evil.example' })).body).toMatch(/WORKCELL_ALLOWED_HOSTS/);
    expect((await send('/healthz', { host: 'evil.example' })).status).toBe(200);
    for (const host of [`localhost:${port()}`, `127.0.0.1:${port()}`, `[::1]:${port()}`, 'localhost']) expect((await send('/jobs', { host })).status).toBe(200);
    expect((await upgrade('/jobs/job_00000000000000000000000000/terminal', 'x', {}, 'evil.example')).head).toMatch(/^HTTP\/1.1 403/);
  });

  it('refuses requests and websockets that pages of other origins send, while allowing its own and non-browser clients', async () => {
    const id = await runningJob();
    const schedule = (headers: Record<string, string>) => send('/schedule', { method: 'POST', headers: { 'content-type': 'text/plain', ...headers }, body: 'x' });
    expect((await schedule({ origin: 'http://evil.example' })).status).toBe(403);
    expect((await schedule({ origin: 'null' })).status).toBe(403);
    expect((await schedule({ origin: `http://localhost:${Number(port()) + 1}` })).status).toBe(403); // another local web app
    expect((await schedule({ 'sec-fetch-site': 'cross-site', 'sec-fetch-mode': 'no-cors' })).status).toBe(403);
    expect((await schedule({ origin: `http://${jobHost(id)}` })).status).toBe(403); // a sandbox page calling the API
    expect((await schedule({ origin: `http://127.0.0.1:${port()}`, 'sec-fetch-site': 'same-origin' })).status).toBe(202);
    expect((await schedule({})).status).toBe(202);
    // A link followed from another site is a navigation: it works (the page itself is on the job's host).
    expect((await send(`/jobs/${id}/desktop/`, { headers: { 'sec-fetch-site': 'cross-site', 'sec-fetch-mode': 'navigate' } })).status).toBe(303);
    expect((await upgrade(`/jobs/${id}/desktop/websockify`, 'x', { origin: 'http://evil.example' }, jobHost(id))).head).toMatch(/^HTTP\/1.1 403/);
    expect((await upgrade(`/jobs/${id}/desktop/websockify`, 'x', { origin: `http://${jobHost('job_00000000000000000000000000')}` }, jobHost(id))).head).toMatch(/^HTTP\/1.1 403/);
    expect((await upgrade(`/jobs/${id}/desktop/websockify`, 'ok', { origin: `http://${jobHost(id)}` }, jobHost(id))).echoed).toBe('ok');
  });

  it('survives resets, hostile cookies, headers and paths on every route and upgrade', async () => {
    const alice = await store.keys.create('alice');
    const id = await runningJob(alice.id);
    const hostile = ['workcell_session=%', 'workcell_token=%E0%A4%A', `workcell_session=${'%'.repeat(5000)}`, '=;=;;', 'workcell_session="%', 'a=\u00ff'];
    for (const cookie of hostile) {
      expect((await send('/jobs', { headers: { cookie } })).status).toBe(401);
      expect((await send(`/jobs/${id}/desktop/vnc.html`, { host: jobHost(id), headers: { cookie } })).status).toBe(401);
      expect((await upgrade(`/jobs/${id}/desktop/websockify`, 'x', { cookie }, jobHost(id))).head).toMatch(/^HTTP\/1.1 401/);
    }
    for (const path of ['/jobs/%', `/jobs/${id}/desktop/%%`, `/jobs/${id}/terminal?workcell_link=%`, '//', `/jobs/${id}/desktop/..%2f..%2fjobs`, `/${'a'.repeat(10_000)}`]) {
      await upgrade(path, 'x', { cookie: 'workcell_session=%' });
      await upgrade(path, 'x', {}, jobHost(id));
    }
    // Resets in the middle of upgrades, before and after the head.
    for (let i = 0; i < 20; i++) {
      await new Promise<void>((resolve) => {
        const socket = connect(Number(port()), '127.0.0.1', () => {
          socket.write(`GET /jobs/${id}/desktop/websockify HTTP/1.1\r\nhost: ${jobHost(id)}\r\nconnection: Upgrade\r\nupgrade: echo\r\nauthorization: Bearer ${alice.token}\r\n${i % 2 ? '\r\n' : ''}`);
          setImmediate(() => socket.resetAndDestroy());
        });
        socket.on('error', () => undefined);
        socket.on('close', () => resolve());
      });
    }
    for (const head of ['authorization: Bearer \u00ff\u0001', 'authorization: Bearer', `cookie: ${'a=b; '.repeat(3000)}`, 'origin: \u00ff', 'sec-fetch-site: \u0000']) {
      expect(await raw(`GET /jobs HTTP/1.1\r\nhost: localhost\r\n${head}\r\n\r\n`)).toMatch(/^HTTP\/1.1 4\d\d/);
      await raw(`GET /jobs/${id}/desktop/websockify HTTP/1.1\r\nhost: ${jobHost(id)}\r\nconnection: Upgrade\r\nupgrade: echo\r\n${head}\r\n\r\n`);
    }
    expect((await send('/healthz')).status).toBe(200);
    expect((await send('/jobs', { headers: { authorization: `Bearer ${alice.token}` } })).status).toBe(200);
  });
});

describe('behind HTTPS (WORKCELL_SANDBOX_URL)', () => {
  it("puts each job on its host under the configured domain, with Secure cookies, and only there", async () => {
    const config = loadConfig({}, { dataDir: dir, publicUrl: 'https://workcell.example.com', sandboxUrl: 'https://{job}.sandbox.example.net' });
    const logger = pino({ level: 'silent' });
    const server = await buildServer({ config, jobs: new JobService({ config, store: store.jobs, logger }), keys: store.keys, logger });
    try {
      const { job } = await jobs.schedule({ task: 'x' });
      const made = await server.inject({ method: 'POST', url: `/jobs/${job.id}/links`, headers: { host: 'workcell.example.com' }, payload: { service: 'jupyter' } });
      expect(made.statusCode).toBe(201);
      const link = new URL(made.json<{ url: string }>().url);
      expect(link.origin).toBe(`https://${job.id.replace('_', '-')}.sandbox.example.net`);
      const traded = await server.inject({ url: `${link.pathname}${link.search}`, headers: { host: link.host } });
      expect(traded.statusCode).toBe(303);
      expect(String(traded.headers['set-cookie'])).toMatch(/; HttpOnly; SameSite=Lax; Secure$/);
      // The default job host is not served once a domain is configured, nor is the API on the job's host.
      expect((await server.inject({ url: `/jobs/${job.id}/jupyter/`, headers: { host: `${job.id.replace('_', '-')}.localhost` } })).statusCode).toBe(403);
      expect((await server.inject({ url: '/jobs', headers: { host: link.host } })).statusCode).toBe(404);
      expect((await server.inject({ url: '/jobs', headers: { host: 'workcell.example.com' } })).statusCode).toBe(200);
    } finally {
      await server.close();
    }
  });

  it('refuses links to pages when the API is reached by another name and no sandbox domain is set', async () => {
    const config = loadConfig({}, { dataDir: dir, publicUrl: 'https://workcell.example.com' });
    const logger = pino({ level: 'silent' });
    const server = await buildServer({ config, jobs: new JobService({ config, store: store.jobs, logger }), keys: store.keys, logger });
    try {
      const { job } = await jobs.schedule({ task: 'x' });
      const made = await server.inject({ method: 'POST', url: `/jobs/${job.id}/links`, headers: { host: 'workcell.example.com' }, payload: { service: 'desktop' } });
      expect(made.statusCode).toBe(409);
      expect(made.json<{ detail: string }>().detail).toMatch(/set WORKCELL_SANDBOX_URL/);
      expect((await server.inject({ method: 'POST', url: `/jobs/${job.id}/links`, headers: { host: 'workcell.example.com' }, payload: { service: 'terminal' } })).json<{ url: string }>().url).toMatch(/^wss:\/\/workcell\.example\.com\/jobs\//);
      for (const payload of [{ service: 'shell' }, {}, { service: 'desktop', extra: 1 }]) {
        expect((await server.inject({ method: 'POST', url: `/jobs/${job.id}/links`, payload })).statusCode).toBe(400);
      }
    } finally {
      await server.close();
    }
  });
});
