// People's way into a running job's sandbox: the noVNC desktop (/jobs/:id/desktop/), Jupyter (/jobs/:id/jupyter/)
// and the terminal (/jobs/:id/terminal, a websocket), proxied over sandboxd's unix socket, HTTP and websockets
// alike, behind the same API key as every route (a browser gets it as a cookie from a one-time `?access_token=`
// link). Nothing in the sandbox listens beyond the sandbox: this is the only way in.
import type { IncomingMessage, Server } from 'node:http';
import { STATUS_CODES } from 'node:http';
import type { Duplex, Readable } from 'node:stream';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { conflict, notFound } from '../../errors.ts';
import { isJobId } from '../../util/ids.ts';
import { authenticate, browserPath, tokenCookie } from '../auth.ts';
import type { Sandbox } from '../../runtimes/types.ts';
import type { ApiContext } from '../server.ts';
import { requireJob } from './jobs.ts';

/** Public path segment → the sandboxd service behind it. */
const services = ['desktop', 'jupyter'] as const;
type ServiceName = (typeof services)[number];
const basePathHeader = 'x-workcell-base-path';
/** Request headers that belong to this hop or to us, not to the service. */
const dropped = new Set(['host', 'connection', 'keep-alive', 'upgrade', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'authorization', basePathHeader]);

function forwardedHeaders(headers: IncomingMessage['headers']): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [key, value] of Object.entries(headers)) {
    if (value === undefined || dropped.has(key)) continue;
    if (key === 'cookie') {
      // Our credential stays here; the service's own cookies (Jupyter's _xsrf) pass.
      const kept = String(value).split(';').map((c) => c.trim()).filter((c) => c !== '' && !c.startsWith(`${tokenCookie}=`));
      if (kept.length > 0) out.cookie = kept.join('; ');
      continue;
    }
    out[key] = value;
  }
  return out;
}

/** The URL without its access_token parameter. */
function withoutAccessToken(url: string): string {
  const parsed = new URL(url, 'http://x');
  parsed.searchParams.delete('access_token');
  return `${parsed.pathname}${parsed.search}`;
}

function sandboxPath(service: ServiceName | 'terminal', url: string): string {
  return service === 'terminal' ? `/v1/terminal${new URL(url, 'http://x').search}` : `/v1/services/${service}${url}`;
}

export async function registerServiceRoutes(app: FastifyInstance, context: ApiContext): Promise<void> {
  await app.register(async (scope) => {
    // Bodies go to the service untouched (Jupyter's API takes JSON, uploads take anything).
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser('*', (_request, payload, done) => done(null, payload));

    for (const service of services) {
      const entry = async (request: FastifyRequest<{ Params: { id: string } }>, reply: FastifyReply) => {
        const job = requireJob(context, request);
        const query = new URL(request.url, 'http://x').searchParams;
        const token = query.get('access_token');
        if (token !== null) {
          // A link with the key: keep it in a cookie scoped to this job and show a clean URL.
          reply.header('set-cookie', `${tokenCookie}=${encodeURIComponent(token)}; Path=/jobs/${job.id}/; HttpOnly; SameSite=Strict`);
          return reply.code(303).header('location', withoutAccessToken(request.url)).send();
        }
        if (service === 'desktop') {
          const ws = `jobs/${job.id}/desktop/websockify`;
          return reply.code(302).header('location', `/jobs/${job.id}/desktop/vnc.html?path=${encodeURIComponent(ws)}&autoconnect=1&resize=remote&reconnect=1`).send();
        }
        return proxy(request, reply, service);
      };
      const proxy = async (request: FastifyRequest<{ Params: { id: string } }>, reply: FastifyReply, name: ServiceName) => {
        const job = requireJob(context, request);
        const sandbox = context.jobs.liveSandbox(job.id);
        if (sandbox === undefined) throw conflict(`job ${job.id} is ${job.status}: its ${name} exists only while the job runs`);
        const upstream = await sandbox.client.forward({
          method: request.method,
          path: sandboxPath(name, request.url),
          headers: { ...forwardedHeaders(request.headers), [basePathHeader]: `/jobs/${job.id}/${name}/` },
          ...(request.method === 'GET' || request.method === 'HEAD' ? {} : { body: request.body as Readable }),
        });
        reply.hijack();
        const headers = { ...upstream.headers };
        delete headers.connection;
        delete headers['keep-alive'];
        delete headers['transfer-encoding'];
        reply.raw.writeHead(upstream.statusCode ?? 502, headers);
        upstream.pipe(reply.raw);
      };
      scope.get(`/jobs/:id/${service}`, { schema: { hide: true } }, (request: FastifyRequest<{ Params: { id: string } }>, reply) =>
        reply.code(301).header('location', `/jobs/${request.params.id}/${service}/${new URL(request.url, 'http://x').search}`).send(),
      );
      scope.get(`/jobs/:id/${service}/`, { schema: { hide: true } }, entry);
      scope.all(`/jobs/:id/${service}/*`, { schema: { hide: true } }, (request: FastifyRequest<{ Params: { id: string } }>, reply) =>
        new URL(request.url, 'http://x').searchParams.has('access_token') ? entry(request, reply) : proxy(request, reply, service),
      );
    }
  });
}

/**
 * Websockets (noVNC's, Jupyter's kernel channels, the terminal) arrive as HTTP upgrades on the raw server, where
 * Fastify's hooks do not run: authenticate, check the owner, and splice the socket onto one opened to sandboxd.
 */
export function attachUpgradeProxy(server: Server, context: ApiContext): void {
  server.on('upgrade', (request: IncomingMessage, socket: Duplex, head: Buffer) => {
    const refuse = (status: number, message: string) => socket.end(`HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\n${message}\n`);
    const url = request.url ?? '/';
    const match = browserPath.exec(url);
    if (!match) return refuse(404, 'websockets are served under /jobs/<id>/desktop/, /jobs/<id>/jupyter/ and /jobs/<id>/terminal');
    const [, jobId, kind] = match as unknown as [string, string, ServiceName | 'terminal'];
    const auth = authenticate(context.jobs.store, { headers: request.headers, url });
    if (!auth.ok) return refuse(401, auth.reason);
    let sandbox: Sandbox | undefined;
    try {
      if (!isJobId(jobId)) throw notFound('no such job');
      const job = context.jobs.get(jobId, auth.owner);
      sandbox = context.jobs.liveSandbox(job.id);
      if (sandbox === undefined) return refuse(409, `job ${job.id} is ${job.status}: it has no sandbox to connect to`);
    } catch {
      return refuse(404, `no job with id ${JSON.stringify(jobId)}`);
    }
    const headers = { ...forwardedHeaders(request.headers), upgrade: request.headers.upgrade ?? 'websocket', [basePathHeader]: `/jobs/${jobId}/${kind}/` };
    sandbox.client.upgrade(sandboxPath(kind, withoutAccessToken(url)), headers).then(
      ({ response, socket: upstream, head: upstreamHead }) => {
        if (upstream === undefined) {
          response.resume();
          return refuse(response.statusCode ?? 502, `the sandbox refused the connection (${response.statusCode})`);
        }
        const lines = [`HTTP/1.1 101 ${STATUS_CODES[101]}`];
        for (let i = 0; i < response.rawHeaders.length; i += 2) lines.push(`${response.rawHeaders[i]}: ${response.rawHeaders[i + 1]}`);
        socket.write(`${lines.join('\r\n')}\r\n\r\n`);
        if (upstreamHead && upstreamHead.length > 0) socket.write(upstreamHead);
        if (head.length > 0) upstream.write(head);
        const closeBoth = () => {
          socket.destroy();
          upstream.destroy();
        };
        for (const end of [socket, upstream]) {
          end.on('error', closeBoth);
          end.on('close', closeBoth);
        }
        upstream.pipe(socket);
        socket.pipe(upstream);
      },
      (error: unknown) => refuse(502, `cannot reach the sandbox: ${error instanceof Error ? error.message : String(error)}`),
    );
  });
}
