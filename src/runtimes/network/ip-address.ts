// IP address parsing and classification for the egress proxy: which addresses are public (reachable when a rule
// allows the destination) and which are private, loopback, link-local, multicast and the like (reachable only when
// the job lists them exactly). The proxy classifies every address it is about to connect to, after resolving the
// name itself, so a name that resolves to 127.0.0.1 or 169.254.169.254 does not open the host's services.
// Parsing is strict: only dotted-quad IPv4 (no octal, hex or short forms) and RFC 4291 IPv6 without a zone id.
import { isIPv4, isIPv6 } from 'node:net';

export interface IpAddress {
  family: 4 | 6;
  /** 4 bytes for IPv4, 16 for IPv6. */
  bytes: Uint8Array;
}

export type AddressClass =
  | 'public'
  | 'unspecified'
  | 'loopback'
  | 'private'
  | 'cgnat'
  | 'link-local'
  | 'multicast'
  | 'broadcast'
  | 'unique-local'
  | 'site-local'
  | 'documentation'
  | 'benchmarking'
  | 'reserved';

/** Parses a strict IPv4 or IPv6 literal (no brackets, no zone id); undefined when it is not one. */
export function parseIp(text: string): IpAddress | undefined {
  if (isIPv4(text)) {
    const parts = text.split('.');
    // Node accepts "010.0.0.1"; resolvers would read it as octal. Refuse leading zeros outright.
    if (parts.some((part) => part.length > 1 && part.startsWith('0'))) return undefined;
    return { family: 4, bytes: Uint8Array.from(parts.map(Number)) };
  }
  if (!isIPv6(text) || text.includes('%')) return undefined;
  let hex = text;
  // An embedded IPv4 tail (::ffff:1.2.3.4) is rewritten as its two hex groups (::ffff:102:304).
  if (hex.includes('.')) {
    const lastColon = hex.lastIndexOf(':');
    const v4 = parseIp(hex.slice(lastColon + 1));
    if (v4?.family !== 4) return undefined;
    const [a = 0, b = 0, c = 0, d = 0] = v4.bytes;
    hex = `${hex.slice(0, lastColon + 1)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [left = '', right] = hex.split('::') as [string, string | undefined];
  const groups = (part: string) => (part === '' ? [] : part.split(':').map((group) => Number.parseInt(group, 16)));
  const leftGroups = groups(left);
  const rightGroups = right === undefined ? [] : groups(right);
  const missing = 8 - leftGroups.length - rightGroups.length;
  if (missing < 0 || (right === undefined && missing !== 0)) return undefined;
  const bytes = new Uint8Array(16);
  [...leftGroups, ...new Array<number>(missing).fill(0), ...rightGroups].forEach((group, index) => {
    bytes[index * 2] = group >> 8;
    bytes[index * 2 + 1] = group & 0xff;
  });
  return { family: 6, bytes };
}

/** The IPv4 address an IPv4-mapped IPv6 address (::ffff:a.b.c.d) stands for; other addresses unchanged. */
export function unmapIp(address: IpAddress): IpAddress {
  if (address.family === 6 && hasPrefix(address.bytes, v4MappedPrefix, 96)) return { family: 4, bytes: address.bytes.slice(12) };
  return address;
}

export function formatIp(address: IpAddress): string {
  if (address.family === 4) return [...address.bytes].join('.');
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((address.bytes[i]! << 8) | address.bytes[i + 1]!);
  // RFC 5952: the longest run (of two or more) of zero groups becomes "::".
  let bestStart = -1;
  let bestLength = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength) [bestStart, bestLength] = [i, j - i];
    i = j;
  }
  const hex = groups.map((group) => group.toString(16));
  if (bestStart === -1) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLength).join(':')}`;
}

export function sameIp(a: IpAddress, b: IpAddress): boolean {
  const [x, y] = [unmapIp(a), unmapIp(b)];
  return x.family === y.family && x.bytes.every((byte, index) => byte === y.bytes[index]);
}

const v4MappedPrefix = Uint8Array.of(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff);

function hasPrefix(bytes: Uint8Array, prefix: Uint8Array, bits: number): boolean {
  for (let bit = 0; bit < bits; bit += 8) {
    const index = bit / 8;
    const width = Math.min(8, bits - bit);
    const mask = (0xff << (8 - width)) & 0xff;
    if (((bytes[index] ?? 0) & mask) !== ((prefix[index] ?? 0) & mask)) return false;
  }
  return true;
}

type Range = readonly [prefix: readonly number[], bits: number, kind: Exclude<AddressClass, 'public'>];

const ipv4Ranges: readonly Range[] = [
  [[0], 8, 'unspecified'], // "this network"
  [[10], 8, 'private'],
  [[100, 64], 10, 'cgnat'],
  [[127], 8, 'loopback'],
  [[169, 254], 16, 'link-local'],
  [[172, 16], 12, 'private'],
  [[192, 0, 0], 24, 'reserved'], // IETF protocol assignments
  [[192, 0, 2], 24, 'documentation'],
  [[192, 88, 99], 24, 'reserved'], // deprecated 6to4 relay anycast
  [[192, 168], 16, 'private'],
  [[198, 18], 15, 'benchmarking'],
  [[198, 51, 100], 24, 'documentation'],
  [[203, 0, 113], 24, 'documentation'],
  [[224], 4, 'multicast'],
  [[255, 255, 255, 255], 32, 'broadcast'],
  [[240], 4, 'reserved'],
];

const ipv6Ranges: readonly Range[] = [
  [[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 128, 'unspecified'],
  [[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], 128, 'loopback'],
  [[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 96, 'reserved'], // IPv4-compatible (deprecated)
  [[0, 0x64, 0xff, 0x9b, 0, 1], 48, 'private'], // local-use NAT64
  [[1, 0, 0, 0, 0, 0, 0, 0], 64, 'reserved'], // discard-only
  [[0x20, 0x01, 0x0d, 0xb8], 32, 'documentation'],
  [[0x20, 0x01, 0, 0], 32, 'reserved'], // Teredo: the real peer is hidden in the address
  [[0x20, 0x01, 0, 0x20], 28, 'reserved'], // ORCHIDv2
  [[0x3f, 0xff], 20, 'documentation'],
  [[0xfc], 7, 'unique-local'],
  [[0xfe, 0x80], 10, 'link-local'],
  [[0xfe, 0xc0], 10, 'site-local'],
  [[0xff], 8, 'multicast'],
];

/**
 * What kind of address this is. IPv6 forms that carry an IPv4 address (IPv4-mapped ::ffff:0:0/96, NAT64
 * 64:ff9b::/96, 6to4 2002::/16) are classified by the IPv4 address they carry, so ::ffff:127.0.0.1 is loopback.
 */
export function classifyIp(address: IpAddress): AddressClass {
  const { bytes } = address;
  if (address.family === 4) return classifyIn(bytes, ipv4Ranges);
  if (hasPrefix(bytes, v4MappedPrefix, 96)) return classifyIn(bytes.slice(12), ipv4Ranges);
  if (hasPrefix(bytes, Uint8Array.of(0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0), 96)) return classifyIn(bytes.slice(12), ipv4Ranges);
  if (hasPrefix(bytes, Uint8Array.of(0x20, 0x02), 16)) return classifyIn(bytes.slice(2, 6), ipv4Ranges);
  return classifyIn(bytes, ipv6Ranges);
}

function classifyIn(bytes: Uint8Array, ranges: readonly Range[]): AddressClass {
  for (const [prefix, bits, kind] of ranges) if (hasPrefix(bytes, Uint8Array.from(prefix), bits)) return kind;
  return 'public';
}

export function isPublicIp(address: IpAddress): boolean {
  return classifyIp(address) === 'public';
}
