// Services inside the sandbox that people reach through the orchestrator (the noVNC desktop, Jupyter, ...): each
// listens on a loopback port of the sandbox's own network namespace, is started on first use, and is proxied by
// sandboxd at /v1/services/<name>/<path> for plain HTTP and websocket upgrades alike. Nothing in the sandbox listens
// beyond the sandbox: the worker reaches sandboxd over its unix socket, and the orchestrator checks the caller.
//
// The orchestrator sends the public path after the prefix (e.g. /v1/services/jupyter/jobs/<id>/jupyter/api/...)
// and the public prefix in `x-workcell-base-path`; a service either wants the public path (it was started with
// that base URL) or the path below the prefix (`stripBasePath`).
import { request as httpRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import { connect, type Socket } from 'node:net';
import { pipeline, type Duplex } from 'node:stream';
import { foreignListener } from './listener-owner.ts';

export interface Service {
  /** Loopback port the service listens on inside the sandbox. */
  port: number;
  /** Whether the service expects paths below the public prefix (true) or the whole public path (false). */
  stripBasePath: boolean;
  /** Starts the service if it is not running and resolves once it accepts connections; called before every proxied request. */
  ensureStarted(basePath: string): Promise<void>;
  /** Headers added to every proxied request: a credential only sandboxd knows (Jupyter's token), never the caller's. */
  headers?(): Record<string, string>;
  /**
   * The ports the service answers on and the processes sandboxd started to hold them: a request is served only when
   * those processes (or their children) hold every socket listening there (listener-owner.ts).
   */
  listeners?(): Array<{ port: number; pids: number[] }>;
}

export const servicePrefix = '/v1/services/';
export const basePathHeader = 'x-workcell-base-path';

/** Headers that describe one hop, not the message (RFC 9110 §7.6.1), plus our own credentials. */
const hopByHop = new Set(['connection', 'keep-alive', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'authorization', basePathHeader]);

export class ServiceError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

interface Target {
  service: Service;
  basePath: string;
  upstreamPath: string;
}

export class ServiceRegistry {
  readonly #services = new Map<string, Service>();

  register(name: string, service: Service): void {
    this.#services.set(name, service);
  }

  names(): string[] {
    return [...this.#services.keys()];
  }

  /** Finds the service of a /v1/services/<name>/... URL and the path to send it. */
  #target(request: IncomingMessage): Target {
    const url = request.url ?? '/';
    const rest = url.slice(servicePrefix.length);
    const slash = rest.indexOf('/');
    const name = slash === -1 ? rest.split('?')[0]! : rest.slice(0, slash);
    const service = this.#services.get(name);
    if (service === undefined) throw new ServiceError(404, `no service ${JSON.stringify(name)}; the services are ${this.names().join(', ') || 'none'}`);
    const publicPath = slash === -1 ? '/' : rest.slice(slash);
    const header = request.headers[basePathHeader];
    const basePath = typeof header === 'string' && header.startsWith('/') ? header : '/';
    if (!publicPath.startsWith(basePath)) throw new ServiceError(400, `the path ${publicPath.split('?')[0]} is not below the base path ${basePath}`);
    const upstreamPath = service.stripBasePath ? `/${publicPath.slice(basePath.length).replace(/^\/+/, '')}` : publicPath;
    return { service, basePath, upstreamPath };
  }

  /** Starts the service and checks that what listens on its ports is what sandboxd started. */
  async #ready(service: Service, basePath: string): Promise<void> {
    await service.ensureStarted(basePath);
    for (const { port, pids } of service.listeners?.() ?? []) {
      const foreign = await foreignListener(port, pids);
      if (foreign !== undefined) throw new ServiceError(503, foreign);
    }
  }

  /** Proxies a plain HTTP request (streamed both ways). */
  async proxyRequest(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const { service, basePath, upstreamPath } = this.#target(request);
    await this.#ready(service, basePath);
    await new Promise<void>((resolve, reject) => {
      const upstream = httpRequest(
        { host: '127.0.0.1', port: service.port, method: request.method, path: upstreamPath, headers: { ...forwardHeaders(request), ...service.headers?.() } },
        (upstreamResponse) => {
          response.writeHead(upstreamResponse.statusCode ?? 502, upstreamResponse.statusMessage, filterHeaders(upstreamResponse.headers));
          // pipeline: an error on either side (a client gone, a service that died) ends both, never the process.
          pipeline(upstreamResponse, response, () => resolve());
        },
      );
      upstream.on('error', (error) => reject(new ServiceError(502, `the service did not answer: ${error.message}`)));
      response.on('close', () => upstream.destroy());
      pipeline(request, upstream, () => undefined);
    });
  }

  /** Proxies a websocket (or any HTTP upgrade): replays the request to the service, then splices the sockets. */
  async proxyUpgrade(request: IncomingMessage, client: Duplex, head: Buffer): Promise<void> {
    const { service, basePath, upstreamPath } = this.#target(request);
    await this.#ready(service, basePath);
    const upstream: Socket = connect({ host: '127.0.0.1', port: service.port });
    await new Promise<void>((resolve, reject) => {
      upstream.once('connect', resolve);
      upstream.once('error', (error) => reject(new ServiceError(502, `the service did not answer: ${error.message}`)));
    });
    const headers = { ...forwardHeaders(request), ...service.headers?.(), connection: 'Upgrade', upgrade: request.headers.upgrade ?? 'websocket' };
    const lines = [`${request.method ?? 'GET'} ${upstreamPath} HTTP/1.1`, ...Object.entries(headers).flatMap(([key, value]) => (Array.isArray(value) ? value : [value]).filter((v) => v !== undefined).map((v) => `${key}: ${v}`))];
    upstream.write(`${lines.join('\r\n')}\r\n\r\n`);
    if (head.length > 0) upstream.write(head);
    const closeBoth = () => {
      client.destroy();
      upstream.destroy();
    };
    upstream.on('error', closeBoth);
    client.on('error', closeBoth);
    upstream.on('close', closeBoth);
    client.on('close', closeBoth);
    upstream.pipe(client);
    client.pipe(upstream);
  }
}

function forwardHeaders(request: IncomingMessage): Record<string, string | string[] | undefined> {
  const headers: Record<string, string | string[] | undefined> = {};
  for (const [key, value] of Object.entries(request.headers)) if (!hopByHop.has(key)) headers[key] = value;
  headers.host = 'localhost';
  return headers;
}

function filterHeaders(headers: IncomingMessage['headers']): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [key, value] of Object.entries(headers)) if (value !== undefined && !hopByHop.has(key)) out[key] = value;
  return out;
}
