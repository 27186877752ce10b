// Resume after a worker dies, with real processes: `node src/cli/main.ts serve` as a child on a temp data dir, killed
// with SIGKILL in the middle of a job (while a shell command runs in its bwrap sandbox), then a second server on the
// same data dir, which finds the expired lease and resumes the job from its context store. The result must be the
// workspace an uninterrupted run makes: no completed call repeated (each step appends one line to calls.txt), the
// interrupted call answered as such and made again by the model.
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { App } from '../../../src/app.ts';
import { collectEvents, downloadZip, type StreamedEvent } from '../../helpers/app.ts';
import { longJobPolicy, longJobTask } from '../../helpers/long-job.ts';
import { startOpenAICompatibleServer, type OpenAICompatibleServer } from '../../helpers/openai-compatible-server.ts';

const main = join(import.meta.dirname, '../../../src/cli/main.ts');
const children: ChildProcess[] = [];
const dirs: string[] = [];
let llm: OpenAICompatibleServer | undefined;

afterEach(async () => {
  for (const child of children.splice(0)) if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
  await llm?.close();
  llm = undefined;
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function dataDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'workcell-resume-'));
  chmodSync(dir, 0o711);
  dirs.push(dir);
  return dir;
}

/**
 * Starts `workcell serve` as a child process; resolves with its URL once it listens. `leaseMs`: short where the test
 * waits for a killed server's lease to run out; else the default, which a busy machine's late heartbeat cannot lose.
 */
function startServer(dir: string, baseUrl: string, leaseMs?: number): Promise<{ child: ChildProcess; app: Pick<App, 'url'> }> {
  const child = spawn(process.execPath, [main, 'serve', '--port', '0', '--data-dir', dir], {
    env: {
      ...process.env,
      WORKCELL_MODEL: 'openai-compatible:gpt-4o-mini',
      // Not `auto`, which takes gVisor whenever a dockerd runs on the machine (another test's, which may stop it mid-job).
      WORKCELL_RUNTIME: 'bwrap',
      WORKCELL_OPENAI_COMPATIBLE_BASE_URL: baseUrl,
      // Room for the system prompt and the tool definitions (about 7k tokens) and a few steps; the test is about resuming, not condensing.
      WORKCELL_CONTEXT_WINDOW: '16384',
      ...(leaseMs === undefined ? {} : { WORKCELL_LEASE_MS: String(leaseMs) }),
      WORKCELL_LOG_LEVEL: 'warn',
      WORKCELL_CONCURRENCY: '1',
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  children.push(child);
  return new Promise((resolve, reject) => {
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
      const url = /workcell listening on (http:\/\/\S+)/.exec(stderr)?.[1];
      if (url !== undefined) resolve({ child, app: { url } });
    });
    child.once('exit', (code, signal) => reject(new Error(`workcell serve exited (${code ?? signal}) before listening: ${stderr}`)));
  });
}

async function schedule(url: string): Promise<string> {
  const response = await fetch(`${url}/schedule`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ task: longJobTask, limits: { max_steps: 100 } }) });
  expect(response.status).toBe(202);
  return ((await response.json()) as { job_id: string }).job_id;
}

/** The job's events so far, without following. */
async function readEvents(url: string, jobId: string): Promise<StreamedEvent[]> {
  const text = await (await fetch(`${url}/jobs/${jobId}/events?follow=false`)).text();
  return text
    .split('\n\n')
    .map((block) => /^data: (.*)$/m.exec(block)?.[1])
    .filter((data) => data !== undefined)
    .map((data) => {
      const event = JSON.parse(data) as { seq: number; type: string; step: number; data: Record<string, unknown> };
      return { id: event.seq, type: event.type, step: event.step, data: event.data };
    });
}

const steps = 40;
const slowStep = 15;

describe('a job whose worker is killed mid-job', () => {
  it('is resumed by the next server from its last completed step, and ends with the same workspace as an uninterrupted run', async () => {
    llm = await startOpenAICompatibleServer(longJobPolicy({ steps, slowSteps: { [slowStep]: 5 } }).policy);

    // The uninterrupted run.
    const reference = await startServer(dataDir(), llm.baseUrl);
    const referenceJob = await schedule(reference.app.url);
    const referenceEvents = await collectEvents(reference.app as App, referenceJob);
    expect(referenceEvents.at(-1)?.data.status).toBe('complete');
    const expected = await downloadZip(reference.app as App, referenceJob);
    reference.child.kill('SIGTERM');

    // The interrupted run: SIGKILL while step 15's shell command is running in the sandbox.
    const dir = dataDir();
    const first = await startServer(dir, llm.baseUrl, 2000);
    const jobId = await schedule(first.app.url);
    const seen: StreamedEvent[] = [];
    const exited = new Promise((resolve) => first.child.once('exit', resolve));
    await collectEvents(first.app as App, jobId, {
      onEvent: (event) => {
        seen.push(event);
        if (event.type === 'tool-call' && String((event.data.args as { command?: string }).command).startsWith(`: step ${slowStep};`)) first.child.kill('SIGKILL');
      },
    }).catch(() => undefined); // the stream breaks with the server
    await exited;
    expect(seen.at(-1)?.type).toBe('tool-call');
    const killedAtStep = seen.at(-1)!.step;

    const second = await startServer(dir, llm.baseUrl, 2000);
    const rest = await collectEvents(second.app as App, jobId, { lastEventId: seen.at(-1)!.id });
    expect(rest.at(-1)?.data, JSON.stringify(rest.at(-1))).toMatchObject({ status: 'complete' });
    const job = (await (await fetch(`${second.app.url}/jobs/${jobId}`)).json()) as { status: string; attempts: number; usage: { steps: number } };
    expect(job).toMatchObject({ status: 'complete', attempts: 2 });

    // The job went back to pending and ran again; the interrupted call was answered, not re-run by the worker.
    const statuses = rest.filter((event) => event.type === 'job-status').map((event) => event.data.status);
    expect(statuses).toEqual(['pending', 'running', 'complete']);
    expect(rest.find((event) => event.type === 'job-status' && event.data.status === 'running')?.data).toMatchObject({ resumed: true, attempt: 2 });
    const interrupted = rest.find((event) => event.type === 'tool-result' && event.data.interrupted === true);
    expect(interrupted).toMatchObject({ step: killedAtStep, data: { is_error: true } });
    // Steps continue after the last completed one: no model turn is repeated, the task is not sent again.
    const turns = [...seen, ...rest].filter((event) => event.type === 'model-turn').map((event) => event.step);
    expect(turns).toEqual(Array.from({ length: turns.length }, (_, index) => index + 1));
    expect(rest.some((event) => event.type === 'user-message')).toBe(false);
    expect(job.usage.steps).toBe(turns.length);

    // Same workspace as the uninterrupted run: every step's line exactly once.
    const actual = await downloadZip(second.app as App, jobId);
    expect([...actual.keys()].sort()).toEqual([...expected.keys()].sort());
    for (const [name, entry] of expected) expect(actual.get(name)?.content, name).toBe(entry.content);
    expect(actual.get('calls.txt')?.content.split('\n').filter(Boolean)).toHaveLength(steps - 4);
  }, 240_000);

  it('is resumed after a graceful shutdown too (SIGTERM), not ended', async () => {
    llm = await startOpenAICompatibleServer(longJobPolicy({ steps: 20, slowSteps: { 8: 3 } }).policy);
    const dir = dataDir();
    const first = await startServer(dir, llm.baseUrl);
    const jobId = await schedule(first.app.url);
    const exited = new Promise((resolve) => first.child.once('exit', resolve));
    // Polled without following: a server closing waits for its open event streams.
    const atStep8 = (events: StreamedEvent[]) => events.some((event) => event.type === 'tool-call' && String((event.data.args as { command?: string }).command).startsWith(': step 8;'));
    while (!atStep8(await readEvents(first.app.url, jobId))) await new Promise((resolve) => setTimeout(resolve, 100));
    first.child.kill('SIGTERM');
    await exited;
    const second = await startServer(dir, llm.baseUrl);
    const seen = await readEvents(second.app.url, jobId);
    // The stopping server put the job back in the queue instead of ending it.
    expect(seen.filter((event) => event.type === 'job-status').map((event) => event.data.status).slice(0, 3)).toEqual(['pending', 'running', 'pending']);
    const rest = await collectEvents(second.app as App, jobId, { lastEventId: seen.at(-1)!.id });
    expect(rest.at(-1)?.data, JSON.stringify(rest.at(-1)?.data)).toMatchObject({ status: 'complete' });
    const zip = await downloadZip(second.app as App, jobId);
    const lines = zip.get('calls.txt')?.content.split('\n').filter(Boolean) ?? [];
    expect(new Set(lines).size).toBe(16);
    // Only the call the shutdown interrupted may have run twice: it may have had its effect before it was stopped,
    // and the model (this one does not check first) made it again. Every completed call ran once.
    const interrupted = rest.filter((event) => event.type === 'tool-result' && event.data.interrupted === true);
    expect(interrupted).toHaveLength(1);
    const repeated = lines.filter((line, index) => lines.indexOf(line) !== index);
    expect(repeated.length).toBeLessThanOrEqual(1);
    const interruptedCall = [...seen, ...rest].find((event) => event.type === 'tool-call' && event.data.call_id === interrupted[0]!.data.call_id);
    if (repeated.length === 1) expect(String((interruptedCall?.data.args as { command?: string }).command)).toMatch(new RegExp(`^: ${repeated[0]};`));
  }, 180_000);
});
