// Name resolution for the egress proxy, on c-ares (node:dns Resolver), never on getaddrinfo. dns.lookup runs in
// libuv's thread pool (4 threads by default), the pool every file operation of the server shares: a handful of names
// that a black-holed DNS server never answers (a wildcard allows any subdomain) would stall the whole server, API
// included. c-ares sends its queries from the event loop and uses no thread. Every lookup is bounded: a timeout and a
// number of tries per query, and a cap on lookups in flight per resolver (one per egress proxy, so per sandbox) and in
// the whole process; lookups over a cap wait for a slot, within the caller's deadline (its AbortSignal).
//
// c-ares does not read /etc/hosts, getaddrinfo does: each resolver reads it once (the first lookup), and a name it
// lists is answered from it alone, with no query, as getaddrinfo does with "files dns". So an operator's own names
// (an internal mirror) keep working, and `localhost` means what /etc/hosts says; `localhost` and `*.localhost` are
// loopback even without the file (RFC 6761), and never queried. Whatever the answer, the proxy still classifies every
// address (private ones only when listed exactly).
// It must never call dns.lookup or anything else that takes a thread of the pool per query.
import { Resolver } from 'node:dns/promises';
import { readFile } from 'node:fs/promises';
import { parseIp, sameIp, type IpAddress } from './ip-address.ts';

export interface DnsResolverOptions {
  /** DNS servers as "ip" or "ip:port"; default: the system's (/etc/resolv.conf, as c-ares reads it). */
  servers?: string[];
  /** Time a query waits for an answer before it is sent again, ms (c-ares doubles it each try). */
  timeoutMs?: number;
  /** Times a query is sent to each server before it fails with ETIMEOUT. */
  tries?: number;
  /** Lookups this resolver has in flight at once; more wait for a slot. */
  maxInFlight?: number;
  /** Default /etc/hosts. */
  hostsFile?: string;
}

export interface DnsResolver {
  /** The name's IPv4 and IPv6 addresses (IPv4 first); rejects with the DNS error's code (ETIMEOUT, ENOTFOUND, ...). */
  resolve(host: string, signal?: AbortSignal): Promise<IpAddress[]>;
  /** Lookups this resolver is running (not those waiting for a slot). */
  readonly inFlight: number;
  /** Cancels every lookup in flight or waiting (they reject with ECANCELLED). */
  close(): void;
}

export const defaultDnsOptions = { timeoutMs: 2000, tries: 2, maxInFlight: 8, hostsFile: '/etc/hosts' } as const;
/** Lookups in flight across every resolver of the process. */
export const processMaxInFlight = 64;

/** A counting semaphore whose waiters leave the queue when their signal aborts. */
class Slots {
  readonly #max: number;
  #used = 0;
  readonly #waiting: Array<() => void> = [];

  constructor(max: number) {
    this.#max = max;
  }

  get used(): number {
    return this.#used;
  }

  /** Resolves with a release function once a slot is free; rejects when `signal` aborts first. */
  acquire(signal: AbortSignal | undefined): Promise<() => void> {
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      this.#used--;
      this.#waiting.shift()?.();
    };
    if (signal?.aborted) return Promise.reject(cancelled('aborted before a DNS lookup slot was free', signal.reason));
    if (this.#used < this.#max) {
      this.#used++;
      return Promise.resolve(release);
    }
    return new Promise((resolveSlot, reject) => {
      const grant = () => {
        signal?.removeEventListener('abort', onAbort);
        this.#used++;
        resolveSlot(release);
      };
      const onAbort = () => {
        const index = this.#waiting.indexOf(grant);
        if (index !== -1) this.#waiting.splice(index, 1);
        reject(cancelled('aborted while waiting for a DNS lookup slot', signal?.reason));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#waiting.push(grant);
    });
  }
}

const processSlots = new Slots(processMaxInFlight);

/** Lookups in flight across every resolver of the process. */
export function processLookupsInFlight(): number {
  return processSlots.used;
}

export function createDnsResolver(options: DnsResolverOptions = {}): DnsResolver {
  const settings = { ...defaultDnsOptions, ...options };
  const resolver = new Resolver({ timeout: settings.timeoutMs, tries: settings.tries });
  if (options.servers !== undefined) resolver.setServers(options.servers);
  const slots = new Slots(settings.maxInFlight);
  const closing = new AbortController();
  let hosts: Promise<Map<string, IpAddress[]>> | undefined;

  const query = async (host: string): Promise<IpAddress[]> => {
    const [v4, v6] = await Promise.allSettled([resolver.resolve4(host), resolver.resolve6(host)]);
    const addresses = [...(v4.status === 'fulfilled' ? v4.value : []), ...(v6.status === 'fulfilled' ? v6.value : [])];
    if (addresses.length > 0 || (v4.status === 'fulfilled' && v6.status === 'fulfilled')) {
      return addresses.map((address) => parseIp(address)).filter((address): address is IpAddress => address !== undefined);
    }
    const failures = [v4, v6].flatMap((result) => (result.status === 'rejected' ? [result.reason as NodeJS.ErrnoException] : []));
    // ENODATA for one family is "no such record", not a failure; a timeout says more than "not found".
    const noData = failures.every((error) => error.code === 'ENODATA');
    if (noData && failures.length < 2) return [];
    throw failures.find((error) => error.code === 'ETIMEOUT') ?? failures.find((error) => error.code !== 'ENODATA') ?? failures[0]!;
  };

  return {
    async resolve(host, signal) {
      const name = host.toLowerCase().replace(/\.$/, '');
      const listed = (await (hosts ??= readHostsFile(settings.hostsFile))).get(name);
      if (listed !== undefined) return listed;
      if (name === 'localhost' || name.endsWith('.localhost')) return [parseIp('127.0.0.1')!, parseIp('::1')!];
      const abort = signal === undefined ? closing.signal : AbortSignal.any([signal, closing.signal]);
      const releaseOwn = await slots.acquire(abort);
      let releaseProcess: (() => void) | undefined;
      try {
        releaseProcess = await processSlots.acquire(abort);
        // The slots are held until c-ares gives up (its timeout and tries), even when the caller stopped waiting.
        return await query(name);
      } finally {
        releaseProcess?.();
        releaseOwn();
      }
    },
    get inFlight() {
      return slots.used;
    },
    close() {
      // Waiters leave their queues on the abort; queries in flight reject with ECANCELLED.
      closing.abort();
      resolver.cancel();
    },
  };
}

/** /etc/hosts as name → addresses (IPv4 first); empty when the file cannot be read. */
export async function readHostsFile(path: string): Promise<Map<string, IpAddress[]>> {
  const text = await readFile(path, 'utf8').catch(() => '');
  const names = new Map<string, IpAddress[]>();
  for (const line of text.split('\n')) {
    const [first, ...aliases] = line.replace(/#.*/, '').trim().split(/\s+/);
    const address = first === undefined ? undefined : parseIp(first.replace(/%.*$/, ''));
    if (address === undefined) continue;
    for (const alias of aliases) {
      const name = alias.toLowerCase().replace(/\.$/, '');
      const list = names.get(name) ?? [];
      if (!list.some((known) => sameIp(known, address))) list.push(address);
      names.set(name, list);
    }
  }
  for (const list of names.values()) list.sort((a, b) => a.family - b.family);
  return names;
}

function cancelled(message: string, cause: unknown): Error {
  return Object.assign(new Error(message, { cause }), { code: 'ECANCELLED' });
}
