// Runs INSIDE a sandbox (copied into /workspace, started with the image's Node, which runs TypeScript directly): it
// starts the image's Jupyter server as the image configures it, opens a session per kernel (python3, tslab, jslab)
// through the REST API, executes code over the kernel's websocket and prints one JSON line with what came back and
// how long it took. Only Node built-ins (fetch, WebSocket): the sandbox has no node_modules for it.
import { spawn } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';

const port = 8888;
const base = `http://127.0.0.1:${port}`;
const token = randomBytes(16).toString('hex');

interface JupyterMessage {
  header: { msg_id: string; msg_type: string };
  parent_header: { msg_id?: string };
  channel: string;
  content: Record<string, unknown>;
}

export interface ExecuteResult {
  status: string;
  /** stdout of the execution, and the text/plain of its result (execute_result). */
  stdout: string;
  result: string;
  error: string;
  durationMs: number;
}

export interface KernelReport {
  kernel: string;
  sessionMs: number;
  /** The first execute on a fresh kernel: includes waiting for the kernel to come up. */
  firstExecute: ExecuteResult;
  check: ExecuteResult;
  /** Round trips of a trivial execute on the warm kernel (TCP_NODELAY makes these a few ms instead of ~47). */
  warmRoundTripsMs: number[];
}

export interface JupyterReport {
  serverReadyMs: number;
  serverVersion: string;
  kernels: KernelReport[];
}

async function api<T>(method: string, path: string, body?: unknown): Promise<T> {
  const response = await fetch(`${base}${path}`, {
    method,
    headers: { authorization: `token ${token}`, 'content-type': 'application/json' },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${await response.text()}`);
  return (response.status === 204 ? undefined : await response.json()) as T;
}

/** One kernel's websocket: execute() sends an execute_request and collects the replies to it. */
async function connect(kernelId: string): Promise<{ execute: (code: string) => Promise<ExecuteResult>; close: () => void }> {
  const session = randomUUID();
  const socket = new WebSocket(`ws://127.0.0.1:${port}/api/kernels/${kernelId}/channels?session_id=${session}&token=${token}`);
  await new Promise<void>((resolve, reject) => {
    socket.addEventListener('open', () => resolve(), { once: true });
    socket.addEventListener('error', () => reject(new Error('the kernel websocket did not open')), { once: true });
  });
  const pending = new Map<string, { result: ExecuteResult; idle: boolean; replied: boolean; started: number; done: (r: ExecuteResult) => void }>();
  socket.addEventListener('message', (event: MessageEvent) => {
    const message = JSON.parse(String(event.data)) as JupyterMessage;
    const entry = pending.get(message.parent_header.msg_id ?? '');
    if (entry === undefined) return;
    const { content } = message;
    switch (message.header.msg_type) {
      case 'stream':
        if (content.name === 'stdout') entry.result.stdout += String(content.text);
        else entry.result.error += String(content.text);
        break;
      case 'execute_result':
        entry.result.result += (content.data as Record<string, string | undefined>)['text/plain'] ?? '';
        break;
      case 'error':
        entry.result.error += `${String(content.ename)}: ${String(content.evalue)}`;
        break;
      case 'execute_reply':
        entry.result.status = String(content.status);
        entry.replied = true;
        break;
      case 'status':
        if (content.execution_state === 'idle') entry.idle = true;
        break;
    }
    // Done once the reply has come and the kernel went idle (all of the execution's output has been sent).
    if (entry.replied && entry.idle) {
      pending.delete(message.parent_header.msg_id ?? '');
      entry.result.durationMs = Math.round((performance.now() - entry.started) * 10) / 10;
      entry.done(entry.result);
    }
  });
  const execute = (code: string) =>
    new Promise<ExecuteResult>((resolve) => {
      const msgId = randomUUID();
      const result: ExecuteResult = { status: '', stdout: '', result: '', error: '', durationMs: 0 };
      pending.set(msgId, { result, idle: false, replied: false, started: performance.now(), done: resolve });
      socket.send(
        JSON.stringify({
          header: { msg_id: msgId, msg_type: 'execute_request', session, username: 'workcell', date: new Date().toISOString(), version: '5.3' },
          parent_header: {},
          metadata: {},
          content: { code, silent: false, store_history: true, user_expressions: {}, allow_stdin: false, stop_on_error: true },
          channel: 'shell',
          buffers: [],
        }),
      );
    });
  return { execute, close: () => socket.close() };
}

async function checkKernel(kernel: string, checkCode: string): Promise<KernelReport> {
  const started = performance.now();
  const created = await api<{ id: string; kernel: { id: string } }>('POST', '/api/sessions', { path: `check-${kernel}.ipynb`, type: 'notebook', name: '', kernel: { name: kernel } });
  const sessionMs = Math.round(performance.now() - started);
  const channel = await connect(created.kernel.id);
  try {
    const firstExecute = await channel.execute(kernel === 'python3' ? 'print(6 * 7)' : 'console.log(6 * 7)');
    const check = await channel.execute(checkCode);
    const warmRoundTripsMs: number[] = [];
    for (let i = 0; i < 10; i++) warmRoundTripsMs.push((await channel.execute('1')).durationMs);
    return { kernel, sessionMs, firstExecute, check, warmRoundTripsMs };
  } finally {
    channel.close();
    await api('DELETE', `/api/sessions/${created.id}`);
  }
}

const checks: Record<string, string> = {
  python3: 'import numpy as np, pandas as pd\nprint(int(np.arange(10).sum()), len(pd.DataFrame({"a": [1, 2]})))',
  // Uses Node's types (process, fs): they must be reachable from the notebook's folder.
  tslab: 'import { existsSync } from "fs";\nconst version: string = process.version;\nconsole.log(existsSync("/workspace"), version.startsWith("v"));',
  jslab: 'const doubled = [1, 2, 3].map((x) => x * 2);\nconsole.log(doubled.join(","));',
};

const startedAt = performance.now();
const server = spawn('jupyter', ['server', '--no-browser', `--port=${port}`, '--ip=127.0.0.1', '--ServerApp.root_dir=/workspace'], {
  env: { ...process.env, JUPYTER_TOKEN: token },
  stdio: ['ignore', 'ignore', 'pipe'],
});
let serverLog = '';
server.stderr.on('data', (chunk: Buffer) => (serverLog += chunk.toString('utf8')));
try {
  let status: { version?: string } | undefined;
  while (status === undefined) {
    if (server.exitCode !== null) throw new Error(`jupyter server exited (${server.exitCode}):\n${serverLog}`);
    // sandboxd's own bound for a Jupyter start (src/sandboxd/code/jupyter-server.ts): a hang, not a slow machine.
    if (performance.now() - startedAt > 60_000) throw new Error(`jupyter server not ready after 60 s:\n${serverLog}`);
    status = await api<{ version: string }>('GET', '/api').catch(async () => {
      await new Promise((resolve) => setTimeout(resolve, 50));
      return undefined;
    });
  }
  const serverReadyMs = Math.round(performance.now() - startedAt);
  const kernels: KernelReport[] = [];
  for (const [kernel, code] of Object.entries(checks)) kernels.push(await checkKernel(kernel, code));
  const report: JupyterReport = { serverReadyMs, serverVersion: status.version ?? '', kernels };
  process.stdout.write(`${JSON.stringify(report)}\n`);
} catch (error) {
  process.stdout.write(`${JSON.stringify({ error: error instanceof Error ? error.message : String(error), serverLog })}\n`);
  process.exitCode = 1;
} finally {
  server.kill('SIGTERM');
}
