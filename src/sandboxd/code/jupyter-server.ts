// The sandbox's Jupyter server: jupyter-server started on first use (the first run_code, or a person's first request
// to /jobs/<id>/jupyter/), on 127.0.0.1:<port> of the sandbox's own network namespace, serving /workspace under the
// public base URL (so its pages and links work through the orchestrator's prefix), with a random token that only
// sandboxd knows: sandboxd adds it to every request it proxies (people authenticate at the orchestrator and never see
// it) and to its own API calls and kernel websockets (code-runner.ts).
//
// Why the XSRF and Origin checks need no settings behind the proxy: every request reaches Jupyter token-authenticated
// (the Authorization header sandboxd adds), and jupyter-server skips both checks for token-authenticated requests:
// they exist to protect cookie-authenticated browsers, and here the browser's credential is the orchestrator's (a
// bearer key, or a job-scoped HttpOnly SameSite=Strict cookie that cross-site pages and websockets do not get), which
// the orchestrator checks before anything reaches the sandbox. disable_check_xsrf is set as well, so that this holds
// for requests that are not token-authenticated in Jupyter's eyes (none are sent). allow_origin stays unset: no CORS
// headers go back to browsers.
//
// A server that dies (killed by the agent's code, or by the sandbox's process limit) is started again on next use;
// `generation` tells kernels of the old one (gone with it) from kernels of the new one.
// It must never listen beyond the sandbox's loopback, and never hand the token to anything but Jupyter.
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { request as httpRequest } from 'node:http';
import type { Readable } from 'node:stream';
import { setTimeout as delay } from 'node:timers/promises';
import { SandboxdToolError } from '../errors.ts';
import { silentLogger, type Logger } from '../log.ts';
import type { Service } from '../services.ts';
import { isRunning, signalProcess, descendantsOf, waitUntilGone } from '../shell/process-tree.ts';

export const defaultJupyterPort = 8888;
/** How long the server may take to answer /api/status after it is started. */
const defaultStartTimeoutMs = 60_000;
/** After SIGTERM (which shuts the kernels down), how long before everything left gets SIGKILL. */
const stopGraceMs = 3_000;
const stderrTailChars = 8_000;

export interface JupyterServerOptions {
  /** The notebooks' root and the kernels' working directory (the workspace). */
  rootDir: string;
  /**
   * The public prefix its pages are served under (e.g. /jobs/<id>/jupyter/). Unset: the base path of the first proxied
   * request, or / when run_code starts the server first.
   */
  baseUrl?: string | undefined;
  port?: number;
  /** The server's (and so every kernel's) environment: HOME, PATH, LANG, the egress proxy's variables, ... */
  env: Record<string, string>;
  /** The command that starts the server (default jupyter-server from PATH); tests may start a stand-in. */
  command?: string;
  startTimeoutMs?: number;
  log?: Logger;
}

type ServerProcess = ChildProcessByStdio<null, null, Readable>;

export class JupyterServer {
  readonly port: number;
  readonly #token = randomBytes(24).toString('hex');
  readonly #options: JupyterServerOptions;
  readonly #log: Logger;
  #baseUrl: string | undefined;
  #process: ServerProcess | undefined;
  #starting: Promise<void> | undefined;
  #stderrTail = '';
  #generation = 0;
  #closed = false;

  constructor(options: JupyterServerOptions) {
    this.#options = options;
    this.port = options.port ?? defaultJupyterPort;
    this.#log = options.log ?? silentLogger;
    this.#baseUrl = options.baseUrl === undefined ? undefined : normalizeBaseUrl(options.baseUrl);
  }

  /** The prefix every path of the server starts with, with a slash at both ends. */
  get baseUrl(): string {
    return this.#baseUrl ?? '/';
  }

  /** Counts starts: a kernel started under an earlier generation died with that server. */
  get generation(): number {
    return this.#generation;
  }

  /** The header that authenticates sandboxd's own requests and the ones it proxies. */
  get authorization(): Record<string, string> {
    return { authorization: `token ${this.#token}` };
  }

  /** The ServiceRegistry entry: people's requests arrive with the public path, which is the server's base URL. */
  get service(): Service {
    return {
      port: this.port,
      stripBasePath: false,
      ensureStarted: (basePath) => this.ensureStarted(basePath),
      headers: () => this.authorization,
      listeners: () => [{ port: this.port, pids: this.#process?.pid === undefined ? [] : [this.#process.pid] }],
    };
  }

  get running(): boolean {
    return this.#process !== undefined && this.#process.exitCode === null && this.#process.signalCode === null;
  }

  /** Fixes the base URL while it is not set and the server has not started; refuses another prefix than the set one. */
  useBaseUrl(basePath: string): void {
    const wanted = normalizeBaseUrl(basePath);
    if (this.#baseUrl === undefined && !this.running) this.#baseUrl = wanted;
    else if (wanted !== this.baseUrl) {
      throw new SandboxdToolError(
        'unavailable',
        `Jupyter is served under ${this.baseUrl}, not ${wanted}: start sandboxd with --jupyter-base-url ${wanted} (the bwrap runtime passes the job's prefix)`,
      );
    }
  }

  /**
   * Starts the server unless it runs, and resolves once it answers /api/status. `basePath`, from a proxied request,
   * fixes the base URL when it is not set yet; a request under another prefix than the running server's is refused.
   */
  async ensureStarted(basePath?: string): Promise<void> {
    if (this.#closed) throw new SandboxdToolError('unavailable', 'sandboxd is shutting down');
    if (basePath !== undefined) this.useBaseUrl(basePath);
    if (this.running && this.#starting === undefined) return;
    this.#starting ??= this.#start().finally(() => (this.#starting = undefined));
    return this.#starting;
  }

  async #start(): Promise<void> {
    const startedAt = performance.now();
    const args = [
      '--no-browser',
      '--ip=127.0.0.1',
      `--port=${this.port}`,
      // Fail rather than move to another port: the orchestrator's proxy and run_code know only this one.
      '--port-retries=0',
      `--ServerApp.root_dir=${this.#options.rootDir}`,
      `--ServerApp.base_url=${this.baseUrl}`,
      // See the header: the orchestrator's credential is the check; every request here is token-authenticated.
      '--ServerApp.disable_check_xsrf=True',
      // Output is capped by sandboxd (code-runner.ts); Jupyter's rate limit would drop the middle of a long output
      // and replace it with advice about Jupyter's configuration, which means nothing to the agent.
      '--ServerApp.limit_rate=False',
    ];
    this.#stderrTail = '';
    const child = spawn(this.#options.command ?? 'jupyter-server', args, {
      // Not the workspace: Jupyter also reads jupyter_server_config.py from its working directory.
      cwd: '/',
      env: { ...this.#options.env, JUPYTER_TOKEN: this.#token },
      stdio: ['ignore', 'ignore', 'pipe'],
      detached: true,
    });
    this.#process = child;
    this.#generation++;
    const generation = this.#generation;
    let spawnError: Error | undefined;
    child.once('error', (error) => (spawnError = error));
    let pending = '';
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk: string) => {
      this.#stderrTail = (this.#stderrTail + chunk).slice(-stderrTailChars);
      pending += chunk;
      let newline: number;
      while ((newline = pending.indexOf('\n')) >= 0) {
        const line = pending.slice(0, newline);
        pending = pending.slice(newline + 1);
        // Jupyter's own level markers: warnings and errors reach sandboxd's log at its default level.
        if (/^\[[WEC] /.test(line)) this.#log.warn('jupyter', { line });
        else this.#log.debug('jupyter', { line });
      }
    });
    child.once('exit', (code, signal) => {
      if (this.#closed) return;
      this.#log.warn('jupyter server exited', { code, signal, generation });
    });
    this.#log.info('starting jupyter server', { port: this.port, base_url: this.baseUrl, generation });

    const timeoutMs = this.#options.startTimeoutMs ?? defaultStartTimeoutMs;
    const deadline = startedAt + timeoutMs;
    for (;;) {
      if (spawnError !== undefined) throw this.#startFailure(`it could not be started (${spawnError.message}); is jupyter-server installed in the image?`);
      if (child.exitCode !== null || child.signalCode !== null) {
        const inUse = /address already in use|is already in use/i.test(this.#stderrTail);
        throw this.#startFailure(
          inUse
            ? `127.0.0.1:${this.port} is already in use inside the sandbox (did a command start a server on port ${this.port}? stop it)`
            : `it exited (${child.exitCode ?? child.signalCode}) while starting`,
        );
      }
      if (this.#closed) throw new SandboxdToolError('unavailable', 'sandboxd is shutting down');
      const status = await this.#get('api/status').catch(() => undefined);
      if (status === 200) break;
      if (performance.now() > deadline) {
        this.#kill(child);
        throw this.#startFailure(`it did not answer within ${timeoutMs} ms`);
      }
      // Readiness is an answer on the port; nothing signals it sooner.
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    this.#log.info('jupyter server ready', { ready_ms: Math.round(performance.now() - startedAt), generation });
  }

  #startFailure(reason: string): SandboxdToolError {
    const tail = this.#stderrTail.trim().split('\n').slice(-15).join('\n');
    return new SandboxdToolError('unavailable', `the Jupyter server could not start: ${reason}${tail === '' ? '' : `\nits last log lines:\n${tail}`}`);
  }

  /** GET of a path below the base URL: resolves with the status code. */
  #get(path: string): Promise<number> {
    return new Promise((resolve, reject) => {
      const request = httpRequest({ host: '127.0.0.1', port: this.port, path: `${this.baseUrl}${path}`, headers: this.authorization, timeout: 5_000 }, (response) => {
        response.resume();
        resolve(response.statusCode ?? 0);
      });
      request.on('timeout', () => request.destroy(new Error('timed out')));
      request.on('error', reject);
      request.end();
    });
  }

  /**
   * A call to Jupyter's REST API (a path below the base URL, e.g. `api/sessions`): resolves with the status and the
   * parsed JSON body (undefined when empty); rejects on a transport failure.
   */
  api(method: string, path: string, body?: unknown, options: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<{ status: number; json: unknown }> {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    return new Promise((resolve, reject) => {
      const request = httpRequest(
        {
          host: '127.0.0.1',
          port: this.port,
          method,
          path: `${this.baseUrl}${path}`,
          headers: { ...this.authorization, ...(payload === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) }) },
          timeout: options.timeoutMs ?? 60_000,
          ...(options.signal === undefined ? {} : { signal: options.signal }),
        },
        (response) => {
          const chunks: Buffer[] = [];
          response.on('data', (chunk: Buffer) => chunks.push(chunk));
          response.on('error', reject);
          response.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            let json: unknown;
            try {
              json = text === '' ? undefined : JSON.parse(text);
            } catch {
              json = text;
            }
            resolve({ status: response.statusCode ?? 0, json });
          });
        },
      );
      request.on('timeout', () => request.destroy(new Error(`Jupyter did not answer ${method} ${path} in time`)));
      request.on('error', reject);
      request.end(payload);
    });
  }

  /**
   * The pid of a kernel's process (a session leader: jupyter_client starts kernels in sessions of their own, so it is
   * also its process group), found among the server's descendants by the connection file on its command line.
   * sandboxd signals kernels directly: an interrupt through Jupyter's API waits its turn behind everything the
   * server is busy with, such as relaying the output of a print loop.
   */
  kernelProcess(kernelId: string): number | undefined {
    const server = this.#process?.pid;
    if (server === undefined || !this.running) return undefined;
    const needle = `kernel-${kernelId}.json`;
    for (const entry of descendantsOf(server)) {
      try {
        if (readFileSync(`/proc/${entry.pid}/cmdline`, 'utf8').includes(needle)) return entry.pid;
      } catch {
        // exited while we looked
      }
    }
    return undefined;
  }

  /** The websocket URL of a path below the base URL. */
  websocketUrl(path: string): string {
    return `ws://127.0.0.1:${this.port}${this.baseUrl}${path}`;
  }

  #kill(child: ServerProcess): void {
    if (child.pid === undefined) return;
    // Kernels run in sessions of their own (jupyter_client starts them so): reach them as the server's descendants.
    const kernels = descendantsOf(child.pid);
    signalProcess(-child.pid, 'SIGKILL');
    for (const kernel of kernels) signalProcess(kernel.pid, 'SIGKILL');
  }

  /** Stops the server and its kernels: SIGTERM (Jupyter shuts its kernels down), then SIGKILL to what is left. */
  async close(): Promise<void> {
    this.#closed = true;
    const child = this.#process;
    if (child?.pid === undefined || !this.running) return;
    // The pid can be gone a moment before Node has seen the child exit (and `running` turns false): wait for both.
    const exited = once(child, 'exit').catch(() => undefined);
    const pids = [child.pid, ...descendantsOf(child.pid).map((entry) => entry.pid)];
    signalProcess(child.pid, 'SIGTERM');
    await waitUntilGone(pids, stopGraceMs);
    for (const pid of pids) if (isRunning(pid)) signalProcess(pid, 'SIGKILL');
    await waitUntilGone(pids, stopGraceMs);
    await Promise.race([exited, delay(stopGraceMs, undefined, { ref: false })]);
  }
}

/** `/jobs/x/jupyter` → `/jobs/x/jupyter/`; anything unusable → `/`. */
export function normalizeBaseUrl(value: string): string {
  const path = value.trim();
  if (!path.startsWith('/') || /[\s?#]/.test(path)) return '/';
  return path.endsWith('/') ? path : `${path}/`;
}

/**
 * The server's environment, which every kernel inherits: sandboxd's own few variables (HOME, PATH, ...; never its
 * token, which is not in its environment), non-interactive pagers, and `extra` (the egress proxy's variables).
 */
export function jupyterEnvironment(extra: Record<string, string> = {}): Record<string, string> {
  const env: Record<string, string> = {
    HOME: process.env.HOME ?? homedir(),
    PATH: process.env.PATH ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    LANG: process.env.LANG ?? 'C.UTF-8',
    PAGER: 'cat',
    GIT_PAGER: 'cat',
    // Python's debugger (ipykernel's) warns on stderr about frozen modules at every kernel start.
    PYDEVD_DISABLE_FILE_VALIDATION: '1',
  };
  for (const name of ['USER', 'LOGNAME', 'TZ']) if (process.env[name] !== undefined) env[name] = process.env[name];
  return { ...env, ...extra };
}
