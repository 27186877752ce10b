// What only a shared Postgres store must survive, on a real server: many workers on separate connections claiming at
// once, several processes starting (and migrating) at once, two requests with one idempotency key at once, and the
// server restarting under a running store. The behaviour both stores share is tested in src/store/*.test.ts.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startPostgres, type PostgresCluster } from '../../../test/helpers/postgres.ts';
import { storeSetupTimeoutMs } from '../../../test/helpers/stores.ts';
import { newJobId } from '../../util/ids.ts';
import type { Store } from '../types.ts';
import { openPostgresStore } from './index.ts';

const limits = { wall_time_s: 60, max_steps: 10 };
const storeModule = fileURLToPath(new URL('./index.ts', import.meta.url));
let cluster: PostgresCluster;
const opened: Store[] = [];

/** Each store has its own pool: as far as Postgres can tell, a separate worker process. */
async function openStores(url: string, count: number): Promise<Store[]> {
  const stores = await Promise.all(Array.from({ length: count }, () => openPostgresStore(url)));
  opened.push(...stores);
  return stores;
}

beforeAll(async () => {
  cluster = await startPostgres();
}, storeSetupTimeoutMs);
afterAll(() => cluster?.stop(), storeSetupTimeoutMs);
afterEach(async () => {
  await Promise.all(opened.splice(0).map((store) => store.close()));
});

describe('Postgres store', () => {
  it('gives each of 50 jobs to exactly one of 8 workers claiming at once', { timeout: 60_000 }, async () => {
    const url = await cluster.createDatabase();
    const [first, ...others] = await openStores(url, 8);
    const workers = [first!, ...others];
    const ids = new Set<string>();
    for (let n = 0; n < 50; n++) ids.add((await first!.jobs.create({ id: newJobId(1000 + n), task: `t${n}`, runtime: 'auto', limits })).job.id);
    const claimed = await Promise.all(
      workers.map(async (store, index) => {
        const mine: string[] = [];
        for (let job = await store.jobs.claim(`w${index}`, 60_000); job !== undefined; job = await store.jobs.claim(`w${index}`, 60_000)) mine.push(job.id);
        return mine;
      }),
    );
    const all = claimed.flat();
    expect(all).toHaveLength(50);
    expect(new Set(all)).toEqual(ids);
    for (const [index, mine] of claimed.entries()) {
      for (const id of mine) expect(await first!.jobs.get(id)).toMatchObject({ status: 'running', locked_by: `w${index}`, attempts: 1 });
    }
  });

  it('hands out each outbox delivery once to senders claiming at once, one per job at a time', { timeout: 60_000 }, async () => {
    const url = await cluster.createDatabase();
    const [first, ...others] = await openStores(url, 4);
    const senders = [first!, ...others];
    // 20 jobs with a hook, each with two deliveries (pending, then cancelled): only the first of each is due.
    for (let n = 0; n < 20; n++) {
      const { job } = await first!.jobs.create({ id: newJobId(1000 + n), task: 't', runtime: 'auto', limits, callbackUrl: 'https://example.com/hook' });
      await first!.jobs.requestCancel(job.id);
    }
    const claimed = (await Promise.all(senders.map((store, index) => store.outbox.claim(`s${index}`, 8, 1000, 60_000)))).flat();
    expect(claimed.map((row) => row.status)).toEqual(Array(claimed.length).fill('pending'));
    expect(new Set(claimed.map((row) => row.id)).size).toBe(claimed.length);
    expect(new Set(claimed.map((row) => row.job_id)).size).toBe(claimed.length);
    expect(claimed.length).toBe(20);
  });

  it('migrates once when several processes start on a new database at once', { timeout: 90_000 }, async () => {
    const url = await cluster.createDatabase();
    // Each child imports the store, says "ready", and opens it when told "go": the two open at the same moment.
    const script = `
      import { createInterface } from 'node:readline';
      const { openPostgresStore } = await import(process.argv[1]);
      console.log('ready');
      for await (const _line of createInterface({ input: process.stdin })) break;
      const store = await openPostgresStore(process.argv[2]);
      await store.jobs.list({ limit: 1 });
      await store.close();
      console.log('migrated');`;
    const children = [0, 1].map(() => spawn(process.execPath, ['--input-type=module', '-e', script, storeModule, url], { stdio: ['pipe', 'pipe', 'pipe'] }));
    const outputs = children.map((child) => {
      let stderr = '';
      child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
      const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
      return { child, lines, exited, stderr: () => stderr };
    });
    try {
      for (const { lines, stderr } of outputs) expect((await lines.next()).value, stderr()).toBe('ready');
      // In-process stores join in too, on their own connections.
      const inProcess = Array.from({ length: 4 }, () => openPostgresStore(url));
      for (const { child } of outputs) child.stdin.end('go\n');
      opened.push(...(await Promise.all(inProcess)));
      for (const { lines, exited, stderr } of outputs) {
        expect((await lines.next()).value, stderr()).toBe('migrated');
        expect((await exited)[0], stderr()).toBe(0);
      }
    } finally {
      for (const { child } of outputs) if (child.exitCode === null) child.kill('SIGKILL');
    }
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    try {
      const { rows } = await client.query<{ version: number }>('SELECT version FROM workcell_schema ORDER BY version');
      expect(rows.map((row) => row.version)).toEqual(rows.map((_row, index) => index + 1));
    } finally {
      await client.end();
    }
  });

  it('gives one job for one idempotency key used twice at once', { timeout: 60_000 }, async () => {
    const url = await cluster.createDatabase();
    const [a, b] = await openStores(url, 2);
    for (let n = 0; n < 20; n++) {
      const results = await Promise.all(
        [a!, b!].map((store) => store.jobs.create({ id: newJobId(), task: `t${n}`, runtime: 'auto', limits, idempotencyKey: `key-${n}`, callbackUrl: 'https://example.com/hook' })),
      );
      expect(results.map((result) => result.created).sort()).toEqual([false, true]);
      expect(results[0]!.job).toEqual(results[1]!.job);
      // The loser's insert left nothing behind: one job, one run, one delivery.
      expect(await a!.jobs.runs(results[0]!.job.id)).toHaveLength(1);
      expect(await a!.outbox.forJob(results[0]!.job.id)).toHaveLength(1);
    }
    expect((await a!.jobs.list({ limit: 100 })).jobs).toHaveLength(20);
  });

  it('keeps working after the server restarts: a broken statement rejects, the next one reconnects', { timeout: 90_000 }, async () => {
    const url = await cluster.createDatabase();
    const [store] = await openStores(url, 1);
    const { job } = await store!.jobs.create({ id: newJobId(), task: 't', runtime: 'auto', limits });
    // Several connections in the pool, all cut by the restart.
    await Promise.all(Array.from({ length: 5 }, () => store!.jobs.get(job.id)));
    await cluster.restart();
    // The store does not retry: a statement on a connection the restart cut may reject once (the callers' loops try
    // again on their next tick); the pool drops that connection, and what follows runs on a new one.
    let failures = 0;
    for (;;) {
      try {
        expect(await store!.jobs.get(job.id)).toMatchObject({ id: job.id, status: 'pending' });
        break;
      } catch (error) {
        failures++;
        if (failures > 1) throw error;
      }
    }
    expect(failures).toBeLessThanOrEqual(1);
    expect(await store!.jobs.claim('w1', 60_000)).toMatchObject({ id: job.id, status: 'running' });
    expect(await store!.jobs.requestCancel(job.id)).toBe('requested');
    expect((await store!.jobs.create({ id: newJobId(), task: 'u', runtime: 'auto', limits })).created).toBe(true);
  });
});
