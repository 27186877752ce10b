// API keys (DESIGN.md §2). With no key in the store the server is in local mode: it listens on loopback only and
// asks for nothing. Once a key exists, every route but /healthz needs one, sent as `Authorization: Bearer <key>`
// (or, for browser pages and their websockets, the `workcell_token` cookie set by a `?access_token=` link), and a
// key sees only the jobs it created. Keys are stored hashed (job-store.ts).
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { JobStore } from '../jobs/job-store.ts';
import { problem, sendProblem } from './problem.ts';

declare module 'fastify' {
  interface FastifyRequest {
    /** The caller's API key id; undefined in local mode (no keys), where every job is visible. */
    owner: string | undefined;
  }
}

export const tokenCookie = 'workcell_token';
/** Where a browser may bring the key in the URL (a link to a job's desktop, Jupyter or terminal): groups job id, kind. */
export const browserPath = /^\/jobs\/(job_[0-9a-z]{26})\/(desktop|jupyter|terminal)(\/|$|\?)/;
const open = new Set(['/healthz']);

/** The token a request carries: the Authorization header, else the cookie, else (browser entry points only) `?access_token=`. */
export function requestToken(request: Pick<FastifyRequest, 'headers'> & { url?: string }): string | undefined {
  if (request.url !== undefined && browserPath.test(request.url)) {
    const query = new URL(request.url, 'http://x').searchParams.get('access_token');
    if (query !== null) return query;
  }
  const header = request.headers.authorization;
  if (typeof header === 'string') {
    const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
    return match?.[1];
  }
  const cookies = request.headers.cookie;
  if (typeof cookies !== 'string') return undefined;
  for (const part of cookies.split(';')) {
    const [name, ...value] = part.trim().split('=');
    if (name === tokenCookie) return decodeURIComponent(value.join('='));
  }
  return undefined;
}

/** Resolves a request's owner; undefined owner with `ok: true` means local mode. */
export function authenticate(store: JobStore, request: Pick<FastifyRequest, 'headers'> & { url?: string }): { ok: true; owner: string | undefined } | { ok: false; reason: string } {
  if (!store.hasApiKeys()) return { ok: true, owner: undefined };
  const token = requestToken(request);
  if (token === undefined) return { ok: false, reason: 'this server needs an API key: send Authorization: Bearer <key> (workcell keys create makes one; the CLI reads WORKCELL_API_KEY)' };
  const owner = store.verifyApiKey(token);
  if (owner === undefined) return { ok: false, reason: 'the API key is not valid (unknown, malformed or revoked)' };
  return { ok: true, owner };
}

export function registerAuth(app: FastifyInstance, store: JobStore): void {
  app.decorateRequest('owner', undefined);
  app.addHook('onRequest', async (request: FastifyRequest, reply: FastifyReply) => {
    if (open.has(request.url.split('?')[0]!)) return;
    const result = authenticate(store, request);
    if (!result.ok) {
      reply.header('www-authenticate', 'Bearer realm="workcell"');
      return sendProblem(reply, problem(401, 'unauthorized', result.reason, { instance: request.url.split('?')[0]! }));
    }
    request.owner = result.owner;
  });
}
