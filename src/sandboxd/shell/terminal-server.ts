// People's terminals: the websocket at /v1/terminal (the orchestrator's /jobs/:id/terminal, same credentials as
// every route) attached to a PTY in the sandbox.
//
//   /v1/terminal                 a new interactive bash in the workspace, for this connection only
//   /v1/terminal?session=NAME    the agent's shell session NAME, read-only: its output as the programs drew it
//                                (the last 64 KiB first, then live), and each command the agent sends
//   &cols=C&rows=R               the initial size of a new terminal (default 80x24)
//
// Frames: terminal bytes both ways (binary frames; text frames from the client are typed as UTF-8 too), except a
// text frame holding a JSON object with a "type": a control message. The one there is: {"type":"resize","cols":C,
// "rows":R}. Malformed control messages are ignored, as a terminal ignores a sequence it does not know; the server
// sends only terminal bytes, so a plain "attach" client (xterm.js's AttachAddon) works.
//
// Why watching an agent's session is read-only: the agent drives it. Keys typed into it would wait in its terminal
// until one of the agent's later commands read them as input, and a resize would change the width its output is laid
// out in. A person who wants to act opens a terminal of their own, on the same workspace.
//
// Closing the websocket hangs up the terminal: its bash and every process still in the terminal's session get
// SIGHUP, then SIGKILL a second later; only a process that left the session (setsid) outlives it. Closing a watcher
// only detaches it. At most maxTerminals terminals are open at once (watchers are not counted).
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { RawData, WebSocket, WebSocketServer } from 'ws';
import type { Logger } from '../log.ts';
import { shellSessionName } from '../protocol.ts';
import { membersOf, signalProcess, waitUntilGone } from './process-tree.ts';
import { loadPty, type Pty } from './pty.ts';
import type { ShellSessions } from './shell-sessions.ts';

export const terminalPath = '/v1/terminal';
export const maxTerminals = 8;
/** Largest frame accepted from a client (a paste); the connection is closed beyond it (1009). */
const maxFrameBytes = 1024 * 1024;
/** Output queued to a slow client before the terminal is paused (its programs then block on writes, as on a real one). */
const maxBufferedBytes = 1024 * 1024;
const maxDimension = 1000;
const hangupGraceMs = 1000;

export class TerminalError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

export interface TerminalServerOptions {
  sessions: ShellSessions;
  /** Where new terminals start (the workspace root). */
  cwd: string;
  /** Their environment (the shell's, with TERM for a person's terminal). */
  env: Record<string, string>;
  bashPath?: string;
  log: Logger;
  maxTerminals?: number;
}

interface Request {
  session?: string;
  cols: number;
  rows: number;
}

/** Reads ?session, ?cols and ?rows; anything wrong is a 400 that says what to send. */
export function parseTerminalQuery(url: string): Request {
  const query = new URL(url, 'http://x').searchParams;
  const dimension = (name: 'cols' | 'rows', fallback: number) => {
    const value = query.get(name);
    if (value === null) return fallback;
    const number = /^\d{1,4}$/.test(value) ? Number(value) : Number.NaN;
    if (!(number >= 1 && number <= maxDimension)) throw new TerminalError(400, `${name} must be a whole number from 1 to ${maxDimension}, not ${JSON.stringify(value.slice(0, 20))}`);
    return number;
  };
  const request: Request = { cols: dimension('cols', 80), rows: dimension('rows', 24) };
  const session = query.get('session');
  if (session !== null) {
    const parsed = shellSessionName.safeParse(session);
    if (!parsed.success) throw new TerminalError(400, `session: ${parsed.error.issues[0]?.message ?? 'invalid'}`);
    request.session = parsed.data;
  }
  return request;
}

function bytesOf(data: RawData): Buffer {
  return Buffer.isBuffer(data) ? data : Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data);
}

/** A control message, or undefined for terminal input. */
function controlMessage(data: RawData, isBinary: boolean): { type: string; [key: string]: unknown } | undefined {
  if (isBinary) return undefined;
  const text = bytesOf(data).toString('utf8');
  if (!text.startsWith('{')) return undefined;
  try {
    const value = JSON.parse(text) as unknown;
    if (typeof value === 'object' && value !== null && !Array.isArray(value) && typeof (value as { type?: unknown }).type === 'string') return value as { type: string };
  } catch {
    // not JSON: typed text that starts with "{"
  }
  return undefined;
}

function validSize(message: Record<string, unknown>): { cols: number; rows: number } | undefined {
  const { cols, rows } = message;
  const ok = (value: unknown): value is number => Number.isInteger(value) && (value as number) >= 1 && (value as number) <= maxDimension;
  return ok(cols) && ok(rows) ? { cols, rows } : undefined;
}

export class TerminalServer {
  readonly #options: TerminalServerOptions;
  /** Loaded on the first terminal: most sandboxes never open one, and sandboxd starts faster without it. */
  #sockets: Promise<WebSocketServer> | undefined;
  readonly #terminals = new Set<{ close: () => Promise<void> }>();
  readonly #watchers = new Set<WebSocket>();
  #opening = 0;
  #closed = false;

  constructor(options: TerminalServerOptions) {
    this.#options = options;
  }

  /** Terminals open now (not counting watchers of agent sessions). */
  get openTerminals(): number {
    return this.#terminals.size;
  }

  /**
   * Handles an authenticated upgrade to /v1/terminal. Rejects (before the websocket exists) with a TerminalError
   * whose status and message the caller sends back as plain HTTP.
   */
  async handleUpgrade(request: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    if (this.#closed) throw new TerminalError(503, 'sandboxd is stopping');
    const wanted = parseTerminalQuery(request.url ?? '/');
    if (wanted.session !== undefined) {
      const session = this.#options.sessions.get(wanted.session);
      if (session === undefined) {
        const names = this.#options.sessions.names();
        throw new TerminalError(404, `no shell session named ${JSON.stringify(wanted.session)}; the agent's sessions are: ${names.join(', ') || 'none yet (a session exists once the agent ran a command in it)'}`);
      }
      const ws = await this.#accept(request, socket, head);
      this.#watch(ws, wanted.session, session.watch.bind(session));
      return;
    }
    const max = this.#options.maxTerminals ?? maxTerminals;
    if (this.#terminals.size + this.#opening >= max) throw new TerminalError(429, `${max} terminals are open in this sandbox, the most it allows; close one first`);
    this.#opening++;
    let terminal: Pty;
    try {
      const pty = await loadPty();
      // A person's terminal follows its window: no fixed COLUMNS and LINES (bash sets them from the size).
      const { COLUMNS: _columns, LINES: _lines, ...env } = this.#options.env;
      terminal = pty.spawn(this.#options.bashPath ?? 'bash', ['-i'], { name: 'xterm-256color', cols: wanted.cols, rows: wanted.rows, cwd: this.#options.cwd, env: { ...env, TERM: 'xterm-256color' }, encoding: null });
    } catch (error) {
      throw new TerminalError(503, `cannot start a terminal: ${error instanceof Error ? error.message : String(error)}`);
    } finally {
      this.#opening--;
    }
    let ws: WebSocket;
    try {
      ws = await this.#accept(request, socket, head);
    } catch (error) {
      await hangUp(terminal);
      throw error;
    }
    this.#connect(ws, terminal);
  }

  /** Closes every terminal (killing their processes) and every watcher. */
  async close(): Promise<void> {
    this.#closed = true;
    for (const ws of this.#watchers) ws.close(1001, 'sandboxd is stopping');
    await Promise.all([...this.#terminals].map((terminal) => terminal.close()));
    void this.#sockets?.then((sockets) => sockets.close());
  }

  async #accept(request: IncomingMessage, socket: Duplex, head: Buffer): Promise<WebSocket> {
    this.#sockets ??= import('ws').then(({ WebSocketServer }) => new WebSocketServer({ noServer: true, maxPayload: maxFrameBytes, perMessageDeflate: false }));
    const sockets = await this.#sockets;
    return new Promise((resolve, reject) => {
      // ws answers a bad handshake (no Sec-WebSocket-Key, wrong version) with a 400 itself, and never calls back.
      socket.once('close', () => reject(new TerminalError(400, 'the websocket handshake failed')));
      sockets.handleUpgrade(request, socket, head, (ws) => resolve(ws));
    });
  }

  #connect(ws: WebSocket, terminal: Pty): void {
    const log = this.#options.log;
    let queued = 0;
    let paused = false;
    let closing: Promise<void> | undefined;
    const entry = {
      close: () =>
        (closing ??= (async () => {
          this.#terminals.delete(entry);
          if (ws.readyState === ws.OPEN) ws.close(1000, 'the terminal was closed');
          await hangUp(terminal);
        })()),
    };
    this.#terminals.add(entry);
    log.info('terminal opened', { bash_pid: terminal.pid });
    terminal.onData((chunk: Buffer | string) => {
      if (ws.readyState !== ws.OPEN) return;
      const data = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
      queued += data.length;
      ws.send(data, { binary: true }, () => {
        queued -= data.length;
        if (paused && queued < maxBufferedBytes / 2) {
          paused = false;
          terminal.resume();
        }
      });
      if (!paused && queued > maxBufferedBytes) {
        paused = true;
        terminal.pause();
      }
    });
    terminal.onExit(({ exitCode }) => {
      log.info('terminal exited', { bash_pid: terminal.pid, code: exitCode });
      if (ws.readyState === ws.OPEN) ws.close(1000, `bash exited with code ${exitCode}`);
      void entry.close();
    });
    ws.on('message', (data: RawData, isBinary: boolean) => {
      const control = controlMessage(data, isBinary);
      if (closing !== undefined) return; // its descriptor may already name another file
      if (control === undefined) {
        terminal.write(bytesOf(data));
        return;
      }
      const size = control.type === 'resize' ? validSize(control) : undefined;
      if (size === undefined) return log.debug('terminal control message ignored', { type: control.type.slice(0, 40) });
      try {
        terminal.resize(size.cols, size.rows);
      } catch {
        // the terminal is closing
      }
    });
    ws.on('close', () => void entry.close());
    ws.on('error', () => void entry.close());
  }

  #watch(ws: WebSocket, name: string, watch: (listener: (data: Buffer) => void) => () => void): void {
    this.#watchers.add(ws);
    this.#options.log.info('terminal watching a shell session', { session: name });
    ws.send(Buffer.from(`\x1b[2m[workcell] the agent's shell session "${name}", read-only: you see its output; open /jobs/<id>/terminal without ?session= for a terminal of your own\x1b[0m\r\n`), { binary: true });
    let queued = 0;
    let told = false;
    const stop = watch((data) => {
      // A watcher too slow to keep up misses output rather than slowing the agent down.
      if (ws.readyState !== ws.OPEN || queued > maxBufferedBytes) return;
      queued += data.length;
      ws.send(data, { binary: true }, () => (queued -= data.length));
    });
    ws.on('message', (data: RawData, isBinary: boolean) => {
      if (told || controlMessage(data, isBinary) !== undefined) return;
      told = true;
      ws.send(Buffer.from('\r\n\x1b[2m[workcell] read-only: what you type here is not sent to the agent\'s session\x1b[0m\r\n'), { binary: true });
    });
    ws.on('close', () => {
      stop();
      this.#watchers.delete(ws);
    });
    ws.on('error', () => ws.terminate());
  }
}

/** A terminal hangup: SIGHUP to bash and to every process of its session, then SIGKILL to what is left of them. */
async function hangUp(terminal: Pty): Promise<void> {
  const pid = terminal.pid;
  const members = () => [...new Set([pid, ...membersOf('session', pid)])];
  const first = members();
  for (const each of first) signalProcess(each, 'SIGHUP');
  await waitUntilGone(first, hangupGraceMs);
  for (const each of new Set([...first, ...members()])) signalProcess(each, 'SIGKILL');
  try {
    terminal.destroy?.();
  } catch {
    // already closed
  }
}
