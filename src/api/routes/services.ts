// People's way into a running job's sandbox: the noVNC desktop and Jupyter (pages, their HTTP API and websockets)
// and the terminal (a websocket), proxied over sandboxd's socket. Nothing in the sandbox listens beyond the
// sandbox: this is the only way in.
//
// Pages come from inside the sandbox, so they are served on the job's own origin (origins.ts), never the API's:
// `GET /jobs/<id>/desktop/` on the API redirects there. A browser gets in with a one-time link (POST
// /jobs/<id>/links) that the job's host trades for a session cookie (browser-tokens.ts); what the sandbox answers
// may not set cookies, and may be framed only by the API's pages. The terminal is no page: it stays on the API's
// origin, opened with the key in the Authorization header or a terminal link.
//
// Every socket gets its error listener first and nothing here throws out of a handler: a client that resets a
// connection at any moment, or sends any header, costs its own request and nothing else.
import type { IncomingMessage, Server } from 'node:http';
import { STATUS_CODES } from 'node:http';
import type { Duplex, Readable } from 'node:stream';
import { pipeline } from 'node:stream';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { conflict, errorMessage, notFound, WorkcellError } from '../../errors.ts';
import type { Job } from '../../store/types.ts';
import { refuseUpgrade } from '../../util/http-upgrade.ts';
import { isJobId } from '../../util/ids.ts';
import { sessionCookie } from '../auth.ts';
import { linkParameter, linkTtlMs, sessionTtlMs, type BrowserService } from '../browser-tokens.ts';
import { isLoopbackName } from '../origins.ts';
import { problemResponses, response } from '../openapi.ts';
import { jobIdParams, linkRequest, linkResponse } from '../schemas.ts';
import type { ApiContext, ZodApp } from '../server.ts';
import { baseUrl, requireJob } from './jobs.ts';

/** Public path segment → the sandboxd service behind it. */
const pageServices = ['desktop', 'jupyter'] as const;
type PageService = (typeof pageServices)[number];
const basePathHeader = 'x-workcell-base-path';
/** Request headers that belong to this hop or to us, not to the service. */
const dropped = new Set(['host', 'connection', 'keep-alive', 'upgrade', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'authorization', basePathHeader]);
/** Response headers that do not pass: hop-by-hop ones, and cookies (a sandbox may not set any, not even for its own host). */
const droppedResponse = new Set(['connection', 'keep-alive', 'transfer-encoding', 'set-cookie', 'set-cookie2']);
const websocketPath = /^\/jobs\/(job_[0-9a-z]{26})\/(desktop|jupyter|terminal)(\/[^?]*)?(\?.*)?$/;

function forwardedHeaders(headers: IncomingMessage['headers']): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [key, value] of Object.entries(headers)) {
    if (value === undefined || dropped.has(key)) continue;
    if (key === 'cookie') {
      // Our session stays here; the service's own cookies pass.
      const kept = String(value).split(';').map((c) => c.trim()).filter((c) => c !== '' && !c.startsWith(`${sessionCookie}=`));
      if (kept.length > 0) out.cookie = kept.join('; ');
      continue;
    }
    out[key] = value;
  }
  return out;
}

/** The URL without the link parameter; never throws. */
function withoutLink(url: string): string {
  const query = url.indexOf('?');
  if (query === -1) return url;
  const params = new URLSearchParams(url.slice(query + 1));
  params.delete(linkParameter);
  const rest = params.toString();
  return `${url.slice(0, query)}${rest === '' ? '' : `?${rest}`}`;
}

function linkToken(url: string): string | undefined {
  const query = url.indexOf('?');
  return query === -1 ? undefined : (new URLSearchParams(url.slice(query + 1)).get(linkParameter) ?? undefined);
}

function sandboxPath(service: PageService | 'terminal', url: string): string {
  return service === 'terminal' ? `/v1/terminal${url.includes('?') ? url.slice(url.indexOf('?')) : ''}` : `/v1/services/${service}${url}`;
}

/** Origins that may frame a job's pages: the API's own (the web UI embeds the desktop). */
function frameAncestors(context: ApiContext): string {
  const origins = ["'self'", 'http://localhost:*', 'http://127.0.0.1:*', 'http://[::1]:*'];
  if (context.config.publicUrl !== undefined) origins.push(new URL(context.config.publicUrl).origin);
  for (const host of context.config.allowedHosts) if (!isLoopbackName(host)) origins.push(`https://${host}:*`, `http://${host}:*`);
  return `frame-ancestors ${origins.join(' ')}`;
}

/** A one-time browser link to a job's service, on the job's own origin (desktop, Jupyter) or the API's (terminal). */
export function browserLink(context: ApiContext, request: FastifyRequest, job: Job, service: BrowserService, path?: string): { url: string; expires_at: string } {
  const { token, expires } = context.auth.tokens.link(job.id, request.owner ?? null, service);
  const expires_at = new Date(expires).toISOString();
  if (service === 'terminal') {
    const base = baseUrl(context, request).replace(/^http/, 'ws');
    return { url: `${base}/jobs/${job.id}/terminal?${linkParameter}=${token}`, expires_at };
  }
  const origin = context.auth.hosts.sandboxOrigin(job.id, request.headers.host);
  if ('error' in origin) throw conflict(origin.error);
  const target = path ?? `/jobs/${job.id}/${service}/`;
  return { url: `${origin.origin}${target}${target.includes('?') ? '&' : '?'}${linkParameter}=${token}`, expires_at };
}

export function registerServiceRoutes(app: ZodApp, context: ApiContext): void {
  app.post(
    '/jobs/:id/links',
    {
      schema: {
        operationId: 'createLink',
        tags: ['services'],
        summary: "A browser link to a job's desktop, Jupyter or terminal",
        description:
          "Desktop and Jupyter pages are served on the job's own origin (WORKCELL_SANDBOX_URL, by default http://job-<id>.localhost:<port>), never the API's. " +
          'The link opens once, within two minutes; the page then holds a session cookie for that job alone, which ends when the key is revoked. The job must be running when the link is used.',
        params: jobIdParams,
        body: linkRequest,
        response: {
          201: response('The link', linkResponse),
          ...problemResponses({
            400: 'service is not desktop, jupyter or terminal',
            404: "No job with this id (or not one of this key's)",
            409: "The job's own origin cannot be made for this request's Host (set WORKCELL_SANDBOX_URL)",
          }),
        },
      },
    },
    async (request, reply) => reply.code(201).send(browserLink(context, request, await requireJob(context, request), request.body.service)),
  );

  app.register(async (scope) => {
    // Bodies go to the service untouched (Jupyter's API takes JSON, uploads take anything).
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser('*', (_request, payload, done) => done(null, payload));
    for (const service of pageServices) {
      const handle = (request: FastifyRequest<{ Params: { id: string } }>, reply: FastifyReply) => servicePage(context, request, reply, service);
      const options = { schema: { hide: true }, config: { hosts: 'both' as const } };
      scope.all(`/jobs/:id/${service}`, options, handle);
      scope.all(`/jobs/:id/${service}/`, options, handle);
      scope.all(`/jobs/:id/${service}/*`, options, handle);
    }
  });
}

async function servicePage(context: ApiContext, request: FastifyRequest<{ Params: { id: string } }>, reply: FastifyReply, service: PageService): Promise<FastifyReply | undefined> {
  const path = request.url.split('?')[0]!;
  if (request.hostClass.kind !== 'sandbox') {
    // On the API's host: send the browser to the job's own origin, with a link when the server has keys.
    if (request.method !== 'GET' && request.method !== 'HEAD') throw notFound(`${service} pages are served on the job's own origin: POST /jobs/<id>/links makes a link`);
    const job = await requireJob(context, request);
    const target = withoutLink(request.url.startsWith(`/jobs/${job.id}/${service}/`) ? request.url : `/jobs/${job.id}/${service}/`);
    return reply.code(303).header('location', browserLink(context, request, job, service, target).url).send();
  }
  if (request.params.id !== request.hostClass.jobId) throw notFound(`this host serves job ${request.hostClass.jobId} only`);
  if (path === `/jobs/${request.params.id}/${service}`) return reply.code(301).header('location', `${path}/${request.url.slice(path.length)}`).send();
  const token = linkToken(request.url);
  if (token !== undefined) {
    // A link: trade it for a session cookie on this host, and show the clean URL.
    const claims = context.auth.tokens.redeemLink(token);
    const ownerLive = claims?.owner === null || (claims?.owner !== undefined && (await context.auth.isKeyLive(claims.owner)));
    if (claims === undefined || claims.job !== request.hostClass.jobId || claims.service !== service || !ownerLive) {
      throw new WorkcellError('unauthorized', `this link is expired, used or not for this page: links open once, within ${linkTtlMs / 1000} s; ask for a new one (POST /jobs/<id>/links, or workcell open <id> ${service})`);
    }
    const session = context.auth.tokens.session(claims.job, claims.owner);
    const origin = context.auth.hosts.sandboxOrigin(claims.job, request.headers.host);
    const secure = 'secure' in origin && origin.secure ? '; Secure' : '';
    reply.header('set-cookie', `${sessionCookie}=${session.token}; Path=/; Max-Age=${sessionTtlMs / 1000}; HttpOnly; SameSite=Lax${secure}`);
    reply.header('referrer-policy', 'no-referrer');
    return reply.code(303).header('location', withoutLink(request.url)).send();
  }
  const job = await requireJob(context, request);
  if (service === 'desktop' && path === `/jobs/${job.id}/desktop/`) {
    const ws = `jobs/${job.id}/desktop/websockify`;
    return reply.code(302).header('location', `/jobs/${job.id}/desktop/vnc.html?path=${encodeURIComponent(ws)}&autoconnect=1&resize=remote&reconnect=1`).send();
  }
  const channel = context.jobs.sandboxChannel(job);
  if (channel === undefined) throw conflict(`job ${job.id} is ${job.status}: its ${service} exists only while the job runs`);
  const upstream = await channel.forward({
    method: request.method,
    path: sandboxPath(service, request.url),
    headers: { ...forwardedHeaders(request.headers), [basePathHeader]: `/jobs/${job.id}/${service}/` },
    ...(request.method === 'GET' || request.method === 'HEAD' ? {} : { body: request.body as Readable }),
  }).catch((error: unknown) => {
    // A body the person cut off ends the forwarded request with it: their hang-up, not the server's failure.
    if (request.raw.destroyed) return undefined;
    throw error;
  });
  reply.hijack();
  if (upstream === undefined) return undefined;
  const headers: Record<string, string | string[]> = {};
  for (const [key, value] of Object.entries(upstream.headers)) if (value !== undefined && !droppedResponse.has(key)) headers[key] = value;
  // The service's own policy stays, and ours is added to it (browsers enforce both).
  const csp = headers['content-security-policy'];
  headers['content-security-policy'] = [...(csp === undefined ? [] : Array.isArray(csp) ? csp : [csp]), frameAncestors(context)];
  const raw = reply.raw;
  if (raw.destroyed) {
    // The person hung up while the sandbox was answering.
    upstream.destroy();
    return undefined;
  }
  const remove = context.connections.add(request.owner, () => raw.destroy());
  raw.once('close', remove);
  raw.writeHead(upstream.statusCode ?? 502, headers);
  pipeline(upstream, raw, () => {
    upstream.destroy();
    raw.destroy();
  });
  return undefined;
}

/**
 * Websockets (noVNC's, Jupyter's kernel channels, the terminal) arrive as HTTP upgrades on the raw server, where
 * Fastify's hooks do not run: the same host, origin and key checks happen here, then the socket is spliced onto one
 * opened to sandboxd.
 */
export function attachUpgradeProxy(server: Server, context: ApiContext): { closeAll(): void } {
  // Upgraded sockets leave the HTTP server's bookkeeping: without this, shutting down would wait for every websocket.
  const open = new Set<Duplex>();
  server.on('upgrade', (request: IncomingMessage, socket: Duplex, head: Buffer) => {
    // First: a client that resets the connection must cost nothing but this socket.
    socket.on('error', () => socket.destroy());
    open.add(socket);
    socket.once('close', () => open.delete(socket));
    upgrade(context, request, socket, head).catch((error: unknown) => {
      const status = error instanceof WorkcellError ? error.httpStatus : 502;
      if (status >= 500) context.logger.warn({ err: error, url: request.url?.slice(0, 200) }, 'websocket proxy failed');
      refuse(socket, status, error instanceof WorkcellError ? error.message : `cannot reach the sandbox: ${errorMessage(error)}`);
    });
  });
  return {
    closeAll() {
      for (const socket of open) socket.destroy();
    },
  };
}

const refuse = (socket: Duplex, status: number, message: string) => refuseUpgrade(socket, status, message);

async function upgrade(context: ApiContext, request: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
  const { auth } = context;
  const hostClass = auth.hosts.classify(request.headers.host);
  if (hostClass.kind === 'refused') return refuse(socket, 403, hostClass.reason);
  const crossOrigin = auth.hosts.checkOrigin(request.headers, request.method ?? 'GET', hostClass);
  if (crossOrigin !== undefined) return refuse(socket, 403, crossOrigin);
  const url = request.url ?? '/';
  const match = websocketPath.exec(url);
  const kind = match?.[2] as PageService | 'terminal' | undefined;
  const jobId = match?.[1];
  // Pages' websockets on the job's host, the terminal on the API's.
  const here = hostClass.kind === 'sandbox' ? kind !== 'terminal' && jobId === hostClass.jobId : kind === 'terminal' && match?.[3] === undefined;
  if (jobId === undefined || kind === undefined || !here || !isJobId(jobId)) {
    return refuse(socket, 404, "websockets are served under /jobs/<id>/terminal (on the API's host) and /jobs/<id>/desktop/, /jobs/<id>/jupyter/ (on the job's own host)");
  }
  let owner: string | undefined;
  const token = kind === 'terminal' && request.headers.authorization === undefined ? linkToken(url) : undefined;
  if (token !== undefined) {
    const claims = auth.tokens.redeemLink(token);
    if (claims === undefined || claims.job !== jobId || claims.service !== 'terminal' || (claims.owner !== null && !(await auth.isKeyLive(claims.owner)))) {
      return refuse(socket, 401, 'this terminal link is expired, used or for another job: ask for a new one (POST /jobs/<id>/links with service terminal)');
    }
    owner = claims.owner ?? undefined;
    if (owner === undefined && !(await auth.keyless())) return refuse(socket, 401, 'this terminal link was made before the server had keys: ask for a new one');
  } else {
    const result = await auth.authenticate(request.headers, hostClass);
    if (!result.ok) return refuse(socket, result.status, result.reason);
    owner = result.owner;
  }
  let job: Job;
  try {
    job = await context.jobs.get(jobId, owner);
  } catch {
    return refuse(socket, 404, `no job with id ${JSON.stringify(jobId)}`);
  }
  const channel = context.jobs.sandboxChannel(job);
  if (channel === undefined) return refuse(socket, 409, `job ${job.id} is ${job.status}: it has no sandbox to connect to`);
  const headers = { ...forwardedHeaders(request.headers), upgrade: request.headers.upgrade ?? 'websocket', [basePathHeader]: `/jobs/${jobId}/${kind}/` };
  const { response, socket: upstream, head: upstreamHead } = await channel.upgrade(sandboxPath(kind, withoutLink(url)), headers);
  if (upstream === undefined) {
    response.on('error', () => undefined);
    response.resume();
    return refuse(socket, response.statusCode ?? 502, `the sandbox refused the connection (${response.statusCode})`);
  }
  upstream.on('error', () => upstream.destroy());
  if (socket.destroyed) {
    upstream.destroy();
    return;
  }
  const lines = [`HTTP/1.1 101 ${STATUS_CODES[101]}`];
  for (let i = 0; i < response.rawHeaders.length; i += 2) {
    if (droppedResponse.has(response.rawHeaders[i]!.toLowerCase()) && response.rawHeaders[i]!.toLowerCase() !== 'connection') continue;
    lines.push(`${response.rawHeaders[i]}: ${response.rawHeaders[i + 1]}`);
  }
  socket.write(`${lines.join('\r\n')}\r\n\r\n`);
  if (upstreamHead && upstreamHead.length > 0) socket.write(upstreamHead);
  if (head.length > 0) upstream.write(head);
  const closeBoth = () => {
    socket.destroy();
    upstream.destroy();
  };
  const remove = context.connections.add(owner, closeBoth);
  for (const end of [socket, upstream]) end.once('close', closeBoth);
  socket.once('close', remove);
  upstream.pipe(socket);
  socket.pipe(upstream);
}
