// The egress allow-list: which destinations a sandbox may reach through the proxy. One pattern per entry:
//
//   example.com          that host only (not its subdomains), ports 80 and 443
//   example.com:8080     that host, that port only
//   *.example.com        any subdomain of example.com (a.example.com, a.b.example.com; not example.com itself),
//                        ports 80 and 443; `*.example.com:8443` for one other port
//   *                    any host, ports 80 and 443 (`*:8080`: that port); private addresses stay refused
//   203.0.113.7          that IPv4 address, ports 80 and 443; `203.0.113.7:5432` for one port
//   [2001:db8::1]:8080   an IPv6 address (in brackets when a port follows; bare `2001:db8::1` is ports 80 and 443)
//
// Names are matched case-insensitively, with internationalized names as punycode; an IP pattern matches only a
// request for that IP literal, never a name that resolves to it (the name must be listed itself). After the proxy
// resolves a name it refuses private, loopback, link-local, CGNAT, unique-local and other non-public addresses
// (ip-address.ts) unless the job listed them exactly: the IP itself (`127.0.0.1:8080`) or the name with its port
// (`db.internal:5432`). `*`, `*.domain` and bare names never open a private address, so DNS that points a listed
// public name at 127.0.0.1 gets nothing. Unspecified, multicast and broadcast addresses are never destinations.
// A rule may be marked as not trusted to open private addresses at all (opensPrivate: false): the entries of a job
// scheduled by an API key, unless the operator allows it (WORKCELL_NETWORK_JOB_PRIVATE), so a client cannot aim the
// sandbox at the server's own network; the server's list (WORKCELL_NETWORK_ALLOW) always may.
import { domainToASCII } from 'node:url';
import { classifyIp, formatIp, parseIp, sameIp, unmapIp, type AddressClass, type IpAddress } from './ip-address.ts';

export type HostPattern =
  | { kind: 'any' }
  | { kind: 'name'; name: string }
  | { kind: 'subdomains'; suffix: string }
  | { kind: 'ip'; address: IpAddress };

export interface AllowRule {
  /** The pattern, normalized: lower case, punycode, IPv6 in its canonical form (in brackets when a port follows). */
  pattern: string;
  host: HostPattern;
  /** The one port the rule allows; undefined means 80 and 443. */
  port: number | undefined;
  /** False: the rule allows public addresses only, even when it lists a private one exactly. Default true. */
  opensPrivate?: boolean;
}

/** A destination the sandbox asked for: a host name (normalized) or an IP literal, and a port. */
export interface Destination {
  /** The normalized name, or the IP literal as formatIp writes it (no brackets). */
  host: string;
  /** Set when the destination is an IP literal. */
  ip: IpAddress | undefined;
  port: number;
}

export const defaultPorts: readonly number[] = [80, 443];

export class AllowPatternError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AllowPatternError';
  }
}

const maxPatternLength = 300;

/** Parses one allow-list entry; throws AllowPatternError with a message that says what to write instead. */
export function parseAllowPattern(text: string): AllowRule {
  const entry = text.trim();
  const fail = (why: string) => new AllowPatternError(`${JSON.stringify(text)} ${why}`);
  if (entry === '') throw fail('is empty: write a host, host:port, *.domain or an IP address');
  if (entry.length > maxPatternLength) throw fail(`is longer than ${maxPatternLength} characters`);
  if (/\s/.test(entry)) throw fail('contains white space');
  if (entry.includes('://') || /[/?#@]/.test(entry)) {
    throw fail('is not a destination: write the host alone, without scheme, user or path, e.g. "example.com" or "example.com:8080"');
  }
  const { host, port } = splitHostPort(entry, fail);
  const rulePort = port === undefined ? undefined : parsePort(port, fail);
  const portSuffix = rulePort === undefined ? '' : `:${rulePort}`;

  if (host === '*') return { pattern: `*${portSuffix}`, host: { kind: 'any' }, port: rulePort };
  if (host.startsWith('*.')) {
    const suffix = normalizeName(host.slice(2));
    if (suffix === undefined) throw fail(`is not a valid pattern: after "*." comes a domain name, e.g. "*.example.com"`);
    return { pattern: `*.${suffix}${portSuffix}`, host: { kind: 'subdomains', suffix }, port: rulePort };
  }
  if (host.includes('*')) throw fail('has a wildcard in the wrong place: only a whole first label may be one, e.g. "*.example.com" (or "*" for any host)');

  const ip = parseIp(host);
  if (ip !== undefined) {
    const kind = classifyIp(ip);
    if (kind === 'unspecified' || kind === 'multicast' || kind === 'broadcast') throw fail(`is a ${kind} address, not a destination`);
    const formatted = formatIp(ip);
    const hostText = ip.family === 6 && rulePort !== undefined ? `[${formatted}]` : formatted;
    return { pattern: `${hostText}${portSuffix}`, host: { kind: 'ip', address: ip }, port: rulePort };
  }
  if (/^[\d.]+$/.test(host) || /^[0-9a-f:.]+$/i.test(host) && host.includes(':')) {
    throw fail('is not a valid IP address: write IPv4 as four decimal numbers (e.g. "203.0.113.7") and IPv6 in brackets before a port (e.g. "[2001:db8::1]:443")');
  }
  const name = normalizeName(host);
  if (name === undefined) throw fail('is not a valid host name: use letters, digits, "-" and dots, e.g. "registry.npmjs.org"');
  return { pattern: `${name}${portSuffix}`, host: { kind: 'name', name }, port: rulePort };
}

function splitHostPort(entry: string, fail: (why: string) => AllowPatternError): { host: string; port: string | undefined } {
  if (entry.startsWith('[')) {
    const close = entry.indexOf(']');
    if (close === -1) throw fail('has "[" without "]": write IPv6 addresses as "[2001:db8::1]" or "[2001:db8::1]:443"');
    const host = entry.slice(1, close);
    const rest = entry.slice(close + 1);
    if (parseIp(host)?.family !== 6) throw fail('has something other than an IPv6 address in brackets');
    if (rest === '') return { host, port: undefined };
    if (!rest.startsWith(':')) throw fail('has text after "]": only ":port" may follow');
    return { host, port: rest.slice(1) };
  }
  const colons = entry.split(':').length - 1;
  if (colons === 0) return { host: entry, port: undefined };
  if (colons === 1) {
    const [host = '', port = ''] = entry.split(':');
    return { host, port };
  }
  // More than one colon and no brackets: an IPv6 address without a port.
  return { host: entry, port: undefined };
}

function parsePort(text: string, fail: (why: string) => AllowPatternError): number {
  if (!/^\d{1,5}$/.test(text)) throw fail('has a port that is not a number: write host:port, e.g. "example.com:8080"');
  const port = Number(text);
  if (port < 1 || port > 65535) throw fail('has a port outside 1 to 65535');
  return port;
}

/**
 * A host name in the form the proxy compares: lower case, punycode, no trailing dot; undefined when it is not a
 * valid DNS name (labels of letters, digits, "-" and "_", at most 63 characters each, 253 in all) or when its last
 * label is all digits (those are IPv4 shorthands such as "2130706433" that resolvers turn into addresses).
 */
export function normalizeName(text: string): string | undefined {
  const trimmed = text.endsWith('.') ? text.slice(0, -1) : text;
  if (trimmed === '' || trimmed.length > 253) return undefined;
  // domainToASCII lower-cases and converts Unicode labels to punycode; it answers '' for invalid input.
  const ascii = /^[\x21-\x7e]*$/.test(trimmed) ? trimmed.toLowerCase() : domainToASCII(trimmed);
  if (ascii === '' || ascii.length > 253) return undefined;
  const labels = ascii.split('.');
  for (const label of labels) {
    if (!/^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/.test(label)) return undefined;
  }
  if (/^\d+$/.test(labels.at(-1)!)) return undefined;
  return ascii;
}

/** Parses every entry; throws AllowPatternError naming the first bad one. Duplicates (after normalizing) are dropped. */
export function parseAllowList(entries: readonly string[]): AllowRule[] {
  const rules = new Map<string, AllowRule>();
  for (const entry of entries) {
    const rule = parseAllowPattern(entry);
    if (!rules.has(rule.pattern)) rules.set(rule.pattern, rule);
  }
  return [...rules.values()];
}

/**
 * The rules of a sandbox: the operator's (trusted: they may open private addresses when exact) and the job's own,
 * which may only when `jobOpensPrivate`. An entry on both lists keeps the operator's trust.
 */
export function combineAllowLists(server: readonly string[], job: readonly string[], jobOpensPrivate: boolean): AllowRule[] {
  const serverRules = parseAllowList(server);
  const known = new Set(serverRules.map((rule) => rule.pattern));
  const jobRules = parseAllowList(job).filter((rule) => !known.has(rule.pattern));
  return [...serverRules, ...jobRules.map((rule) => (jobOpensPrivate ? rule : { ...rule, opensPrivate: false }))];
}

/** The kind of address a rule names when it is a non-public IP literal (e.g. "loopback"); undefined otherwise. */
export function nonPublicLiteral(rule: AllowRule): AddressClass | undefined {
  if (rule.host.kind !== 'ip') return undefined;
  const kind = classifyIp(rule.host.address);
  return kind === 'public' ? undefined : kind;
}

/** The normalized union of several lists (the server's default list and the job's own), in order, without duplicates. */
export function mergeAllowLists(...lists: ReadonlyArray<readonly string[]>): string[] {
  return parseAllowList(lists.flat()).map((rule) => rule.pattern);
}

/**
 * Parses what a client asked to reach (the host of a CONNECT authority or of an absolute URL, brackets removed) into
 * a Destination; undefined when the host is neither a valid name nor a strict IP literal.
 */
export function parseDestination(host: string, port: number): Destination | undefined {
  if (!Number.isInteger(port) || port < 1 || port > 65535) return undefined;
  const ip = parseIp(host);
  if (ip !== undefined) {
    const plain = unmapIp(ip);
    return { host: formatIp(plain), ip: plain, port };
  }
  const name = normalizeName(host);
  return name === undefined ? undefined : { host: name, ip: undefined, port };
}

function portAllowed(rule: AllowRule, port: number): boolean {
  return rule.port === undefined ? defaultPorts.includes(port) : rule.port === port;
}

function hostMatches(pattern: HostPattern, destination: Destination): boolean {
  switch (pattern.kind) {
    case 'any':
      return true;
    case 'ip':
      return destination.ip !== undefined && sameIp(pattern.address, destination.ip);
    case 'name':
      return destination.ip === undefined && destination.host === pattern.name;
    case 'subdomains':
      return destination.ip === undefined && destination.host.endsWith(`.${pattern.suffix}`);
  }
}

/** The rules that allow this destination (host and port); empty when it is not on the list. */
export function matchingRules(rules: readonly AllowRule[], destination: Destination): AllowRule[] {
  return rules.filter((rule) => portAllowed(rule, destination.port) && hostMatches(rule.host, destination));
}

export type AddressVerdict = { ok: true; class: AddressClass } | { ok: false; class: AddressClass };

/**
 * May the proxy connect to `address` (what the destination resolved to, or its IP literal)? Public addresses: yes
 * (the destination was already matched). Unspecified, multicast and broadcast: never. Any other non-public address:
 * only when listed exactly, as that IP with a port rule that covers this port, or (for a name) as the name with this
 * very port.
 */
export function addressVerdict(rules: readonly AllowRule[], destination: Destination, address: IpAddress): AddressVerdict {
  const kind = classifyIp(address);
  if (kind === 'public') return { ok: true, class: kind };
  if (kind === 'unspecified' || kind === 'multicast' || kind === 'broadcast') return { ok: false, class: kind };
  const listed = rules.some((rule) => {
    if (rule.opensPrivate === false || !portAllowed(rule, destination.port)) return false;
    if (rule.host.kind === 'ip') return sameIp(rule.host.address, address);
    return rule.host.kind === 'name' && destination.ip === undefined && rule.host.name === destination.host && rule.port === destination.port;
  });
  return { ok: listed, class: kind };
}

/** "host:port" as a person would write it (IPv6 in brackets). */
export function formatDestination(destination: Pick<Destination, 'host' | 'port'>): string {
  return `${destination.host.includes(':') ? `[${destination.host}]` : destination.host}:${destination.port}`;
}
