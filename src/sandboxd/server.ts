// sandboxd's HTTP server: the routes of protocol.ts (POST, JSON) plus GET /v1/health, behind a bearer token.
// Every failure is `{error: {code, message}}` with a message that says what to fix; a bug is a 500 `internal`
// with a short message (the stack goes to the log, never to the caller). Request bodies are capped and never
// buffered past the cap.
import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, STATUS_CODES, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { z } from 'zod';
import { CodeRunner } from './code/code-runner.ts';
import { JupyterServer, jupyterEnvironment } from './code/jupyter-server.ts';
import { httpStatusFor, SandboxdToolError } from './errors.ts';
import { WorkspaceFiles } from './files/file-tools.ts';
import { WorkspaceRawFiles } from './files/raw-files.ts';
import { handleRawFiles } from './files/raw-route.ts';
import { searchFiles } from './files/search.ts';
import { Desktop, type DesktopOptions } from './gui/desktop.ts';
import { GuiTool } from './gui/gui-tool.ts';
import { silentLogger, type Logger } from './log.ts';
import { rawFilesPath, routes, type RouteName, type RouteResponse, type SandboxdErrorCode } from './protocol.ts';
import { ServiceError, ServiceRegistry, servicePrefix } from './services.ts';
import { defaultShellEnv, type BashSessionOptions } from './shell/bash-session.ts';
import { ShellSessions } from './shell/shell-sessions.ts';
import { TerminalError, TerminalServer, terminalPath } from './shell/terminal-server.ts';

/** Largest request body accepted (a 10 MiB file, JSON-escaped, fits). */
export const maxRequestBodyBytes = 16 * 1024 * 1024;

export interface SandboxdServerOptions {
  token: string;
  /** The workspace root (default /workspace): file tools are confined to it and the shell starts in it. */
  workspaceRoot?: string;
  log?: Logger;
  /** Shell session settings other than its cwd (tests shorten the grace periods). */
  shell?: Omit<BashSessionOptions, 'cwd' | 'log'>;
  /** Services proxied at /v1/services/<name>/ (HTTP and websockets). */
  services?: ServiceRegistry;
  /** The X desktop of the gui tool and of people's noVNC viewer (the `desktop` service), started on first use. */
  desktop?: Omit<DesktopOptions, 'cwd' | 'log'>;
  /** run_code's Jupyter server, also people's (the `jupyter` service): started on first use. */
  code?: {
    /** The public prefix Jupyter is served under (the orchestrator's /jobs/<id>/jupyter/). */
    jupyterBaseUrl?: string | undefined;
    /** Added to the server's and the kernels' environment (the egress proxy's variables). */
    env?: Record<string, string>;
    /** How long the Jupyter server may take to start (a slow, emulated sandbox needs more than the default). */
    jupyterStartTimeoutMs?: number;
    /** Tests: another port or command. */
    jupyterPort?: number;
    jupyterCommand?: string;
  };
}

export interface SandboxdServer {
  readonly httpServer: Server;
  /** Stops accepting requests, ends open connections and kills the shell session with everything it started. */
  close(): Promise<void>;
}

type Handlers = { [R in RouteName]: (request: z.output<(typeof routes)[R]['request']>, signal: AbortSignal) => Promise<RouteResponse<R>> };

const routeByPath = new Map<string, RouteName>(Object.entries(routes).map(([name, route]) => [route.path, name as RouteName]));

class HttpError extends Error {
  readonly status: number;
  readonly code: SandboxdErrorCode;
  constructor(status: number, code: SandboxdErrorCode, message: string) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function digest(value: string): Buffer {
  return createHash('sha256').update(value).digest();
}

/** Reads the body up to `limit` bytes; past it, stops reading and rejects with a 413. */
function readBody(request: IncomingMessage, limit: number): Promise<Buffer> {
  const tooLarge = () => new HttpError(413, 'too_large', `request body is larger than ${limit} bytes; send less data per call (files over ${limit / 2} bytes belong in the shell tool)`);
  const declared = Number(request.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) return Promise.reject(tooLarge());
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        request.off('data', onData);
        request.pause();
        reject(tooLarge());
        return;
      }
      chunks.push(chunk);
    };
    request.on('data', onData);
    request.on('end', () => resolve(Buffer.concat(chunks, size)));
    request.on('error', reject);
  });
}

function describeValue(value: unknown): string {
  if (value === undefined) return 'nothing (the field is required)';
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'string') return `a string`;
  return `a ${typeof value}`;
}

function valueAt(body: unknown, path: readonly PropertyKey[]): unknown {
  let value: unknown = body;
  for (const key of path) {
    if (typeof value !== 'object' || value === null) return undefined;
    value = (value as Record<PropertyKey, unknown>)[key];
  }
  return value;
}

/** One line per problem, each naming the field: "path: expected string, got a number". */
function validationMessage(error: z.ZodError, body: unknown, knownFields: string[]): string {
  const problems = error.issues.map((issue) => {
    const field = issue.path.length === 0 ? 'body' : issue.path.map(String).join('.');
    if (issue.code === 'invalid_type') {
      const expected = issue.path.length === 0 && issue.expected === 'object' ? 'a JSON object' : issue.expected;
      return `${field}: expected ${expected}, got ${describeValue(valueAt(body, issue.path))}`;
    }
    if (issue.code === 'too_small' && issue.origin === 'string' && issue.minimum === 1) return `${field}: must not be empty`;
    return `${field}: ${issue.message}`;
  });
  if (typeof body === 'object' && body !== null && !Array.isArray(body)) {
    const unknown = Object.keys(body).filter((key) => !knownFields.includes(key));
    if (unknown.length > 0) problems.push(`unknown field${unknown.length > 1 ? 's' : ''} ${unknown.join(', ')} (the fields are: ${knownFields.join(', ')})`);
  }
  return `invalid request: ${problems.join('; ')}`;
}

function send(response: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  response.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  response.end(text);
}

export function createSandboxdServer(options: SandboxdServerOptions): SandboxdServer {
  const log = options.log ?? silentLogger;
  const workspaceRoot = options.workspaceRoot ?? '/workspace';
  const expectedToken = digest(options.token);
  const files = new WorkspaceFiles(workspaceRoot);
  // People's file routes (raw bytes, ETags), beside the model's JSON file tools.
  const rawFiles = new WorkspaceRawFiles(workspaceRoot);
  // The desktop starts on the first gui call or desktop request; DISPLAY points the shell's programs at it.
  const desktop = new Desktop({ ...options.desktop, env: { ...options.shell?.env, ...options.desktop?.env }, cwd: workspaceRoot, log });
  const gui = new GuiTool(desktop);
  const shellEnv = { ...options.shell?.env, DISPLAY: desktop.display };
  // The agent's named shell sessions, and people's terminals (which can also watch those sessions).
  const shell = new ShellSessions({ ...options.shell, env: shellEnv, cwd: workspaceRoot, log });
  const terminals = new TerminalServer({ sessions: shell, cwd: workspaceRoot, env: { ...defaultShellEnv(), ...shellEnv }, log, ...(options.shell?.bashPath === undefined ? {} : { bashPath: options.shell.bashPath }) });
  const services = options.services ?? new ServiceRegistry();
  if (!services.names().includes('desktop')) services.register('desktop', desktop.service());
  const jupyter = new JupyterServer({
    rootDir: workspaceRoot,
    baseUrl: options.code?.jupyterBaseUrl,
    env: jupyterEnvironment(options.code?.env),
    log,
    ...(options.code?.jupyterStartTimeoutMs === undefined ? {} : { startTimeoutMs: options.code.jupyterStartTimeoutMs }),
    ...(options.code?.jupyterPort === undefined ? {} : { port: options.code.jupyterPort }),
    ...(options.code?.jupyterCommand === undefined ? {} : { command: options.code.jupyterCommand }),
  });
  // run_code and people share one Jupyter server. A registry passed in may hold a stand-in for it (unit tests).
  if (!services.names().includes('jupyter')) services.register('jupyter', jupyter.service);
  const code = new CodeRunner({ jupyter, log });

  let attached = false;
  const handlers: Handlers = {
    shellExec: (request, signal) => shell.exec(request.session, { command: request.command, timeoutMs: request.timeout_ms, signal }),
    readFile: (request) => files.read(request),
    writeFile: (request) => files.write(request),
    editFile: (request) => files.edit(request),
    listFiles: (request) => files.list(request),
    searchFiles: (request) => searchFiles(workspaceRoot, request),
    deleteFile: (request) => files.delete(request),
    runCode: (request, signal) => code.run(request, signal),
    gui: (request, signal) => gui.run(request, signal),
    attach: async (request) => {
      if (attached) throw new HttpError(409, 'invalid_request', 'this sandbox has been given to a job already');
      attached = true;
      // sandboxd's own directory is the workspace root as it was before the job's was mounted over it.
      process.chdir(workspaceRoot);
      if (request.jupyter_base_url !== undefined) jupyter.useBaseUrl(request.jupyter_base_url);
      return { attached: true as const };
    },
  };

  function authorized(request: IncomingMessage): boolean {
    const match = /^Bearer +(\S+) *$/i.exec(request.headers.authorization ?? '');
    // Compare digests: constant time, and no length leaks through an early exit.
    return match?.[1] !== undefined && timingSafeEqual(digest(match[1]), expectedToken);
  }

  async function handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const path = (request.url ?? '/').split('?')[0] ?? '/';
    if (!authorized(request)) throw new HttpError(401, 'unauthorized', 'missing or wrong bearer token');
    if (path === '/v1/health') {
      if (request.method !== 'GET') throw new HttpError(405, 'invalid_request', 'use GET /v1/health');
      return send(response, 200, { ok: true });
    }
    if (path.startsWith(servicePrefix)) return services.proxyRequest(request, response);
    if (path === rawFilesPath) return handleRawFiles(rawFiles, request, response);
    const name = routeByPath.get(path);
    if (name === undefined) throw new HttpError(404, 'not_found', `no route ${path}; the routes are ${[...routeByPath.keys()].join(', ')} and /v1/health`);
    if (request.method !== 'POST') throw new HttpError(405, 'invalid_request', `use POST ${path}`);
    const contentType = (request.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase();
    if (contentType !== 'application/json') throw new HttpError(400, 'invalid_request', `content-type must be application/json, not ${JSON.stringify(contentType ?? '')}`);
    const raw = await readBody(request, maxRequestBodyBytes);
    let body: unknown;
    try {
      body = JSON.parse(raw.toString('utf8'));
    } catch (error) {
      throw new HttpError(400, 'invalid_request', `request body is not valid JSON (${error instanceof Error ? error.message : String(error)})`);
    }
    const schema = routes[name].request;
    const parsed = schema.safeParse(body);
    if (!parsed.success) throw new HttpError(400, 'invalid_request', validationMessage(parsed.error, body, Object.keys(schema.shape)));
    // A caller that goes away cancels its call (for the shell: Ctrl-C).
    const abort = new AbortController();
    response.on('close', () => {
      if (!response.writableFinished) abort.abort(new Error('the client closed the connection'));
    });
    const handler = handlers[name] as (request: unknown, signal: AbortSignal) => Promise<unknown>;
    send(response, 200, await handler(parsed.data, abort.signal));
  }

  const httpServer = createServer({ keepAliveTimeout: 65_000, requestTimeout: 0 }, (request, response) => {
    const startedAt = performance.now();
    void handle(request, response)
      .catch((error: unknown) => {
        if (error instanceof HttpError) {
          if (error.status === 413) response.setHeader('connection', 'close');
          return send(response, error.status, { error: { code: error.code, message: error.message } });
        }
        if (error instanceof SandboxdToolError) return send(response, httpStatusFor(error.code), { error: { code: error.code, message: error.message } });
        if (error instanceof ServiceError && !response.headersSent) return send(response, error.status, { error: { code: error.status === 404 ? 'not_found' : error.status === 400 ? 'invalid_request' : 'internal', message: error.message } });
        log.error('request failed', { path: request.url, error: error instanceof Error ? error.stack : String(error) });
        const message = error instanceof Error ? error.message.slice(0, 200) : 'unknown error';
        if (!response.headersSent) send(response, 500, { error: { code: 'internal', message: `sandboxd failed: ${message}` } });
        else response.destroy();
      })
      .finally(() => {
        log.debug('request', { method: request.method, path: request.url, status: response.statusCode, duration_ms: Math.round(performance.now() - startedAt) });
      });
  });

  // Websockets to services (the noVNC desktop, Jupyter kernels): same token, then the sockets are spliced.
  httpServer.on('upgrade', (request: IncomingMessage, socket: Duplex, head: Buffer) => {
    const reject = (status: number, message: string) => {
      if (socket.destroyed) return;
      socket.end(`HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\n${message}\n`);
    };
    if (!authorized(request)) return reject(401, 'missing or wrong bearer token');
    if ((request.url ?? '/').split('?')[0] === terminalPath) {
      terminals.handleUpgrade(request, socket, head).catch((error: unknown) => {
        if (!(error instanceof TerminalError)) log.warn('terminal upgrade failed', { error: error instanceof Error ? error.message : String(error) });
        reject(error instanceof TerminalError ? error.status : 500, error instanceof Error ? error.message : 'failed');
      });
      return;
    }
    if (!(request.url ?? '').startsWith(servicePrefix)) return reject(404, `websockets are served only under ${servicePrefix} and at ${terminalPath}`);
    services.proxyUpgrade(request, socket, head).catch((error: unknown) => {
      log.warn('service upgrade failed', { path: request.url, error: error instanceof Error ? error.message : String(error) });
      reject(error instanceof ServiceError ? error.status : 502, error instanceof Error ? error.message : 'failed');
    });
  });

  return {
    httpServer,
    async close() {
      const closed = new Promise<void>((resolve) => httpServer.close(() => resolve()));
      httpServer.closeAllConnections();
      code.close();
      await Promise.all([terminals.close().then(() => shell.close()), jupyter.close(), desktop.close()]);
      await closed;
    },
  };
}
