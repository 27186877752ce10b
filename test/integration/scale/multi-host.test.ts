// Scale-out with nothing lost: a real Postgres, two API replicas (`workcell serve --no-worker`) and two workers
// (`workcell worker`), each a process in a network namespace of its own, as its own host, on a bridge the test makes
// (no route anywhere else); one data dir for all. 100 scripted jobs are scheduled across both replicas; mid-way one
// worker (not the one running a long job used for the terminal) is SIGKILLed, one replica restarted and Postgres restarted. Every job completes exactly once and no tool
// call runs twice; a job's events stream from either replica, and its terminal opens through either, reaching the
// worker that runs it over that worker's internal route.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, type TestContext } from 'vitest';
import { WebSocket } from 'ws';
import { openPostgresStore } from '../../../src/store/postgres/index.ts';
import type { Store } from '../../../src/store/types.ts';
import { trajectoriesDir } from '../../helpers/app.ts';
import { createTestNetwork, type TestNetwork } from '../../helpers/netns.ts';
import { startPostgres, type PostgresCluster } from '../../helpers/postgres.ts';

const bin = join(import.meta.dirname, '../../../bin/workcell.js');
const jobCount = 100;
const apiPort = 8080;
const internalPort = 9000;

interface Server {
  child: ChildProcess;
  stderr: () => string;
}

let network: TestNetwork;
let postgres: PostgresCluster;
let store: Store;
let dataDir: string;
let env: Record<string, string>;
let auth: Record<string, string>;
const servers = new Map<string, Server>();

const apiUrl = (host: 'api-a' | 'api-b') => `http://${network.hosts.get(host)!.address}:${apiPort}`;

/** Starts `workcell <args>` on a test host; resolves once it says it is up. */
async function startServer(host: string, args: string[], ready: RegExp): Promise<void> {
  const [file, argv] = network.command(host, [process.execPath, bin, ...args]);
  const child = spawn(file, argv, { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  servers.set(host, { child, stderr: () => stderr });
  await new Promise<void>((resolve, reject) => {
    child.stderr.on('data', (chunk: Buffer) => {
      stderr = (stderr + chunk.toString()).slice(-20_000);
      if (ready.test(stderr)) resolve();
    });
    child.once('exit', (code, signal) => reject(new Error(`${host} exited (${code ?? signal}) before it was up: ${stderr}`)));
  });
}

const startApi = (host: 'api-a' | 'api-b') => startServer(host, ['serve', '--no-worker', '--host', network.hosts.get(host)!.address, '--port', String(apiPort)], /workcell listening on/);
const startWorker = (host: 'worker-a' | 'worker-b') => startServer(host, ['worker', '--internal-host', network.hosts.get(host)!.address, '--internal-port', String(internalPort)], /workcell worker \S+ running/);

async function stopServer(host: string, signal: NodeJS.Signals): Promise<void> {
  const server = servers.get(host);
  if (server === undefined || server.child.exitCode !== null || server.child.signalCode !== null) return;
  const exited = once(server.child, 'exit');
  server.child.kill(signal);
  await exited;
}

beforeAll(async () => {
  network = await createTestNetwork(['api-a', 'api-b', 'worker-a', 'worker-b']);
  postgres = await startPostgres({ network: { address: network.bridgeAddress, subnet: network.subnet } });
  const localUrl = await postgres.createDatabase();
  store = await openPostgresStore(localUrl);
  const { token } = await store.keys.create('multi-host test');
  auth = { authorization: `Bearer ${token}` };
  dataDir = mkdtempSync(join(tmpdir(), 'workcell-multi-host-'));
  chmodSync(dataDir, 0o711);
  env = {
    WORKCELL_DATABASE_URL: localUrl.replace('127.0.0.1', network.bridgeAddress),
    WORKCELL_DATA_DIR: dataDir,
    WORKCELL_SCRIPT_DIR: trajectoriesDir,
    WORKCELL_RUNTIME: 'bwrap',
    WORKCELL_LOG_LEVEL: 'warn',
    WORKCELL_CONCURRENCY: '4',
    WORKCELL_LEASE_MS: '6000',
    WORKCELL_ALLOWED_HOSTS: [...network.hosts.values()].map((host) => host.address).join(','),
  };
  await Promise.all([startApi('api-a'), startApi('api-b'), startWorker('worker-a'), startWorker('worker-b')]);
}, 180_000);

afterAll(async () => {
  for (const host of servers.keys()) await stopServer(host, 'SIGTERM');
  await store?.close();
  await postgres?.stop();
  await network?.remove();
  if (dataDir !== undefined) rmSync(dataDir, { recursive: true, force: true });
}, 180_000);

async function schedule(api: 'api-a' | 'api-b', trajectory: string): Promise<string> {
  const response = await fetch(`${apiUrl(api)}/schedule`, { method: 'POST', headers: { 'content-type': 'application/json', ...auth }, body: JSON.stringify({ task: 'count', model: `script:${trajectory}` }) });
  expect(response.status).toBe(202);
  return ((await response.json()) as { job_id: string }).job_id;
}

/** Reads a job's whole event stream from a replica, until the job ends. */
async function streamEvents(api: 'api-a' | 'api-b', jobId: string, onEvent?: (event: { type: string; data: Record<string, unknown> }) => void): Promise<Array<{ type: string; data: Record<string, unknown> }>> {
  const response = await fetch(`${apiUrl(api)}/jobs/${jobId}/events`, { headers: auth });
  expect(response.status).toBe(200);
  const events: Array<{ type: string; data: Record<string, unknown> }> = [];
  let buffer = '';
  const decoder = new TextDecoder();
  for await (const chunk of response.body!) {
    buffer += decoder.decode(chunk as Uint8Array, { stream: true });
    for (let end = buffer.indexOf('\n\n'); end >= 0; end = buffer.indexOf('\n\n')) {
      const data = /^data: (.*)$/m.exec(buffer.slice(0, end))?.[1];
      buffer = buffer.slice(end + 2);
      if (data === undefined) continue;
      const event = JSON.parse(data) as { type: string; data: Record<string, unknown> };
      events.push(event);
      onEvent?.(event);
    }
  }
  return events;
}

async function terminalEcho(api: 'api-a' | 'api-b', jobId: string, word: string): Promise<string> {
  const ws = new WebSocket(`${apiUrl(api).replace(/^http/, 'ws')}/jobs/${jobId}/terminal`, { headers: auth });
  let text = '';
  ws.on('message', (data: Buffer) => (text += data.toString('utf8')));
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
    ws.once('unexpected-response', (_request, response) => reject(new Error(`terminal refused by ${api}: ${response.statusCode}`)));
  });
  ws.send(`echo "${word}-""ok"\r`);
  await expect.poll(() => text, { timeout: 30_000 }).toMatch(new RegExp(`${word}-ok\\r\\n`));
  ws.close();
  return text;
}

// What the servers said, with a failing test: their stderr is the only window into processes in other namespaces.
afterEach(async (context: TestContext) => {
  if (context.task.result?.state !== 'fail') return;
  process.stderr.write(`--- the newest jobs: ${JSON.stringify((await store.jobs.list({ limit: 3 })).jobs)}\n`);
  for (const [host, server] of servers) process.stderr.write(`--- ${host} stderr (last 4000 characters):\n${server.stderr().slice(-4000)}\n`);
});

const workerOf = async (jobId: string) => (await store.jobs.get(jobId))?.locked_by ?? null;
const heldBy = (worker: 'worker-a' | 'worker-b') => `@http://${network.hosts.get(worker)!.address}:${internalPort}`;

describe('two API replicas and two workers, each its own host, on one Postgres', () => {
  let long: string;
  /** The worker that does not run the long job: the one killed mid-way. */
  let victim: 'worker-a' | 'worker-b';
  let longEvents: Promise<Array<{ type: string; data: Record<string, unknown> }>>;

  it('streams a running job from both replicas and opens its terminal through both', async () => {
    long = await schedule('api-a', 'long-sleep.json');
    let sleeping!: () => void;
    const inSleep = new Promise<void>((resolve) => (sleeping = resolve));
    longEvents = streamEvents('api-b', long, (event) => {
      if (event.type === 'tool-call' && event.data.name === 'shell') sleeping();
    });
    longEvents.catch(() => undefined);
    await Promise.race([inSleep, longEvents.then((events) => Promise.reject(new Error(`the job ended before its long command: ${JSON.stringify(events.at(-1))}`)))]);
    const holder = await workerOf(long);
    expect(holder).toMatch(/@http:\/\/10\.231\.\d+\.1[23]:9000$/);
    victim = holder!.endsWith(heldBy('worker-a')) ? 'worker-b' : 'worker-a';
    await terminalEcho('api-a', long, 'first');
    await terminalEcho('api-b', long, 'second');
  }, 120_000);

  it('completes 100 jobs exactly once through a worker killed, a replica restarted and Postgres restarted', async () => {
    const ids: string[] = [];
    for (let index = 0; index < jobCount; index++) ids.push(await schedule(index % 2 === 0 ? 'api-a' : 'api-b', 'multi-host.json'));
    const statuses = async () => {
      const counts = { running: 0, complete: 0, other: 0, onVictim: 0 };
      for (const id of ids) {
        const job = await store.jobs.get(id);
        if (job?.status === 'running') counts.running++;
        else if (job?.status === 'complete') counts.complete++;
        else if (job?.status !== 'pending') counts.other++;
        if (job?.status === 'running' && job.locked_by?.endsWith(heldBy(victim))) counts.onVictim++;
      }
      return counts;
    };

    // A worker dies while it holds jobs mid-way.
    await expect.poll(async () => (await statuses()).onVictim, { timeout: 120_000, interval: 100 }).toBeGreaterThan(0);
    await stopServer(victim, 'SIGKILL');
    // A replica restarts while jobs run: requests go to the other meanwhile.
    await stopServer('api-a', 'SIGTERM');
    await startApi('api-a');
    // Postgres restarts under load: open connections are cut, every process reconnects.
    await expect.poll(async () => (await statuses()).complete, { timeout: 240_000, interval: 200 }).toBeGreaterThan(jobCount / 3);
    await postgres.restart();

    await expect.poll(async () => {
      const counts = await statuses();
      return counts.complete + counts.other;
    }, { timeout: 420_000, interval: 500 }).toBe(jobCount);
    const failed = [];
    for (const id of ids) {
      const job = await store.jobs.get(id);
      if (job?.status !== 'complete') failed.push(`${id}: ${job?.status} ${job?.error}`);
    }
    expect(failed).toEqual([]);

    // Exactly once: no shell call ran twice (each appends its number once), and each job ended once.
    const resumed = [];
    for (const id of ids) {
      const calls = readFileSync(join(dataDir, 'jobs', id, 'workspace', 'calls.log'), 'utf8').trim().split('\n');
      expect(new Set(calls).size, `${id} calls.log: ${calls.join(',')}`).toBe(calls.length);
      expect(calls.at(-1)).toBe('3');
      const events = await streamEvents(id.charCodeAt(id.length - 1) % 2 === 0 ? 'api-a' : 'api-b', id);
      expect(events.filter((event) => event.type === 'job-status' && event.data.status === 'complete')).toHaveLength(1);
      if (events.some((event) => event.type === 'job-status' && event.data.resume === true)) resumed.push(id);
    }
    // The killed worker held jobs when it died: the other resumed them.
    expect(resumed.length).toBeGreaterThan(0);
    // Nothing of an ended job is left mounted: each workspace's disk was released after its zip.
    const mounted = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((line) => line.split(' ')[4] ?? '');
    expect(mounted.filter((path) => path.startsWith(`${dataDir}/`) && !path.includes(long))).toEqual([]);
  }, 600_000);

  it('ends the long job through a replica, and the other replica streams its end', async () => {
    const response = await fetch(`${apiUrl('api-a')}/jobs/${long}/cancel`, { method: 'POST', headers: { 'content-type': 'application/json', ...auth }, body: '{}' });
    expect(response.status).toBe(202);
    const events = await longEvents;
    expect(events.at(-1)).toMatchObject({ type: 'job-status', data: { status: 'cancelled' } });
  }, 120_000);
});
