// The network option of POST /schedule and GET /jobs/:id/audit, against a real store and job directories (no worker).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig, type Config } from '../../config.ts';
import { JobService } from '../../jobs/job-service.ts';
import { openSqliteStore } from '../../store/sqlite/index.ts';
import type { Store } from '../../store/types.ts';
import { buildServer } from '../server.ts';

let dir: string | undefined;
let store: Store | undefined;
let app: FastifyInstance | undefined;
let jobs: JobService;

async function start(overrides: Partial<Config> = {}): Promise<FastifyInstance> {
  dir = mkdtempSync(join(tmpdir(), 'workcell-api-audit-'));
  const config = loadConfig({}, { dataDir: dir, ...overrides });
  const logger = pino({ level: 'silent' });
  store = openSqliteStore(dir);
  jobs = new JobService({ config, store: store.jobs, logger });
  app = await buildServer({ config, jobs, keys: store.keys, logger });
  return app;
}
afterEach(async () => {
  await app?.close();
  await store?.close();
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  [app, store, dir] = [undefined, undefined, undefined];
});

const schedule = (server: FastifyInstance, body: unknown, headers: Record<string, string> = {}) =>
  server.inject({ method: 'POST', url: '/schedule', payload: JSON.stringify(body), headers: { 'content-type': 'application/json', ...headers } });

describe('POST /schedule network', () => {
  it('stores the normalized list; the detail shows it with the server defaults', async () => {
    const server = await start({ networkAllow: ['pypi.org', '*.npmjs.org'] });
    const response = await schedule(server, { task: 'x', network: { allow: ['Example.COM', 'pypi.org', '127.0.0.1:8080', '[::1]:9000'] } });
    expect(response.statusCode).toBe(202);
    const { job_id } = response.json<{ job_id: string }>();
    expect((await store!.jobs.get(job_id))?.network).toEqual({ allow: ['example.com', 'pypi.org', '127.0.0.1:8080', '[::1]:9000'] });
    const detail = (await server.inject(`/jobs/${job_id}`)).json<{ network: { allow: string[] }; audit_url: string }>();
    expect(detail.network.allow).toEqual(['pypi.org', '*.npmjs.org', 'example.com', '127.0.0.1:8080', '[::1]:9000']);
    expect(detail.audit_url).toMatch(new RegExp(`/jobs/${job_id}/audit$`));
    // Without a list: none of its own, the server's only.
    const plain = (await schedule(server, { task: 'x' })).json<{ job_id: string }>();
    expect((await store!.jobs.get(plain.job_id))?.network).toEqual({ allow: [] });
  });

  it('answers a bad entry with a 400 that names it and says what to write', async () => {
    const server = await start();
    for (const [allow, message] of [
      [['example.com', 'http://evil.com/x'], /network\.allow\.1: "http:\/\/evil.com\/x" is not a destination: write the host alone/],
      [['*.'], /network\.allow\.0: "\*\." is not a valid pattern/],
      [['example.com:99999'], /port outside 1 to 65535/],
      [['0.0.0.0'], /unspecified address/],
      [[42], /network\.allow\.0/],
    ] as const) {
      const response = await schedule(server, { task: 'x', network: { allow } });
      expect(response.statusCode, JSON.stringify(allow)).toBe(400);
      expect(response.json<{ detail: string }>().detail).toMatch(message);
    }
    expect((await schedule(server, { task: 'x', network: { allow: [], deny: [] } })).statusCode).toBe(400);
    expect((await schedule(server, { task: 'x', network: { allow: Array.from({ length: 257 }, (_, i) => `h${i}.example`) } })).statusCode).toBe(400);
  });

  it('refuses private addresses in the list of a job scheduled with an API key, unless the operator allows them', async () => {
    const server = await start();
    const { token } = await store!.keys.create('alice');
    const auth = { authorization: `Bearer ${token}` };
    const refused = await schedule(server, { task: 'x', network: { allow: ['10.0.0.5:5432'] } }, auth);
    expect(refused.statusCode).toBe(400);
    expect(refused.json<{ detail: string }>().detail).toMatch(/"10.0.0.5:5432" is a private address[^]*WORKCELL_NETWORK_ALLOW/);
    expect((await schedule(server, { task: 'x', network: { allow: ['example.com', 'db.internal:5432'] } }, auth)).statusCode).toBe(202);
    await app!.close();
    await store!.close();
    rmSync(dir!, { recursive: true, force: true });

    const permissive = await start({ networkJobPrivate: true });
    const key = (await store!.keys.create('bob')).token;
    expect((await schedule(permissive, { task: 'x', network: { allow: ['10.0.0.5:5432'] } }, { authorization: `Bearer ${key}` })).statusCode).toBe(202);
  });
});

describe('GET /jobs/:id/audit', () => {
  it('404s an unknown job, sends an empty body for a job with no entries, else the JSON lines after ?after=', async () => {
    const server = await start();
    expect((await server.inject('/jobs/job_00000000000000000000000000/audit')).statusCode).toBe(404);
    expect((await server.inject('/jobs/nope/audit')).statusCode).toBe(404);
    const { job_id } = (await schedule(server, { task: 'x' })).json<{ job_id: string }>();
    const empty = await server.inject(`/jobs/${job_id}/audit`);
    expect(empty.statusCode).toBe(200);
    expect(empty.headers['content-type']).toBe('application/x-ndjson; charset=utf-8');
    expect(empty.body).toBe('');
    const lines = ['{"type":"file","n":1}', '{"type":"network","n":2}', '{"type":"file","n":3}'];
    writeFileSync(jobs.jobFiles((await store!.jobs.get(job_id))!).audit, `${lines.join('\n')}\n`); // as a worker writes it
    expect((await server.inject(`/jobs/${job_id}/audit`)).body).toBe(`${lines.join('\n')}\n`);
    expect((await server.inject(`/jobs/${job_id}/audit?after=2`)).body).toBe(`${lines[2]}\n`);
    expect((await server.inject(`/jobs/${job_id}/audit?after=3`)).body).toBe('');
    expect((await server.inject(`/jobs/${job_id}/audit?after=-1`)).statusCode).toBe(400);
    expect((await server.inject(`/jobs/${job_id}/audit?from=1`)).statusCode).toBe(400);
  });

  it("is another API key's job: 404", async () => {
    const server = await start();
    const alice = (await store!.keys.create('alice')).token;
    const bob = (await store!.keys.create('bob')).token;
    const { job_id } = (await schedule(server, { task: 'x' }, { authorization: `Bearer ${alice}` })).json<{ job_id: string }>();
    expect((await server.inject({ url: `/jobs/${job_id}/audit`, headers: { authorization: `Bearer ${alice}` } })).statusCode).toBe(200);
    expect((await server.inject({ url: `/jobs/${job_id}/audit`, headers: { authorization: `Bearer ${bob}` } })).statusCode).toBe(404);
    expect((await server.inject(`/jobs/${job_id}/audit`)).statusCode).toBe(401);
  });
});
