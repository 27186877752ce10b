// Who is calling (DESIGN.md §2). With no key in the store the server is in local mode: it listens on loopback only
// and asks for nothing. Once a key exists, every route but /healthz needs one, and a key sees only the jobs it
// created. An API key travels only in `Authorization: Bearer <key>`, never in a URL or a cookie. Browsers get the
// narrower credentials of browser-tokens.ts: a session cookie on a job's own host (its desktop and Jupyter pages),
// and one-time links. Keys are stored hashed (store/api-keys.ts). Nothing here may throw on any header value.
import { parseCookie } from 'cookie';
import type { IncomingHttpHeaders } from 'node:http';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { KeyStore } from '../store/types.ts';
import { linkParameter, type BrowserTokens } from './browser-tokens.ts';
import type { HostClass, HostPolicy } from './origins.ts';
import { problem, sendProblem } from './problem.ts';

declare module 'fastify' {
  interface FastifyRequest {
    /** The caller's API key id; undefined in local mode (no keys), where every job is visible. */
    owner: string | undefined;
    hostClass: HostClass;
  }
  interface FastifyContextConfig {
    /** Which hosts serve the route: the API's (the default), a job's own host (its sandbox pages), or both. */
    hosts?: 'api' | 'sandbox' | 'both';
  }
}

/** The cookie that holds a browser's session on a job's host (browser-tokens.ts). */
export const sessionCookie = 'workcell_session';
/** Routes every caller may reach, keys or not, whatever the Host (liveness probes name the pod's address). */
const open = new Set(['/healthz']);

export type AuthResult = { ok: true; owner: string | undefined } | { ok: false; status: 401 | 403; reason: string };

/** The cookies of a request by name; never throws (a malformed cookie is skipped). */
export function requestCookies(headers: IncomingHttpHeaders): Record<string, string | undefined> {
  const header = headers.cookie;
  if (typeof header !== 'string' || header.length > 16_384) return {};
  try {
    return parseCookie(header);
  } catch {
    return {};
  }
}

export class Authenticator {
  readonly #keys: KeyStore;
  readonly tokens: BrowserTokens;
  readonly hosts: HostPolicy;

  constructor(keys: KeyStore, tokens: BrowserTokens, hosts: HostPolicy) {
    this.#keys = keys;
    this.tokens = tokens;
    this.hosts = hosts;
  }

  /** Whether the server runs without keys (local mode). */
  async keyless(): Promise<boolean> {
    return !(await this.#keys.hasKeys());
  }

  isKeyLive(id: string): Promise<boolean> {
    return this.#keys.isLive(id);
  }

  /**
   * The caller of a request that reached `hostClass`: an API key in the Authorization header anywhere, or on a job's
   * host the session cookie of that job.
   */
  async authenticate(headers: IncomingHttpHeaders, hostClass: HostClass): Promise<AuthResult> {
    if (await this.keyless()) return { ok: true, owner: undefined };
    const header = headers.authorization;
    if (typeof header === 'string') {
      const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
      const owner = match === null ? undefined : await this.#keys.verify(match[1]!);
      if (owner === undefined) return { ok: false, status: 401, reason: 'the API key is not valid (unknown, malformed or revoked); send Authorization: Bearer <key>' };
      return { ok: true, owner };
    }
    if (hostClass.kind === 'sandbox') {
      const session = requestCookies(headers)[sessionCookie];
      const claims = session === undefined ? undefined : this.tokens.verify(session, 'session');
      if (claims !== undefined && claims.job === hostClass.jobId && claims.owner !== null && (await this.#keys.isLive(claims.owner))) return { ok: true, owner: claims.owner };
      return { ok: false, status: 401, reason: "this page needs a link from the job's owner: POST /jobs/<id>/links (or `workcell open <id> desktop`) makes one; links open once, within two minutes" };
    }
    return { ok: false, status: 401, reason: 'this server needs an API key: send Authorization: Bearer <key> (workcell keys create makes one; the CLI reads WORKCELL_API_KEY)' };
  }
}

export function registerAuth(app: FastifyInstance, auth: Authenticator): void {
  app.decorateRequest('owner', undefined);
  // Set by the hook below before any handler runs (Fastify decorates requests with null, not objects).
  app.decorateRequest('hostClass', null as never);
  app.addHook('onRequest', async (request: FastifyRequest, reply: FastifyReply) => {
    const path = request.url.split('?')[0]!;
    const instance = path.slice(0, 500);
    if (open.has(path)) return;
    const hostClass = auth.hosts.classify(request.headers.host);
    if (hostClass.kind === 'refused') return sendProblem(reply, problem(403, 'forbidden', hostClass.reason, { instance }));
    request.hostClass = hostClass;
    const crossOrigin = auth.hosts.checkOrigin(request.headers, request.method, hostClass);
    if (crossOrigin !== undefined) return sendProblem(reply, problem(403, 'forbidden', crossOrigin, { instance }));
    // A job's host serves that job's pages and nothing else; the API's hosts never serve sandbox pages.
    const hosts = request.routeOptions.config.hosts ?? 'api';
    if (hosts !== 'both' && hosts !== hostClass.kind) return sendProblem(reply, problem(404, 'not_found', `no route ${request.method} ${instance} on this host`));
    // A link (?token=) is traded for a session by the route itself, before there is a session to check.
    if (hostClass.kind === 'sandbox' && new URLSearchParams(request.url.slice(path.length + 1)).has(linkParameter)) return;
    const result = await auth.authenticate(request.headers, hostClass);
    if (!result.ok) {
      reply.header('www-authenticate', 'Bearer realm="workcell"');
      return sendProblem(reply, problem(result.status, result.status === 401 ? 'unauthorized' : 'forbidden', result.reason, { instance }));
    }
    request.owner = result.owner;
  });
}
