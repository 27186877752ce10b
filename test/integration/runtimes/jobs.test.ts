// Whole jobs on every runtime, through the API: the skeleton's two-files trajectory (the workspace comes back in the
// zip, GET /status/:id and GET /jobs/:id say which runtime and isolation the job got), and the network allow-list
// through the egress proxy (the allowed host server answers through HTTP_PROXY, another port is refused by the
// proxy, direct connections get nothing, and the audit log has each connection). A runtime that is asked for and not
// available fails the job at once, saying what is missing.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { collectEvents, downloadZip, get, post, startTestApp, trajectoriesDir, type TestApp } from '../../helpers/app.ts';
import { acquireRuntime, runtimeCases, skipReason } from './runtimes.ts';

interface Status {
  status: string;
  error?: string;
  runtime: string | null;
  isolation: string | null;
}

let allowed: HttpServer;
let allowedPort = 0;
let denied: Server;
let deniedPort = 0;
let deniedConnections = 0;
let scriptDir: string;

beforeAll(async () => {
  allowed = createHttpServer((request, response) => response.end(`hello from the host: ${request.url}\n`));
  await new Promise<void>((resolve) => allowed.listen(0, '127.0.0.1', resolve));
  allowedPort = (allowed.address() as { port: number }).port;
  denied = createServer((socket) => {
    deniedConnections++;
    socket.end('HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsecret');
  });
  await new Promise<void>((resolve) => denied.listen(0, '127.0.0.1', resolve));
  deniedPort = (denied.address() as { port: number }).port;
  scriptDir = mkdtempSync(join(tmpdir(), 'workcell-runtime-jobs-'));
  for (const name of ['two-files.json']) writeFileSync(join(scriptDir, name), readFileSync(join(trajectoriesDir, name)));
  const template = readFileSync(join(trajectoriesDir, 'network-egress.template.json'), 'utf8');
  writeFileSync(join(scriptDir, 'network-egress.json'), template.replaceAll('{{ALLOWED_PORT}}', String(allowedPort)).replaceAll('{{DENIED_PORT}}', String(deniedPort)));
});

afterAll(async () => {
  await Promise.all([allowed, denied].map((server) => new Promise((resolve) => server.close(resolve))));
  rmSync(scriptDir, { recursive: true, force: true });
});

for (const runtimeCase of runtimeCases) {
  const skip = await skipReason(runtimeCase.name);
  if (skip !== undefined) console.warn(`skipping the ${runtimeCase.name} job tests: ${skip}`);
  const timeout = runtimeCase.slow ? 600_000 : 180_000;

  describe.skipIf(skip !== undefined)(`jobs on ${runtimeCase.name}`, () => {
    let app: TestApp | undefined;
    let release: (() => Promise<void>) | undefined;
    beforeAll(async () => {
      release = (await acquireRuntime(runtimeCase.name)).release;
      app = await startTestApp({ scriptDir, runtime: 'auto' });
    }, timeout);
    afterAll(async () => {
      try {
        await app?.close();
      } finally {
        await release?.();
      }
    }, timeout);

    it('runs the two-files job: complete, the workspace zipped, the runtime and isolation reported', async () => {
      const scheduled = await post<{ job_id: string }>(app!, '/schedule', { task: 'two files', model: 'script:two-files.json', runtime: runtimeCase.name });
      expect(scheduled.status).toBe(202);
      const jobId = scheduled.body.job_id;
      const events = await collectEvents(app!, jobId);
      const status = await get<Status>(app!, `/status/${jobId}`);
      expect(status.status, status.error).toBe('complete');
      expect(status.runtime).toBe(runtimeCase.name);
      expect(status.isolation).toMatch(new RegExp(`^${runtimeCase.name}`));
      expect(status.isolation).toMatch(/no network/);
      const detail = await get<{ runtime: string; runtime_used: string }>(app!, `/jobs/${jobId}`);
      expect(detail).toMatchObject({ runtime: runtimeCase.name, runtime_used: runtimeCase.name });
      const shell = events.find((event) => event.type === 'tool-result' && event.data.name === 'shell');
      expect(shell?.data).toMatchObject({ is_error: false, output: expect.stringContaining('Hello from workcell') });
      const zip = await downloadZip(app!, jobId);
      expect([...zip.keys()].sort()).toEqual(['hello.py', 'notes.txt']);
      expect(zip.get('notes.txt')?.content).toBe('status: verified (python3 hello.py printed the greeting)\n');
    }, timeout);

    it('reaches only the allow-listed destination, through the egress proxy, and audits it', async () => {
      const before = deniedConnections;
      const scheduled = await post<{ job_id: string }>(app!, '/schedule', {
        task: 'fetch',
        model: 'script:network-egress.json',
        runtime: runtimeCase.name,
        network: { allow: [`127.0.0.1:${allowedPort}`] },
      });
      const jobId = scheduled.body.job_id;
      const events = await collectEvents(app!, jobId);
      const status = await get<Status>(app!, `/status/${jobId}`);
      expect(status.status, status.error).toBe('complete');
      expect(status.isolation).toMatch(/egress proxy/);
      const shell = events.filter((event) => event.type === 'tool-result' && event.data.name === 'shell').map((event) => String(event.data.output));
      expect(shell[0]).toContain('hello from the host: /hello');
      expect(shell[1]).toContain(`127.0.0.1:${deniedPort} was refused: it is not in this job's network allow-list`);
      expect(shell[1]).toContain('status=403');
      expect(shell[2]).toContain('hello from the host: /from-python');
      // A program that ignores HTTP_PROXY: the host's loopback is not the sandbox's, and there is no route out.
      expect(shell[3]).toContain(`DIRECT-FAILED ('127.0.0.1', ${allowedPort})`);
      expect(shell[3]).toContain("DIRECT-FAILED ('1.1.1.1', 443)");
      expect(shell[3]).not.toContain('CONNECTED');
      expect(deniedConnections).toBe(before);
      const audit = (await (await fetch(`${app!.url}/jobs/${jobId}/audit`)).text()).trimEnd().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>);
      expect(audit.filter((line) => line.type === 'network')).toEqual([
        expect.objectContaining({ step: 1, host: '127.0.0.1', port: allowedPort, allowed: true, status: 200 }),
        expect.objectContaining({ step: 2, host: '127.0.0.1', port: deniedPort, allowed: false, status: 403 }),
        expect.objectContaining({ step: 3, port: allowedPort, allowed: true, status: 200 }),
      ]);
    }, timeout);
  });
}

describe('a runtime that is not available', () => {
  it('fails the job at once, saying what is missing', async () => {
    const app = await startTestApp({ microvmVmm: 'firecracker' });
    try {
      const scheduled = await post<{ job_id: string }>(app, '/schedule', { task: 'two files', model: 'script:two-files.json', runtime: 'microvm' });
      await collectEvents(app, scheduled.body.job_id);
      const status = await get<Status>(app, `/status/${scheduled.body.job_id}`);
      expect(status.status).toBe('error');
      expect(status.error).toMatch(/the microvm runtime is not available: (firecracker is not on PATH|Firecracker needs KVM)/);
      expect(status.runtime).toBeNull();
    } finally {
      await app.close();
    }
  });
});
