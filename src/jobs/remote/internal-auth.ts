// The internal route's credentials: an API replica signs each request it relays to a worker (method, path, time and
// a nonce) with a secret every process sharing the store has (KeyStore.serverSecret('internal-route'), made once
// in the database), and the worker checks the signature, the time (within a minute either way) and that the nonce
// was not used before. A person's key never travels to the worker: the replica checked it, and the worker relays
// only to the sandboxd routes the API's own routes use.
//
// Where a worker answers is part of its id (`<host>:<pid>:<random>@<internal URL>`), which the store keeps as the
// job's `locked_by` while the worker holds the job: whoever reads the job knows where its sandbox is.
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

export const internalHeader = 'x-workcell-internal';
export const internalSecretName = 'internal-route';
const maxSkewMs = 60_000;

/** The worker's id with the URL where its internal route answers (when it has one). */
export function workerIdWithAddress(base: string, internalUrl: string | undefined): string {
  return internalUrl === undefined ? base : `${base}@${internalUrl.replace(/\/$/, '')}`;
}

/** The internal URL in a worker's id, or undefined when it has none (a worker with no internal route). */
export function workerAddress(workerId: string | null): URL | undefined {
  const at = workerId?.indexOf('@') ?? -1;
  if (workerId === null || at === -1) return undefined;
  try {
    const url = new URL(workerId.slice(at + 1));
    return url.protocol === 'http:' || url.protocol === 'https:' ? url : undefined;
  } catch {
    return undefined;
  }
}

function mac(secret: Buffer, time: string, nonce: string, method: string, path: string): Buffer {
  return createHmac('sha256', secret).update(`${time}\n${nonce}\n${method.toUpperCase()}\n${path}`).digest();
}

/** The header value that authorizes one relayed request. */
export function signInternal(secret: Buffer, method: string, path: string, now = Date.now()): string {
  const time = String(now);
  const nonce = randomBytes(12).toString('base64url');
  return `${time}.${nonce}.${mac(secret, time, nonce, method, path).toString('base64url')}`;
}

/** Checks signatures on a worker; remembers the nonces it accepted for as long as their signatures are valid. */
export class InternalVerifier {
  readonly #secret: Buffer;
  readonly #seen = new Map<string, number>();

  constructor(secret: Buffer) {
    this.#secret = secret;
  }

  /** Undefined when the request is authorized; else why not. */
  check(header: string | string[] | undefined, method: string, path: string, now = Date.now()): string | undefined {
    if (typeof header !== 'string') return `missing ${internalHeader}`;
    const [time, nonce, signature, extra] = header.split('.');
    if (time === undefined || nonce === undefined || signature === undefined || extra !== undefined || !/^\d{1,15}$/.test(time) || !/^[\w-]{16}$/.test(nonce)) return `malformed ${internalHeader}`;
    if (Math.abs(now - Number(time)) > maxSkewMs) return `${internalHeader} is too old or from the future (are the hosts' clocks in step?)`;
    const expected = mac(this.#secret, time, nonce, method, path);
    const given = Buffer.from(signature, 'base64url');
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) return `bad ${internalHeader} signature`;
    for (const [seen, at] of this.#seen) {
      if (now - at <= 2 * maxSkewMs) break; // in insertion order: the rest are newer
      this.#seen.delete(seen);
    }
    if (this.#seen.has(nonce)) return `${internalHeader} was used before`;
    this.#seen.set(nonce, now);
    return undefined;
  }
}
