// JupyterServer's life cycle with a stand-in for jupyter-server (a small Node HTTP server that checks the token the way
// Jupyter does), and the ServiceRegistry adding the token to what it proxies. The real server and kernels are in
// test/integration/code/.
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, request, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createSandboxdServer, type SandboxdServer } from '../server.ts';
import { ServiceRegistry } from '../services.ts';
import { jupyterEnvironment, JupyterServer, normalizeBaseUrl } from './jupyter-server.ts';

let dir: string;
let fakeJupyter: string;
const servers: JupyterServer[] = [];

/** A free loopback port (the stand-in, like Jupyter with --port-retries=0, takes exactly the one it is given). */
function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const probe = createServer().listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as AddressInfo;
      probe.close(() => resolve(port));
    });
  });
}

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'workcell-jupyter-'));
  fakeJupyter = join(dir, 'fake-jupyter-server');
  // Answers every path with what it saw, if the token matches; exits at once when FAKE_EXIT is set.
  await writeFile(
    fakeJupyter,
    `#!${process.execPath}
const http = require('node:http');
if (process.env.FAKE_EXIT) { console.error('[C 00:00:00 ServerApp] ' + process.env.FAKE_EXIT); process.exit(1); }
const arg = (name) => process.argv.find((a) => a.startsWith('--' + name + '='))?.split('=').slice(1).join('=');
const token = process.env.JUPYTER_TOKEN;
http.createServer((req, res) => {
  if (req.headers.authorization !== 'token ' + token) { res.writeHead(403).end(); return; }
  res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ url: req.url, base: arg('ServerApp.base_url'), root: arg('ServerApp.root_dir'), pid: process.pid, proxy: process.env.HTTP_PROXY ?? null }));
}).listen(Number(arg('port')), arg('ip'));
`,
  );
  await chmod(fakeJupyter, 0o755);
});

afterEach(async () => {
  await Promise.all(servers.splice(0).map((server) => server.close()));
  await rm(dir, { recursive: true, force: true });
});

async function jupyter(options: { baseUrl?: string; env?: Record<string, string> } = {}): Promise<JupyterServer> {
  const server = new JupyterServer({ rootDir: dir, port: await freePort(), env: jupyterEnvironment(options.env), command: fakeJupyter, baseUrl: options.baseUrl, startTimeoutMs: 10_000 });
  servers.push(server);
  return server;
}

describe('JupyterServer', () => {
  it('starts on first use with the token, base URL and root, and answers its API', async () => {
    const server = await jupyter({ baseUrl: '/jobs/job_1/jupyter', env: { HTTP_PROXY: 'http://127.0.0.1:3128' } });
    expect(server.running).toBe(false);
    await server.ensureStarted();
    expect(server.running).toBe(true);
    expect(server.generation).toBe(1);
    const { status, json } = await server.api('GET', 'api/status');
    expect(status).toBe(200);
    expect(json).toMatchObject({ url: '/jobs/job_1/jupyter/api/status', base: '/jobs/job_1/jupyter/', root: dir, proxy: 'http://127.0.0.1:3128' });
    expect(server.websocketUrl('api/kernels/k/channels')).toBe(`ws://127.0.0.1:${server.port}/jobs/job_1/jupyter/api/kernels/k/channels`);
    // Concurrent first uses start one server.
    await Promise.all([server.ensureStarted(), server.ensureStarted()]);
    expect(server.generation).toBe(1);
  });

  it('takes its base URL from the first proxied request when none was given, and refuses another one later', async () => {
    const server = await jupyter();
    await server.ensureStarted('/jobs/job_2/jupyter/');
    expect(server.baseUrl).toBe('/jobs/job_2/jupyter/');
    await expect(server.ensureStarted('/jobs/other/jupyter/')).rejects.toThrow(/served under \/jobs\/job_2\/jupyter\/, not \/jobs\/other\/jupyter\/: start sandboxd with --jupyter-base-url/);
  });

  it('starts again, as a new generation, after the server died', async () => {
    const server = await jupyter();
    await server.ensureStarted();
    const { json } = await server.api('GET', 'api/status');
    process.kill((json as { pid: number }).pid, 'SIGKILL');
    await expect.poll(() => server.running).toBe(false);
    await server.ensureStarted();
    expect(server.generation).toBe(2);
    expect((await server.api('GET', 'api/status')).status).toBe(200);
  });

  it('says why it could not start', async () => {
    const crashing = new JupyterServer({ rootDir: dir, port: await freePort(), env: { ...jupyterEnvironment(), FAKE_EXIT: 'no module named jupyter_server' }, command: fakeJupyter, startTimeoutMs: 10_000 });
    servers.push(crashing);
    await expect(crashing.ensureStarted()).rejects.toThrow(/the Jupyter server could not start: it exited \(1\) while starting\nits last log lines:\n.*no module named jupyter_server/);
    const missing = new JupyterServer({ rootDir: dir, port: await freePort(), env: jupyterEnvironment(), command: join(dir, 'no-such-command') });
    servers.push(missing);
    await expect(missing.ensureStarted()).rejects.toThrow(/could not be started \(spawn .*ENOENT\); is jupyter-server installed in the image\?/);
  });

  it('stops with close(), and refuses to start afterwards', async () => {
    const server = await jupyter();
    await server.ensureStarted();
    await server.close();
    expect(server.running).toBe(false);
    await expect(server.ensureStarted()).rejects.toThrow(/shutting down/);
  });

  it('normalizes base URLs', () => {
    expect(normalizeBaseUrl('/jobs/a/jupyter')).toBe('/jobs/a/jupyter/');
    expect(normalizeBaseUrl('/jobs/a/jupyter/')).toBe('/jobs/a/jupyter/');
    expect(normalizeBaseUrl('jobs/a')).toBe('/');
    expect(normalizeBaseUrl('/a b/')).toBe('/');
  });
});

describe('the jupyter service through sandboxd', () => {
  let sandboxd: SandboxdServer | undefined;
  afterEach(async () => {
    await sandboxd?.close();
    sandboxd = undefined;
  });

  it('is started by the first proxied request and gets the token, which the caller never sends nor sees', async () => {
    const port = await freePort();
    const services = new ServiceRegistry();
    sandboxd = createSandboxdServer({ token: 'sandbox-token', workspaceRoot: dir, services, code: { jupyterPort: port, jupyterCommand: fakeJupyter } });
    expect(services.names()).toContain('jupyter');
    const socketPath = join(dir, 'sandboxd.sock');
    await new Promise<void>((resolve) => sandboxd!.httpServer.listen(socketPath, resolve));
    const response = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = request(
        { socketPath, path: '/v1/services/jupyter/jobs/job_3/jupyter/api/status', headers: { authorization: 'Bearer sandbox-token', 'x-workcell-base-path': '/jobs/job_3/jupyter/' } },
        (res: IncomingMessage) => {
          let body = '';
          res.on('data', (chunk: Buffer) => (body += chunk.toString()));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        },
      );
      req.on('error', reject);
      req.end();
    });
    expect(response.status).toBe(200);
    expect(JSON.parse(response.body)).toMatchObject({ url: '/jobs/job_3/jupyter/api/status', base: '/jobs/job_3/jupyter/' });
    expect(response.body).not.toContain('sandbox-token');
  });
});
