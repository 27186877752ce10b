// Credentials a browser carries instead of an API key. A browser cannot send an Authorization header when a person
// opens a link or a page opens a websocket, and a key in a URL would land in histories and proxy logs for good. So
// a client that holds a key asks for a link (POST /jobs/:id/links): it carries a link token that is good for one
// job, one service and two minutes, once. The page at the end of the link trades it for a session cookie on that
// job's own host (origins.ts), good for that job only and for hours, and checked against its key on every use: a
// revoked key ends its sessions at once.
//
// Tokens are HMAC-SHA256-signed JSON (the secret lives in the store, so every API replica accepts every token).
// A library (JWT) would add algorithm negotiation and claims this needs none of; this is the whole format.
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

export const browserServices = ['desktop', 'jupyter', 'terminal'] as const;
export type BrowserService = (typeof browserServices)[number];

/** The query parameter that carries a link token (not `token`: Jupyter has its own). */
export const linkParameter = 'workcell_link';
export const linkTtlMs = 120_000;
export const sessionTtlMs = 8 * 3600_000;

interface Claims {
  /** link: trade for a session; session: the cookie. */
  kind: 'link' | 'session';
  job: string;
  /** The API key id the token acts for; null on a server without keys. */
  owner: string | null;
  /** Links only: what the link opens. */
  service?: BrowserService;
  /** Expiry, ms since the epoch. */
  expires: number;
  nonce: string;
}

export type VerifiedToken = Omit<Claims, 'nonce'>;

export class BrowserTokens {
  readonly #secret: Buffer;
  /** Nonces of links already traded, until they expire: a link opens once (per API replica). */
  readonly #usedLinks = new Map<string, number>();

  constructor(secret: Buffer) {
    this.#secret = secret;
  }

  link(job: string, owner: string | null, service: BrowserService, now = Date.now()): { token: string; expires: number } {
    const expires = now + linkTtlMs;
    return { token: this.#sign({ kind: 'link', job, owner, service, expires, nonce: randomBytes(12).toString('base64url') }), expires };
  }

  session(job: string, owner: string | null, now = Date.now()): { token: string; expires: number } {
    const expires = now + sessionTtlMs;
    return { token: this.#sign({ kind: 'session', job, owner, expires, nonce: randomBytes(12).toString('base64url') }), expires };
  }

  /** The claims of a valid, unexpired token of that kind; undefined for anything else (never throws). */
  verify(token: string, kind: Claims['kind'], now = Date.now()): VerifiedToken | undefined {
    const claims = this.#open(token);
    if (claims === undefined || claims.kind !== kind || claims.expires <= now) return undefined;
    const { nonce: _nonce, ...rest } = claims;
    return rest;
  }

  /** Verifies a link and marks it used: a second trade of the same link fails. */
  redeemLink(token: string, now = Date.now()): VerifiedToken | undefined {
    const claims = this.#open(token);
    if (claims === undefined || claims.kind !== 'link' || claims.expires <= now || this.#usedLinks.has(claims.nonce)) return undefined;
    for (const [nonce, expires] of this.#usedLinks) if (expires <= now) this.#usedLinks.delete(nonce);
    this.#usedLinks.set(claims.nonce, claims.expires);
    const { nonce: _nonce, ...rest } = claims;
    return rest;
  }

  #sign(claims: Claims): string {
    const body = Buffer.from(JSON.stringify(claims)).toString('base64url');
    return `${body}.${this.#mac(body).toString('base64url')}`;
  }

  #open(token: string): Claims | undefined {
    if (typeof token !== 'string' || token.length > 1024) return undefined;
    const [body, mac, extra] = token.split('.');
    if (body === undefined || mac === undefined || extra !== undefined) return undefined;
    const expected = this.#mac(body);
    const given = Buffer.from(mac, 'base64url');
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) return undefined;
    try {
      const claims = JSON.parse(Buffer.from(body, 'base64url').toString('utf8')) as Claims;
      return typeof claims.job === 'string' && typeof claims.expires === 'number' && typeof claims.nonce === 'string' ? claims : undefined;
    } catch {
      return undefined;
    }
  }

  #mac(body: string): Buffer {
    return createHmac('sha256', this.#secret).update(body).digest();
  }
}
