// Where a job's lifecycle hooks may go. A callback_url is the client's input and the server POSTs to it, so it must
// not become a way into the server's own network (SSRF): the same rules as the sandboxes' egress apply
// (runtimes/network/). Only http and https, no user or password in the URL, no fragment; the host is resolved by the
// bounded c-ares resolver (never dns.lookup), every address is classified, and private, loopback, link-local, CGNAT,
// unique-local and similar addresses are refused unless the operator lists them exactly in
// WORKCELL_CALLBACK_ALLOW_PRIVATE (the IP with its port, or the name with its port, as in WORKCELL_NETWORK_ALLOW).
// The check runs when the job is scheduled (a clear 400) and again at every delivery, whose connection goes to the
// address checked then (the name is resolved once per attempt), so DNS that changes in between gains nothing.
// The operator's own WORKCELL_CALLBACK_URL is trusted: it may name a private address.
// This module never connects anywhere; webhook-sender.ts does, to the address it returns.
import { errorMessage, invalidRequest } from '../../errors.ts';
import { addressVerdict, parseAllowList, parseDestination, type AllowRule, type Destination } from '../../runtimes/network/allow-list.ts';
import { createDnsResolver, type DnsResolver } from '../../runtimes/network/dns-resolver.ts';
import { classifyIp, formatIp, type IpAddress } from '../../runtimes/network/ip-address.ts';

export const maxCallbackUrlLength = 2048;

export interface CheckedCallback {
  url: URL;
  destination: Destination;
}

/** What a URL must look like to be a hook's target; throws invalid_request saying what to change. */
export function parseCallbackUrl(text: string, field = 'callback_url'): CheckedCallback {
  if (text.length > maxCallbackUrlLength) throw invalidRequest(`${field} is longer than ${maxCallbackUrlLength} characters`);
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw invalidRequest(`${field} is not a URL: give the address that receives the job's status changes, e.g. https://hooks.example.com/workcell`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw invalidRequest(`${field} must be https:// or http:// (not ${url.protocol})`);
  if (url.username !== '' || url.password !== '') {
    throw invalidRequest(`${field} must not hold a user or password: each POST is signed (Standard Webhooks, with the server's WORKCELL_CALLBACK_SECRET), which is how the receiver knows it came from workcell`);
  }
  if (url.hash !== '') throw invalidRequest(`${field} must not have a #fragment (it is never sent)`);
  const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
  const port = url.port === '' ? (url.protocol === 'https:' ? 443 : 80) : Number(url.port);
  const destination = parseDestination(host, port);
  if (destination === undefined) throw invalidRequest(`${field}'s host ${JSON.stringify(url.hostname)} is neither a valid host name nor an IP address`);
  return { url, destination };
}

export interface CallbackPolicyOptions {
  /** WORKCELL_CALLBACK_ALLOW_PRIVATE: exact entries that open private addresses (parsed as allow-list entries). */
  allowPrivate: readonly string[];
  /** Name resolution; default: a c-ares resolver of the policy's own. */
  resolve?: (host: string, signal?: AbortSignal) => Promise<IpAddress[]>;
  /** Longest a lookup may take, ms. */
  resolveTimeoutMs?: number;
}

/** An address a hook may be delivered to, or why there is none. */
export type CallbackAddress = { ok: true; address: IpAddress } | { ok: false; retry: boolean; reason: string };

export class CallbackPolicy {
  readonly #rules: AllowRule[];
  readonly #dns: DnsResolver | undefined;
  readonly #resolve: (host: string, signal?: AbortSignal) => Promise<IpAddress[]>;
  readonly #resolveTimeoutMs: number;

  constructor(options: CallbackPolicyOptions) {
    this.#rules = parseAllowList(options.allowPrivate);
    this.#dns = options.resolve === undefined ? createDnsResolver() : undefined;
    this.#resolve = options.resolve ?? ((host, signal) => this.#dns!.resolve(host, signal));
    this.#resolveTimeoutMs = options.resolveTimeoutMs ?? 5000;
  }

  /**
   * The address to deliver to: the host's first address the rules allow (every address when `trusted`, the
   * operator's own URL). `retry` says whether trying again later may help (DNS failed) or not (the address is refused).
   */
  async address(checked: CheckedCallback, options: { trusted?: boolean; signal?: AbortSignal } = {}): Promise<CallbackAddress> {
    const { destination } = checked;
    let addresses: IpAddress[];
    if (destination.ip !== undefined) addresses = [destination.ip];
    else {
      const signal = AbortSignal.any([AbortSignal.timeout(this.#resolveTimeoutMs), ...(options.signal === undefined ? [] : [options.signal])]);
      try {
        addresses = await this.#resolve(destination.host, signal);
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        return { ok: false, retry: true, reason: `cannot resolve ${destination.host}: ${code ?? errorMessage(error)}` };
      }
      if (addresses.length === 0) return { ok: false, retry: true, reason: `cannot resolve ${destination.host}: no addresses` };
    }
    const refused: string[] = [];
    for (const address of addresses) {
      const kind = classifyIp(address);
      if (kind === 'unspecified' || kind === 'multicast' || kind === 'broadcast') {
        refused.push(`${formatIp(address)} (${kind})`);
        continue;
      }
      if (options.trusted === true || addressVerdict(this.#rules, destination, address).ok) return { ok: true, address };
      refused.push(`${formatIp(address)} (${kind})`);
    }
    const named = destination.ip === undefined ? `${destination.host} resolves to ${refused.join(', ')}` : `${refused.join(', ')}`;
    return {
      ok: false,
      retry: false,
      reason:
        `${named}: hooks go only to public addresses, unless the server's operator lists this destination exactly in WORKCELL_CALLBACK_ALLOW_PRIVATE ` +
        `(e.g. ${destination.ip === undefined ? `${destination.host}:${destination.port}` : `${formatIp(destination.ip).includes(':') ? `[${formatIp(destination.ip)}]` : formatIp(destination.ip)}:${destination.port}`})`,
    };
  }

  /** Checks a client's callback_url when the job is scheduled: parsed, and resolved to an allowed address. */
  async check(text: string): Promise<string> {
    const checked = parseCallbackUrl(text);
    const verdict = await this.address(checked);
    if (!verdict.ok) throw invalidRequest(`callback_url is refused: ${verdict.reason}`);
    return checked.url.href;
  }

  close(): void {
    this.#dns?.close();
  }
}
