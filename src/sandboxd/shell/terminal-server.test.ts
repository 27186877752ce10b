// People's terminals through a real sandboxd server on a unix socket, with a real websocket client: a new bash,
// resize, input and output, hangup on close, watching an agent's session, and refusals.
import { readFileSync } from 'node:fs';
import { mkdtemp, realpath, rm } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { SandboxdClient } from '../../runtimes/sandboxd-client.ts';
import { listenOnSocket } from '../listen.ts';
import { createSandboxdServer, type SandboxdServer } from '../server.ts';
import { parseTerminalQuery, TerminalError } from './terminal-server.ts';

const token = 'terminal-test-token';
const escapeCharacter = String.fromCharCode(0x1b);
let base: string;
let socketPath: string;
let server: SandboxdServer;
let client: SandboxdClient;
const open: WebSocket[] = [];

beforeEach(async () => {
  base = await realpath(await mkdtemp(join(tmpdir(), 'workcell-terminal-')));
  socketPath = join(base, 'sandboxd.sock');
  // HOME: the host's own ~/.bashrc (slow, or noisy) stays out of the terminal's bash.
  server = createSandboxdServer({ token, workspaceRoot: base, shell: { env: { HOME: base } } });
  await listenOnSocket(server.httpServer, socketPath);
  client = new SandboxdClient({ socketPath }, token);
});

afterEach(async () => {
  for (const ws of open) ws.terminate();
  open.length = 0;
  client.close();
  await server.close();
  await rm(base, { recursive: true, force: true });
});

/** A terminal client: everything received so far as text, and a way to wait for some of it. */
interface Terminal {
  ws: WebSocket;
  received: () => string;
  waitFor: (pattern: RegExp) => Promise<RegExpMatchArray>;
  closed: Promise<{ code: number; reason: string }>;
}

function connect(query = '', headers: Record<string, string> = { authorization: `Bearer ${token}` }): Promise<Terminal> {
  const ws = new WebSocket(`ws+unix://${socketPath}:/v1/terminal${query}`, { headers });
  open.push(ws);
  let text = '';
  const waiters = new Set<() => void>();
  ws.on('message', (data: Buffer) => {
    text += data.toString('utf8');
    for (const waiter of waiters) waiter();
  });
  const closed = new Promise<{ code: number; reason: string }>((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
  const waitFor = (pattern: RegExp) =>
    new Promise<RegExpMatchArray>((resolve, reject) => {
      const check = () => {
        const match = pattern.exec(text);
        if (match === null) return;
        waiters.delete(check);
        clearTimeout(timer);
        resolve(match);
      };
      const timer = setTimeout(() => {
        waiters.delete(check);
        reject(new Error(`timed out waiting for ${pattern}; received: ${JSON.stringify(text.slice(-500))}`));
      }, 10_000);
      waiters.add(check);
      check();
    });
  return new Promise((resolve, reject) => {
    ws.once('open', () => resolve({ ws, received: () => text, waitFor, closed }));
    ws.once('unexpected-response', (_request, response) => {
      let body = '';
      response.on('data', (chunk: Buffer) => (body += chunk.toString()));
      response.on('end', () => reject(new Error(`${response.statusCode} ${body.trim()}`)));
    });
    ws.once('error', reject);
  });
}

function isAlive(pid: number): boolean {
  try {
    return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false;
  }
}

async function waitUntil(condition: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe('terminal websocket', () => {
  it('runs a command in a new bash in the workspace, on a terminal of the requested size', async () => {
    const terminal = await connect('?cols=100&rows=30');
    terminal.ws.send('echo "hi from $(pwd)"; stty size\r');
    await terminal.waitFor(new RegExp(`hi from ${base}\\r\\n30 100\\r\\n`));
  });

  it('resizes on a control message, takes binary input, and ignores malformed control messages', async () => {
    const terminal = await connect();
    terminal.ws.send(JSON.stringify({ type: 'resize', cols: 132, rows: 43 }));
    for (const bad of [{ type: 'resize', cols: -1, rows: 10 }, { type: 'resize', cols: '80', rows: 24 }, { type: 'resize', cols: 1e9, rows: 1 }, { type: 'resize' }, { type: 'explode' }]) {
      terminal.ws.send(JSON.stringify(bad));
    }
    terminal.ws.send(Buffer.from('stty size; echo {not json}\r'), { binary: true });
    await terminal.waitFor(/43 132\r\n\{not json\}\r\n/);
  });

  it('kills its bash and what it started when the websocket closes', async () => {
    const terminal = await connect();
    terminal.ws.send('sleep 1000 & echo "pids $$ $!"\r');
    const [, bash, sleep] = (await terminal.waitFor(/pids (\d+) (\d+)\r\n/)).map(Number);
    expect(isAlive(bash!)).toBe(true);
    expect(isAlive(sleep!)).toBe(true);
    terminal.ws.close();
    await waitUntil(() => !isAlive(bash!) && !isAlive(sleep!));
  });

  it('closes the websocket when its bash exits', async () => {
    const terminal = await connect();
    terminal.ws.send('exit 4\r');
    expect(await terminal.closed).toEqual({ code: 1000, reason: 'bash exited with code 4' });
  });

  it("shows an agent's session read-only, with its recent past, its commands and their raw output", async () => {
    await client.call('shellExec', { command: 'echo earlier', session: 'builder' });
    const watcher = await connect('?session=builder');
    await watcher.waitFor(/read-only/);
    await watcher.waitFor(/earlier\r\n/);
    const call = client.call('shellExec', { command: "printf '\\e[32mgreen\\e[0m\\n'", session: 'builder' });
    await watcher.waitFor(/printf '\\e\[32mgreen\\e\[0m\\n'/);
    await watcher.waitFor(new RegExp(`${escapeCharacter}\\[32mgreen${escapeCharacter}\\[0m\r\n`));
    expect((await call).output).toBe('green\n');
    // Typing is refused (with a note), and never reaches the session.
    watcher.ws.send('touch typed-by-a-person\r');
    await watcher.waitFor(/not sent to the agent's session/);
    expect((await client.call('shellExec', { command: 'ls typed-by-a-person 2>&1; echo done', session: 'builder' })).output).toMatch(/No such file.*\ndone\n/);
    // Closing the watcher leaves the session alone.
    watcher.ws.close();
    await watcher.closed;
    expect((await client.call('shellExec', { command: 'echo still', session: 'builder' })).output).toBe('still\n');
  });

  it('refuses bad requests before the websocket opens', async () => {
    await expect(connect('?session=nope')).rejects.toThrow(/^404 no shell session named "nope"/);
    for (const query of ['?session=a;rm%20-rf%20/', '?session=../x', '?session=$(id)', `?session=${'a'.repeat(40)}`, '?session=']) {
      await expect(connect(query), query).rejects.toThrow(/^400 session: a session name is 1 to 32 letters/);
    }
    await expect(connect('?cols=0')).rejects.toThrow(/^400 cols must be a whole number from 1 to 1000/);
    await expect(connect('?rows=abc')).rejects.toThrow(/^400 rows must be/);
    await expect(connect('', { authorization: 'Bearer wrong' })).rejects.toThrow(/^401/);
    // Not a websocket handshake at all: ws answers 400 itself.
    const plain = await new Promise<number>((resolve, reject) => {
      const req = request({ socketPath, path: '/v1/terminal', headers: { authorization: `Bearer ${token}`, connection: 'Upgrade', upgrade: 'websocket' } });
      req.on('response', (response) => resolve(response.statusCode ?? 0));
      req.on('upgrade', () => reject(new Error('upgraded')));
      req.on('error', reject);
      req.end();
    });
    expect(plain).toBe(400);
  });

  it('parses the query strictly', () => {
    expect(parseTerminalQuery('/v1/terminal')).toEqual({ cols: 80, rows: 24 });
    expect(parseTerminalQuery('/v1/terminal?session=main&cols=120&rows=40')).toEqual({ session: 'main', cols: 120, rows: 40 });
    expect(() => parseTerminalQuery('/v1/terminal?cols=1.5')).toThrow(TerminalError);
    expect(() => parseTerminalQuery('/v1/terminal?cols=99999')).toThrow(/from 1 to 1000/);
  });
});
