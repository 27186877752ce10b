// A job's Jupyter for people, end to end: a whole workcell with API keys, a job driven by a script: model that uses
// run_code (Python, TypeScript, JavaScript) and then waits in a long command, and its Jupyter reached only through
// /jobs/<id>/jupyter/ on the job's own origin (http://job-<id>.localhost:<port>) with the owner's key or the session
// of a one-time link: the classic notebook UI, the REST API, and a kernel websocket that runs code, in a new kernel
// and in the agent's own, and (in Chromium) a notebook that runs a cell. Also: what run_code recorded (events, plot files), and that the
// server listens only inside the sandbox's network namespace.
import { existsSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { afterEach, describe, expect, it } from 'vitest';
import type { BwrapSandbox } from '../../../src/runtimes/bwrap/bwrap-runtime.ts';
import { KernelConnection, type KernelMessage } from '../../../src/sandboxd/code/kernel-connection.ts';
import { startTestApp, type StreamedEvent, type TestApp } from '../../helpers/app.ts';
import { openPage, request } from '../../helpers/job-origin.ts';

let app: TestApp | undefined;
afterEach(async () => {
  await app?.close();
  app = undefined;
});

/** Debian's Chromium, driven by playwright-core (DESIGN.md section 9); the browser part is skipped without it. */
const chromiumPath = '/usr/bin/chromium';
const pngSignature = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

/** Reads the job's events until `until` matches one; returns all read so far. */
async function eventsUntil(base: string, jobId: string, key: string, until: (event: StreamedEvent) => boolean): Promise<StreamedEvent[]> {
  const abort = new AbortController();
  const response = await fetch(`${base}/jobs/${jobId}/events`, { headers: { authorization: `Bearer ${key}` }, signal: abort.signal });
  if (!response.ok || !response.body) throw new Error(`events: ${response.status}`);
  const events: StreamedEvent[] = [];
  let buffer = '';
  const decoder = new TextDecoder();
  try {
    for await (const chunk of response.body) {
      buffer += decoder.decode(chunk as Uint8Array, { stream: true });
      let end: number;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const id = /^id: (\d+)$/m.exec(block)?.[1];
        const data = /^data: (.*)$/m.exec(block)?.[1];
        if (id === undefined || data === undefined) continue;
        const parsed = JSON.parse(data) as Omit<StreamedEvent, 'id'>;
        const event = { id: Number(id), ...parsed };
        events.push(event);
        if (until(event)) return events;
        if (event.type === 'job-status' && ['complete', 'error', 'cancelled'].includes(String(event.data.status))) throw new Error(`the job ended (${JSON.stringify(event.data)}) before the awaited event`);
      }
    }
  } finally {
    abort.abort();
  }
  throw new Error('the event stream ended before the awaited event');
}

/** Executes `code` over a kernel websocket and resolves with its stdout once the kernel is idle again. */
function execute(connection: KernelConnection, code: string): Promise<{ stdout: string; status: string }> {
  return new Promise((resolve) => {
    let stdout = '';
    let status = '';
    let idle = false;
    const msgId = connection.send('shell', 'execute_request', { code, silent: false, store_history: false, user_expressions: {}, allow_stdin: false, stop_on_error: true });
    const stop = connection.subscribe((message: KernelMessage) => {
      if (message.parent_header.msg_id !== msgId) return;
      if (message.header.msg_type === 'stream') stdout += String(message.content.text);
      if (message.header.msg_type === 'execute_reply') status = String(message.content.status);
      if (message.header.msg_type === 'status' && message.content.execution_state === 'idle') idle = true;
      if (idle && status !== '') {
        stop();
        resolve({ stdout, status });
      }
    });
  });
}

describe("a job's Jupyter through the orchestrator", () => {
  it('answers only with the owner\'s key: the notebook UI, the API and kernel websockets work; run_code is recorded', async () => {
    app = await startTestApp();
    const alice = (await app.store.keys.create('alice')).token;
    const bob = (await app.store.keys.create('bob')).token;
    const base = app.url;
    const as = (key: string) => ({ authorization: `Bearer ${key}` });

    const scheduled = await fetch(`${base}/schedule`, { method: 'POST', headers: { ...as(alice), 'content-type': 'application/json' }, body: JSON.stringify({ task: 'use run_code', model: 'script:run-code.json' }) });
    expect(scheduled.status).toBe(202);
    const { job_id: jobId } = (await scheduled.json()) as { job_id: string };
    const events = await eventsUntil(base, jobId, alice, (event) => event.type === 'tool-call' && event.data.name === 'shell');
    const origin = `http://${jobId.replace('_', '-')}.localhost:${new URL(base).port}`;
    const jupyter = `${origin}/jobs/${jobId}/jupyter`;

    // What run_code recorded: code in tool-call, outputs and duration in tool-result, the plot as a file.
    const results = events.filter((event) => event.type === 'tool-result' && event.data.name === 'run_code');
    expect(results.map((event) => event.data.is_error)).toEqual([false, false, false, false, false]);
    const outputs = results.map((event) => String(event.data.output));
    expect(outputs[0]).toMatch(/^status: ok \(python, execution 1, ran .+\)\nA new python kernel was started for this call/);
    expect(outputs[1]).toMatch(/\[stdout\]\n42\n\[result\]\n285$/);
    expect(outputs[2]).toMatch(/\[image 1: image\/png \d+x\d+, [\d.]+ KB\] <Figure size 640x480 with 1 Axes>/);
    expect(outputs[3]).toMatch(/^status: ok \(typescript[\s\S]*\[stdout\]\n42$/);
    expect(outputs[4]).toMatch(/^status: ok \(javascript[\s\S]*\[stdout\]\n2,4,6$/);
    for (const event of results) expect(event.data.duration_ms).toEqual(expect.any(Number));
    const calls = events.filter((event) => event.type === 'tool-call' && event.data.name === 'run_code');
    expect((calls[1]?.data.args as { code: string }).code).toBe('print(x * 2)\nsum(squares)');
    const images = results[2]?.data.images as Array<{ path: string; media_type: string; width: number; height: number; bytes: number }>;
    expect(images).toHaveLength(1);
    expect(images[0]).toMatchObject({ media_type: 'image/png', width: expect.any(Number), height: expect.any(Number) });
    const png = readFileSync(join(app.dataDir, 'jobs', jobId, images[0]!.path));
    expect(png.subarray(0, 8)).toEqual(pngSignature);
    expect(png.length).toBe(images[0]!.bytes);

    // The caller's credentials, and only the owner's.
    expect((await request(`${jupyter}/api/status`)).status).toBe(401);
    expect((await request(`${jupyter}/api/status`, { headers: as(bob) })).status).toBe(404);
    const status = await request(`${jupyter}/api/status`, { headers: as(alice) });
    expect(status.status).toBe(200);
    expect(status.headers['content-type']).toMatch(/application\/json/);
    expect(status.json()).toMatchObject({ kernels: expect.any(Number), started: expect.any(String) });
    expect((await request(`${base}/jobs/${jobId}/jupyter/api/status`, { headers: as(alice) })).status).toBe(303); // never on the API's origin

    // A browser: the one-time link becomes a job-scoped cookie; the UI (nbclassic's tree) and its scripts load.
    const { cookie, location } = await openPage(app, jobId, 'jupyter', alice);
    expect(location).toBe(`/jobs/${jobId}/jupyter/`);
    const landing = await request(`${jupyter}/`, { headers: { cookie } });
    expect(landing.status).toBe(302);
    expect(landing.headers.location).toMatch(new RegExp(`^/jobs/${jobId}/jupyter/tree\\??$`));
    const tree = await request(`${jupyter}/tree`, { headers: { cookie } });
    expect(tree.status).toBe(200);
    const html = tree.text();
    expect(html).toContain(`baseUrl: '/jobs/${jobId}/jupyter/static/notebook/'`);
    const scripts = [...html.matchAll(/src="(\/jobs\/[^"?]+\.js)/g)].map((match) => match[1]!);
    expect(scripts.length).toBeGreaterThan(2);
    for (const script of scripts) expect((await request(`${origin}${script}`, { headers: { cookie } })).status, script).toBe(200);
    expect((await request(`${jupyter}/tree`)).status).toBe(401);

    // The API: the agent's kernels are there; a person's new kernel runs code over a websocket through the proxy.
    const sessions = (await request(`${jupyter}/api/sessions`, { headers: { cookie } })).json<Array<{ id: string; path: string; kernel: { id: string; name: string } }>>();
    expect(sessions.map((session) => [session.path, session.kernel.name]).sort()).toEqual([
      ['run_code-javascript.ipynb', 'jslab'],
      ['run_code-python.ipynb', 'python3'],
      ['run_code-typescript.ipynb', 'tslab'],
    ]);
    const created = await request(`${jupyter}/api/sessions`, { method: 'POST', headers: { cookie, 'content-type': 'application/json' }, body: JSON.stringify({ path: 'people.ipynb', type: 'notebook', name: '', kernel: { name: 'python3' } }) });
    expect(created.status).toBe(201);
    const session = created.json<{ id: string; kernel: { id: string } }>();
    const kernels = `${jupyter.replace(/^http/, 'ws')}/api/kernels`;
    const websocket = (kernelId: string) => KernelConnection.open(`${kernels}/${kernelId}/channels`, { cookie }, 60_000);
    const mine = await websocket(session.kernel.id);
    try {
      expect(await execute(mine, 'import os\nprint(6 * 7, os.getcwd())')).toEqual({ stdout: '42 /workspace\n', status: 'ok' });
    } finally {
      mine.close();
    }
    expect((await request(`${jupyter}/api/sessions/${session.id}`, { method: 'DELETE', headers: { cookie } })).status).toBe(204);
    // The agent's kernel, with its state: a person can look into what the agent computed.
    const agents = await websocket(sessions.find((entry) => entry.path === 'run_code-python.ipynb')!.kernel.id);
    try {
      expect(await execute(agents, 'print(x, sum(squares))')).toEqual({ stdout: '21 285\n', status: 'ok' });
    } finally {
      agents.close();
    }
    // Websockets need the key too.
    await expect(KernelConnection.open(`${kernels}/${session.kernel.id}/channels`, {}, 10_000)).rejects.toThrow(/could not be opened/);

    // Nothing listens outside the sandbox: Jupyter's listening socket is in the sandbox's own network namespace.
    const sandbox = app.jobs.liveSandbox(jobId) as BwrapSandbox;
    // bwrap's own process stays outside; its children (the namespace's init, sandboxd) are inside.
    const children = (pid: number): number[] => readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
    const insider = children(sandbox.pid).flatMap((child) => [child, ...children(child)]).find((pid) => readlinkSync(`/proc/${pid}/ns/net`) !== readlinkSync('/proc/self/ns/net'));
    expect(insider).toBeDefined();
    const listening = (table: string) =>
      table
        .split('\n')
        .slice(1)
        .map((line) => line.trim().split(/\s+/))
        .filter((fields) => fields[1] === '0100007F:22B8' && fields[3] === '0A')
        .map((fields) => fields[9]);
    const inside = listening(readFileSync(`/proc/${insider}/net/tcp`, 'utf8'));
    expect(inside).toHaveLength(1);
    expect(listening(readFileSync('/proc/self/net/tcp', 'utf8'))).not.toContain(inside[0]);

    // In a real browser: the classic notebook opens from a one-time link, connects to its kernel over the proxied
    // websocket and runs a cell.
    if (existsSync(chromiumPath)) {
      const notebook = { cells: [{ cell_type: 'code', source: 'print(6 * 7)', metadata: {}, outputs: [], execution_count: null }], metadata: {}, nbformat: 4, nbformat_minor: 5 };
      const saved = await request(`${jupyter}/api/contents/browser.ipynb`, { method: 'PUT', headers: { cookie, 'content-type': 'application/json' }, body: JSON.stringify({ type: 'notebook', content: notebook }) });
      expect(saved.status).toBe(201);
      const browser = await chromium.launch({ executablePath: chromiumPath, args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'] });
      try {
        const page = await browser.newPage();
        const link = (await request(`${base}/jobs/${jobId}/links`, { method: 'POST', headers: { ...as(alice), 'content-type': 'application/json' }, body: '{"service":"jupyter"}' })).json<{ url: string }>().url;
        await page.goto(link);
        expect(new URL(page.url()).origin).toBe(origin);
        await page.goto(`${jupyter}/notebooks/browser.ipynb`);
        expect(page.url()).toBe(`${jupyter}/notebooks/browser.ipynb`);
        // The kernel is ready once the notebook says so (its websocket is open and the kernel answered).
        await page.waitForFunction(() => (globalThis as unknown as { Jupyter?: { notebook?: { kernel?: { is_connected(): boolean } } } }).Jupyter?.notebook?.kernel?.is_connected() === true, undefined, { timeout: 60_000 });
        await page.evaluate(() => (globalThis as unknown as { Jupyter: { notebook: { execute_all_cells(): void } } }).Jupyter.notebook.execute_all_cells());
        await page.locator('.output_subarea.output_stream').filter({ hasText: '42' }).waitFor({ timeout: 60_000 });
      } finally {
        await browser.close();
      }
    }

    expect((await fetch(`${base}/jobs/${jobId}/cancel`, { method: 'POST', headers: as(alice) })).status).toBeLessThan(300);
    // Three kernels, a browser and a job on a shared 2-core machine: more than the default two minutes when it is busy.
  }, 300_000);
});
