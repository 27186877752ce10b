// A worker's internal route: how an API replica reaches the sandbox of a job this worker runs (the files routes, the
// desktop, Jupyter and the terminal), whichever replica the person hit. It answers only signed requests
// (internal-auth.ts) and relays them only to the sandboxd routes the API's own routes use; its answers are
// sandboxd's, untouched. It also answers GET /healthz, for the orchestrator's probes.
//
// Written on node:http rather than a proxy library: it is one hop between two of our own processes, carrying raw
// request and upgrade bytes to a SandboxdClient (a unix socket or a multiplexed stream, not a URL), where a proxy
// library would want a URL target and would re-frame websockets.
import { createServer, STATUS_CODES, type IncomingMessage, type OutgoingHttpHeaders, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { pipeline } from 'node:stream';
import type { Logger } from 'pino';
import type { Sandbox } from '../../runtimes/types.ts';
import { rawFilesPath } from '../../sandboxd/protocol.ts';
import { errorMessage } from '../../errors.ts';
import { refuseUpgrade } from '../../util/http-upgrade.ts';
import { InternalVerifier, internalHeader } from './internal-auth.ts';
import { refusalHeader } from './remote-channel.ts';

const routePattern = /^\/internal\/v1\/jobs\/(job_[0-9a-z]{26})\/sandboxd(\/v1\/[^?]*)(\?.*)?$/;
/** The sandboxd routes the API relays to (files over REST, the desktop, Jupyter, the terminal); nothing else. */
function isRelayed(path: string): boolean {
  // No dot segments, plain or encoded, and no encoded slashes: what sandboxd is asked for is what was checked here.
  if (/%2f|%5c|\\/i.test(path) || path.split('/').some((segment) => /^(\.|%2e){1,2}$/i.test(segment))) return false;
  return path === rawFilesPath || path === '/v1/terminal' || path.startsWith('/v1/services/desktop/') || path.startsWith('/v1/services/jupyter/');
}
const droppedRequest = new Set(['host', 'connection', 'keep-alive', 'upgrade', 'proxy-authorization', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'authorization', internalHeader]);
const droppedResponse = new Set(['connection', 'keep-alive', 'transfer-encoding']);

export interface InternalServer {
  /** Where it listens (its address, not necessarily what others use to reach it). */
  url: string;
  close(): Promise<void>;
}

export async function startInternalServer(options: { host: string; port: number; secret: Buffer; liveSandbox: (jobId: string) => Sandbox | undefined; logger: Logger }): Promise<InternalServer> {
  const verifier = new InternalVerifier(options.secret);
  const open = new Set<Duplex>();
  const track = (socket: Duplex) => {
    open.add(socket);
    socket.once('close', () => open.delete(socket));
  };

  /** The sandbox and sandboxd path a request is for, or the refusal (status, reason). */
  const route = (request: IncomingMessage): { sandbox: Sandbox; path: string } | { status: number; reason: string } => {
    const match = routePattern.exec(request.url ?? '');
    if (match === null || !isRelayed(match[2]!)) return { status: 404, reason: 'not an internal route' };
    const denied = verifier.check(request.headers[internalHeader], request.method ?? 'GET', request.url ?? '');
    if (denied !== undefined) return { status: 401, reason: denied };
    const sandbox = options.liveSandbox(match[1]!);
    if (sandbox === undefined) return { status: 409, reason: `job ${match[1]} has no sandbox on this worker (it ended, or moved to another worker)` };
    return { sandbox, path: `${match[2]}${match[3] ?? ''}` };
  };

  const server = createServer((request, response) => {
    request.socket.on('error', () => request.socket.destroy());
    if (request.url === '/healthz' && request.method === 'GET') return void response.end('ok\n');
    const target = route(request);
    if ('status' in target) return refuse(response, target.status, target.reason);
    target.sandbox.client
      .forward({ method: request.method ?? 'GET', path: target.path, headers: relayedHeaders(request), ...(request.method === 'GET' || request.method === 'HEAD' ? {} : { body: request }) })
      .then((upstream) => {
        if (response.destroyed) return void upstream.destroy();
        const headers: OutgoingHttpHeaders = {};
        for (const [key, value] of Object.entries(upstream.headers)) if (value !== undefined && !droppedResponse.has(key)) headers[key] = value;
        response.writeHead(upstream.statusCode ?? 502, headers);
        pipeline(upstream, response, () => {
          upstream.destroy();
          response.destroy();
        });
      })
      .catch((error: unknown) => refuse(response, 502, `cannot reach the sandbox: ${errorMessage(error)}`));
  });
  server.on('connection', track);
  server.on('upgrade', (request: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', () => socket.destroy());
    track(socket);
    const target = route(request);
    if ('status' in target) return refuseSocket(socket, target.status, target.reason);
    target.sandbox.client
      .upgrade(target.path, { ...relayedHeaders(request), upgrade: request.headers.upgrade ?? 'websocket' })
      .then(async ({ response, socket: upstream, head: upstreamHead }) => {
        const status = [`HTTP/1.1 ${response.statusCode} ${STATUS_CODES[response.statusCode ?? 502] ?? ''}`];
        for (let i = 0; i < response.rawHeaders.length; i += 2) status.push(`${response.rawHeaders[i]}: ${response.rawHeaders[i + 1]}`);
        if (upstream === undefined) {
          // sandboxd refused the upgrade: its answer goes back as it was, for the API to report.
          const chunks: Buffer[] = [];
          for await (const chunk of response as AsyncIterable<Buffer>) chunks.push(chunk);
          const body = Buffer.concat(chunks);
          const headers = status.filter((line) => !/^(content-length|transfer-encoding|connection):/i.test(line));
          socket.end(Buffer.concat([Buffer.from(`${headers.join('\r\n')}\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n`), body]));
          return;
        }
        upstream.on('error', () => upstream.destroy());
        if (socket.destroyed) return void upstream.destroy();
        socket.write(`${status.join('\r\n')}\r\n\r\n`);
        if (upstreamHead && upstreamHead.length > 0) socket.write(upstreamHead);
        if (head.length > 0) upstream.write(head);
        track(upstream);
        for (const end of [socket, upstream]) {
          end.once('close', () => {
            socket.destroy();
            upstream.destroy();
          });
        }
        upstream.pipe(socket);
        socket.pipe(upstream);
      })
      .catch((error: unknown) => refuseSocket(socket, 502, `cannot reach the sandbox: ${errorMessage(error)}`));
  });
  server.on('clientError', (_error, socket) => socket.destroy());

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', (error) => options.logger.warn({ err: error }, 'internal route: server error'));
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return {
    url: `http://${host}:${address.port}`,
    async close() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const socket of open) socket.destroy();
      await closed;
    },
  };
}

function relayedHeaders(request: IncomingMessage): OutgoingHttpHeaders {
  const headers: OutgoingHttpHeaders = {};
  for (const [key, value] of Object.entries(request.headers)) if (value !== undefined && !droppedRequest.has(key)) headers[key] = value;
  return headers;
}

function refuse(response: ServerResponse, status: number, reason: string): void {
  if (response.headersSent) return void response.destroy();
  response.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', [refusalHeader]: '1' }).end(`${reason}\n`);
}

const refuseSocket = (socket: Duplex, status: number, reason: string) => refuseUpgrade(socket, status, reason, { [refusalHeader]: '1' });
