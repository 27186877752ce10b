// A person's terminal through the orchestrator: the websocket at /jobs/<id>/terminal of a running job (a real bwrap
// sandbox), without keys and with API keys; `echo hi`, resize, hangup on close, watching the agent's session, and
// refusals (no key, another key's job, bad query, a job that is not running).
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { collectEvents, startTestApp, type StreamedEvent, type TestApp } from '../../helpers/app.ts';

let app: TestApp | undefined;
afterEach(async () => {
  await app?.close();
  app = undefined;
});

interface Terminal {
  ws: WebSocket;
  waitFor: (pattern: RegExp) => Promise<RegExpMatchArray>;
  closed: Promise<number>;
}

function openTerminal(url: string, headers: Record<string, string> = {}): Promise<Terminal> {
  const ws = new WebSocket(url, { headers });
  let text = '';
  const waiters = new Set<() => void>();
  ws.on('message', (data: Buffer) => {
    text += data.toString('utf8');
    for (const waiter of waiters) waiter();
  });
  const closed = new Promise<number>((resolve) => ws.on('close', (code) => resolve(code)));
  const waitFor = (pattern: RegExp) =>
    new Promise<RegExpMatchArray>((resolve, reject) => {
      const check = () => {
        const match = pattern.exec(text);
        if (match === null) return;
        waiters.delete(check);
        clearTimeout(timer);
        resolve(match);
      };
      const timer = setTimeout(() => reject(new Error(`timed out waiting for ${pattern}; received: ${JSON.stringify(text.slice(-800))}`)), 20_000);
      waiters.add(check);
      check();
    });
  return new Promise((resolve, reject) => {
    ws.once('open', () => resolve({ ws, waitFor, closed }));
    ws.once('unexpected-response', (_request, response) => {
      let body = '';
      response.on('data', (chunk: Buffer) => (body += chunk.toString()));
      response.on('end', () => reject(new Error(`${response.statusCode} ${body.trim()}`)));
    });
    ws.once('error', reject);
  });
}

/** Schedules the long-sleep trajectory and resolves once its agent is inside `sleep 300` (the job is running). */
async function runningJob(headers: Record<string, string> = {}): Promise<{ jobId: string; events: Promise<StreamedEvent[]> }> {
  const response = await fetch(`${app!.url}/schedule`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify({ task: 'sleep', model: 'script:long-sleep.json' }) });
  expect(response.status).toBe(202);
  const { job_id: jobId } = (await response.json()) as { job_id: string };
  let sleeping!: () => void;
  const inSleep = new Promise<void>((resolve) => (sleeping = resolve));
  const events = collectEventsWith(jobId, headers, (event) => {
    if (event.type === 'tool-call' && event.data.name === 'shell') sleeping();
  });
  // Nothing else may reject unseen if a test fails before it reads the events.
  events.catch(() => undefined);
  await inSleep;
  return { jobId, events };
}

function collectEventsWith(jobId: string, headers: Record<string, string>, onEvent: (event: StreamedEvent) => void): Promise<StreamedEvent[]> {
  if (Object.keys(headers).length === 0) return collectEvents(app!, jobId, { onEvent });
  // collectEvents sends no key; with keys, read the stream the same way with the header.
  return (async () => {
    const response = await fetch(`${app!.url}/jobs/${jobId}/events`, { headers });
    const events: StreamedEvent[] = [];
    let buffer = '';
    const decoder = new TextDecoder();
    for await (const chunk of response.body!) {
      buffer += decoder.decode(chunk as Uint8Array, { stream: true });
      for (let end = buffer.indexOf('\n\n'); end >= 0; end = buffer.indexOf('\n\n')) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = /^data: (.*)$/m.exec(block)?.[1];
        if (data === undefined) continue;
        const parsed = JSON.parse(data) as StreamedEvent;
        events.push(parsed);
        onEvent(parsed);
      }
    }
    return events;
  })();
}

async function cancel(jobId: string, headers: Record<string, string> = {}): Promise<void> {
  await fetch(`${app!.url}/jobs/${jobId}/cancel`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: '{}' });
}

const wsBase = () => app!.url.replace(/^http/, 'ws');

describe('the terminal websocket through the orchestrator', () => {
  it('runs `echo hi`, resizes, and kills its bash when closed', async () => {
    app = await startTestApp();
    const { jobId, events } = await runningJob();
    const terminal = await openTerminal(`${wsBase()}/jobs/${jobId}/terminal?cols=90&rows=20`);
    terminal.ws.send('echo h""i; echo "pid=$$"; stty size\r');
    const [, pid] = await terminal.waitFor(/[\r\n]hi\r\npid=(\d+)\r\n20 90\r\n/);
    terminal.ws.send(JSON.stringify({ type: 'resize', cols: 150, rows: 40 }));
    terminal.ws.send('stty size; pwd\r');
    await terminal.waitFor(/[\r\n]40 150\r\n\/workspace\r\n/);
    terminal.ws.close();
    await terminal.closed;
    // Its bash is gone (looked at from another of the sandbox's shell sessions: the agent's is busy).
    const sandbox = app.jobs.liveSandbox(jobId)!;
    let alive = true;
    for (let i = 0; i < 100 && alive; i++) {
      alive = (await sandbox.client.call('shellExec', { command: `kill -0 ${pid} 2>/dev/null`, session: 'probe' })).exit_code === 0;
    }
    expect(alive).toBe(false);
    await cancel(jobId);
    expect((await events).at(-1)?.data.status).toBe('cancelled');
  });

  it("watches the agent's session read-only, and refuses bad queries and jobs that are not running", async () => {
    app = await startTestApp();
    const { jobId, events } = await runningJob();
    // The tool-call event comes just before the call reaches sandboxd, which starts the session: wait for it.
    let watcher: Terminal | undefined;
    for (let attempt = 0; watcher === undefined; attempt++) {
      watcher = await openTerminal(`${wsBase()}/jobs/${jobId}/terminal?session=main`).catch((error: unknown) => {
        if (attempt > 100 || !String(error).includes('404')) throw error;
        return new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), 100));
      });
    }
    await watcher.waitFor(/read-only/);
    await watcher.waitFor(new RegExp(`\\$${String.fromCharCode(0x1b)}\\[0m sleep 300`));
    await expect(openTerminal(`${wsBase()}/jobs/${jobId}/terminal?session=a%3Brm`)).rejects.toThrow(/^400/);
    await expect(openTerminal(`${wsBase()}/jobs/${jobId}/terminal?session=nosuch`)).rejects.toThrow(/^404/);
    await expect(openTerminal(`${wsBase()}/jobs/${jobId}/terminal?cols=-3`)).rejects.toThrow(/^400/);
    await expect(openTerminal(`${wsBase()}/jobs/job_00000000000000000000000000/terminal`)).rejects.toThrow(/^404/);
    // Without keys too, a web page of another origin (or a rebound name) gets no terminal.
    await expect(openTerminal(`${wsBase()}/jobs/${jobId}/terminal`, { origin: 'http://evil.example' })).rejects.toThrow(/^403/);
    await expect(openTerminal(`${wsBase()}/jobs/${jobId}/terminal`, { host: 'evil.example' })).rejects.toThrow(/^403/);
    watcher.ws.close();
    await cancel(jobId);
    await events;
    await expect(openTerminal(`${wsBase()}/jobs/${jobId}/terminal`)).rejects.toThrow(/^409/);
  });

  it('with API keys: needs the key of the job owner, by header or by link', async () => {
    app = await startTestApp();
    const owner = (await app.store.keys.create('owner')).token;
    const other = (await app.store.keys.create('other')).token;
    const auth = { authorization: `Bearer ${owner}` };
    const { jobId, events } = await runningJob(auth);
    await expect(openTerminal(`${wsBase()}/jobs/${jobId}/terminal`)).rejects.toThrow(/^401/);
    await expect(openTerminal(`${wsBase()}/jobs/${jobId}/terminal`, { authorization: `Bearer ${other}` })).rejects.toThrow(/^404/);
    const byHeader = await openTerminal(`${wsBase()}/jobs/${jobId}/terminal`, auth);
    byHeader.ws.send('echo hi\r');
    await byHeader.waitFor(/[\r\n]hi\r\n/);
    byHeader.ws.close();
    // The key never goes into a URL: a browser gets a one-time terminal link.
    await expect(openTerminal(`${wsBase()}/jobs/${jobId}/terminal?access_token=${encodeURIComponent(owner)}`)).rejects.toThrow(/^401/);
    const made = await fetch(`${app.url}/jobs/${jobId}/links`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: '{"service":"terminal"}' });
    expect(made.status).toBe(201);
    const { url } = (await made.json()) as { url: string };
    expect(url).toMatch(new RegExp(`^ws://127\\.0\\.0\\.1:\\d+/jobs/${jobId}/terminal\\?workcell_link=`));
    const byLink = await openTerminal(url);
    byLink.ws.send('echo "via link"\r');
    await byLink.waitFor(/[\r\n]via link\r\n/);
    byLink.ws.close();
    await expect(openTerminal(url)).rejects.toThrow(/^401 this terminal link is expired, used/);
    // A web page of another origin cannot open it, even with a fresh link.
    const fresh = ((await (await fetch(`${app.url}/jobs/${jobId}/links`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: '{"service":"terminal"}' })).json()) as { url: string }).url;
    await expect(openTerminal(fresh, { origin: 'http://evil.example' })).rejects.toThrow(/^403/);
    await cancel(jobId, auth);
    await events;
  });
});
