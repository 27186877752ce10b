// API keys against a real store and the real routes: local mode asks for nothing; once a key exists every route
// but /healthz needs one, and a key sees only its own jobs.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { assertListenAllowed } from '../app.ts';
import { loadConfig } from '../config.ts';
import { JobService } from '../jobs/job-service.ts';
import { openSqliteStore } from '../store/sqlite/index.ts';
import type { Store } from '../store/types.ts';
import { buildServer } from './server.ts';

let dir: string;
let store: Store;
let app: FastifyInstance;

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'workcell-auth-'));
  const config = loadConfig({}, { dataDir: dir });
  const logger = pino({ level: 'silent' });
  store = openSqliteStore(dir);
  app = await buildServer({ config, jobs: new JobService({ config, store: store.jobs, logger }), keys: store.keys, logger });
});
afterEach(async () => {
  await app.close();
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

const as = (token: string | undefined) => (token === undefined ? {} : { authorization: `Bearer ${token}` });
const schedule = (token: string | undefined, task = 'x', headers: Record<string, string> = {}) =>
  app.inject({ method: 'POST', url: '/schedule', payload: task, headers: { 'content-type': 'text/plain', ...as(token), ...headers } });

describe('local mode (no keys)', () => {
  it('asks for nothing', async () => {
    expect((await schedule(undefined)).statusCode).toBe(202);
    expect((await app.inject('/jobs')).statusCode).toBe(200);
  });
});

describe('with API keys', () => {
  it('needs a valid, unrevoked key on every route but /healthz', async () => {
    const { id, token } = await store.keys.create('alice');
    expect((await app.inject('/healthz')).statusCode).toBe(200);
    for (const headers of [{}, as('nope'), as(`${token}x`), as(token.replace(/.$/, token.endsWith('A') ? 'B' : 'A')), { authorization: `Basic ${token}` }]) {
      const response = await app.inject({ url: '/jobs', headers });
      expect(response.statusCode).toBe(401);
      expect(response.headers['www-authenticate']).toMatch(/Bearer/);
      expect(response.headers['content-type']).toMatch(/problem\+json/);
      expect(response.json<{ detail: string }>().detail).toMatch(/API key/);
    }
    expect((await app.inject('/openapi.json')).statusCode).toBe(401);
    expect((await app.inject({ url: '/jobs', headers: as(token) })).statusCode).toBe(200);
    // The key travels only in the Authorization header: never in a cookie or a URL.
    expect((await app.inject({ url: '/jobs', headers: { cookie: `other=1; workcell_token=${token}; workcell_session=${token}` } })).statusCode).toBe(401);
    expect((await app.inject({ url: `/jobs?access_token=${token}` })).statusCode).toBe(401);
    expect(await store.keys.revoke(id)).toBe(true);
    expect((await app.inject({ url: '/jobs', headers: as(token) })).statusCode).toBe(401);
  });

  it('lets a key see only its own jobs; other jobs are not found', async () => {
    const alice = (await store.keys.create('alice')).token;
    const bob = (await store.keys.create('bob')).token;
    const { job_id } = (await schedule(alice)).json<{ job_id: string }>();
    for (const url of [`/status/${job_id}`, `/jobs/${job_id}`, `/jobs/${job_id}/events`, `/jobs/${job_id}/artifacts.zip`]) {
      expect((await app.inject({ url, headers: as(bob) })).statusCode).toBe(404);
    }
    expect((await app.inject({ method: 'POST', url: `/jobs/${job_id}/cancel`, headers: as(bob) })).statusCode).toBe(404);
    expect((await app.inject({ url: '/jobs', headers: as(bob) })).json()).toEqual({ jobs: [], next_cursor: null });
    expect((await app.inject({ url: `/jobs/${job_id}`, headers: as(alice) })).statusCode).toBe(200);
    expect((await app.inject({ url: '/jobs', headers: as(alice) })).json<{ jobs: unknown[] }>().jobs).toHaveLength(1);
    expect((await app.inject({ method: 'POST', url: `/jobs/${job_id}/cancel`, headers: as(alice) })).statusCode).toBe(202);
  });

  it('scopes idempotency keys to the API key', async () => {
    const alice = (await store.keys.create('alice')).token;
    const bob = (await store.keys.create('bob')).token;
    const a = (await schedule(alice, 'a', { 'idempotency-key': 'same' })).json<{ job_id: string }>();
    const b = await schedule(bob, 'b', { 'idempotency-key': 'same' });
    expect(b.statusCode).toBe(202);
    expect(b.json<{ job_id: string }>().job_id).not.toBe(a.job_id);
  });

  it('stores only a hash of the secret', async () => {
    const { token } = await store.keys.create('alice');
    const secret = token.split('_').slice(3).join('_');
    const raw = (await import('node:fs')).readFileSync(join(dir, 'workcell.db'));
    expect(raw.includes(Buffer.from(secret))).toBe(false);
  });
});

describe('listening', () => {
  const named = (host: string) => ({ host, publicUrl: undefined, allowedHosts: [] });
  it('refuses non-loopback addresses without keys, and with keys until it knows the names clients use', async () => {
    for (const host of ['127.0.0.1', '127.0.0.2', '::1', 'localhost']) expect(() => assertListenAllowed(named(host), false)).not.toThrow();
    for (const host of ['0.0.0.0', '::', '10.0.0.1', 'example.com']) expect(() => assertListenAllowed(named(host), false)).toThrow(/keys create/);
    expect(() => assertListenAllowed(named('0.0.0.0'), true)).toThrow(/WORKCELL_PUBLIC_URL/);
    expect(() => assertListenAllowed({ ...named('0.0.0.0'), publicUrl: 'https://workcell.example.com' }, true)).not.toThrow();
    expect(() => assertListenAllowed({ ...named('0.0.0.0'), allowedHosts: ['10.0.0.5'] }, true)).not.toThrow();
  });
});
