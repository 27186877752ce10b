// The worker's client for sandboxd: JSON over HTTP on a unix socket (bwrap) or a TCP address (later runtimes).
// A sandboxd error (4xx/5xx with `{error: {code, message}}`) becomes a SandboxdError carrying that code, so the
// tool layer can tell the model exactly what was wrong; a transport failure becomes a SandboxdError 'unreachable'.
import { Agent, request, type IncomingMessage, type OutgoingHttpHeaders } from 'node:http';
import type { Socket } from 'node:net';
import { pipeline, type Readable } from 'node:stream';
import { routes, errorResponse, type RouteName, type RouteRequest, type RouteResponse, type SandboxdErrorCode } from '../sandboxd/protocol.ts';

export class SandboxdError extends Error {
  readonly code: SandboxdErrorCode | 'unreachable' | 'bad_response';
  constructor(code: SandboxdError['code'], message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'SandboxdError';
    this.code = code;
  }
}

export type SandboxdAddress = { socketPath: string } | { host: string; port: number };

/**
 * The raw HTTP way to a sandbox's sandboxd that the API's routes use (files, the desktop, Jupyter, the terminal): a
 * SandboxdClient when the sandbox is in this process, or a RemoteSandboxdChannel (src/jobs/remote) through the
 * internal route of the worker that holds it.
 */
export interface SandboxdChannel {
  /** A request with a streamed body; resolves with the raw response, which the caller owns. */
  forward(options: ForwardOptions): Promise<IncomingMessage>;
  /** An HTTP upgrade (a websocket): the 101 response, its socket and the bytes after it; or the refusal, without a socket. */
  upgrade(path: string, headers: OutgoingHttpHeaders): Promise<UpgradeResult>;
}

export interface ForwardOptions {
  method: string;
  path: string;
  headers: OutgoingHttpHeaders;
  body?: Readable;
  signal?: AbortSignal;
}

export interface UpgradeResult {
  response: IncomingMessage;
  socket?: Socket;
  head?: Buffer;
}

/** Largest response body accepted from sandboxd (file contents and shell output are capped below this). */
const maxResponseBytes = 64 * 1024 * 1024;

export class SandboxdClient implements SandboxdChannel {
  readonly #address: SandboxdAddress;
  readonly #token: string;
  readonly #agent = new Agent({ keepAlive: true, maxSockets: 16 });

  constructor(address: SandboxdAddress, token: string) {
    this.#address = address;
    this.#token = token;
  }

  async call<R extends RouteName>(route: R, body: RouteRequest<R>, options: { signal?: AbortSignal } = {}): Promise<RouteResponse<R>> {
    const { path, response } = routes[route];
    const { status, json } = await this.#post(path, body, options.signal);
    if (status >= 400) {
      const parsed = errorResponse.safeParse(json);
      if (parsed.success) throw new SandboxdError(parsed.data.error.code, parsed.data.error.message);
      throw new SandboxdError('bad_response', `sandboxd answered ${status} without an error body`);
    }
    const parsed = response.safeParse(json);
    if (!parsed.success) throw new SandboxdError('bad_response', `sandboxd answered ${path} with an unexpected body: ${parsed.error.message}`);
    return parsed.data as RouteResponse<R>;
  }

  /** GET /v1/health: true when sandboxd answers and accepts our token. */
  async healthy(signal?: AbortSignal): Promise<boolean> {
    try {
      const { status } = await this.#send('GET', '/v1/health', undefined, signal);
      return status === 200;
    } catch {
      return false;
    }
  }

  close(): void {
    this.#agent.destroy();
  }

  /**
   * Sends a request whose body is a stream and resolves with the raw response: for proxying people's requests to
   * the sandbox's services (/v1/services/...). The caller owns the response stream.
   */
  forward(options: ForwardOptions): Promise<IncomingMessage> {
    return new Promise((resolve, reject) => {
      const req = request({ ...this.#target(), agent: this.#agent, method: options.method, path: options.path, signal: options.signal, headers: { ...options.headers, authorization: `Bearer ${this.#token}` } }, resolve);
      req.on('error', (error) => reject(new SandboxdError('unreachable', `cannot reach sandboxd: ${error.message}`, { cause: error })));
      // pipeline: a caller that hangs up mid-body ends this request, and neither side's error goes unheard.
      if (options.body) pipeline(options.body, req, () => undefined);
      else req.end();
    });
  }

  /**
   * Opens an HTTP upgrade (a websocket) to `path`. Resolves with the 101 response, its socket and the bytes that
   * followed it; or, when sandboxd refused, with the refusal as a plain response (no socket).
   */
  upgrade(path: string, headers: OutgoingHttpHeaders): Promise<UpgradeResult> {
    return new Promise((resolve, reject) => {
      // No agent: an upgraded socket leaves the pool for good.
      const req = request({ ...this.#target(), method: 'GET', path, headers: { ...headers, connection: 'Upgrade', authorization: `Bearer ${this.#token}` } });
      req.on('upgrade', (response, socket, head) => resolve({ response, socket, head }));
      req.on('response', (response) => resolve({ response }));
      req.on('error', (error) => reject(new SandboxdError('unreachable', `cannot reach sandboxd: ${error.message}`, { cause: error })));
      req.end();
    });
  }

  #target() {
    return 'socketPath' in this.#address ? { socketPath: this.#address.socketPath } : { host: this.#address.host, port: this.#address.port };
  }

  #post(path: string, body: unknown, signal: AbortSignal | undefined) {
    return this.#send('POST', path, JSON.stringify(body), signal);
  }

  #send(method: string, path: string, body: string | undefined, signal: AbortSignal | undefined): Promise<{ status: number; json: unknown }> {
    return new Promise((resolve, reject) => {
      const req = request(
        {
          ...this.#target(),
          agent: this.#agent,
          method,
          path,
          signal,
          headers: {
            authorization: `Bearer ${this.#token}`,
            ...(body === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }),
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (chunk: Buffer) => {
            size += chunk.length;
            if (size > maxResponseBytes) {
              res.destroy(new SandboxdError('bad_response', `sandboxd response exceeded ${maxResponseBytes} bytes`));
              return;
            }
            chunks.push(chunk);
          });
          res.on('error', (error) => reject(error instanceof SandboxdError ? error : new SandboxdError('unreachable', `sandboxd connection failed: ${error.message}`, { cause: error })));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            try {
              resolve({ status: res.statusCode ?? 0, json: text === '' ? undefined : JSON.parse(text) });
            } catch (error) {
              reject(new SandboxdError('bad_response', `sandboxd answered ${res.statusCode} with invalid JSON`, { cause: error }));
            }
          });
        },
      );
      req.on('error', (error) => {
        if (signal?.aborted) reject(signal.reason instanceof Error ? signal.reason : error);
        else reject(new SandboxdError('unreachable', `cannot reach sandboxd: ${error.message}`, { cause: error }));
      });
      req.end(body);
    });
  }
}
