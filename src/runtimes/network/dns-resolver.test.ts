// The egress proxy's resolver against a real DNS server on loopback (node:dgram, below): it answers some names, says
// NXDOMAIN for others, and never answers names under blackhole.test (a black-holed server, as a wildcard allow-list
// entry makes reachable). Many stalled lookups must leave libuv's thread pool, and so the server's file operations,
// alone; the proxy must answer a clear 504 naming the name, and keep its lookups in flight under its cap.
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { parseAllowList } from './allow-list.ts';
import { createDnsResolver, processLookupsInFlight, type DnsResolver } from './dns-resolver.ts';
import { createEgressProxy, type EgressProxy } from './egress-proxy.ts';
import { formatIp, parseIp } from './ip-address.ts';

interface DnsServer {
  address: string;
  /** Every query as it arrived: name and type (1 A, 28 AAAA). */
  queries: Array<{ name: string; type: number }>;
  /** Resolves once `count` different names have been asked for. */
  namesSeen(count: number): Promise<void>;
  /** Called with each query as it arrives. */
  onQuery?: (name: string) => void;
  close(): Promise<void>;
}

/** A DNS server on 127.0.0.1: ok.test and v4only.test have records, blackhole.test never answers, the rest NXDOMAIN. */
async function startDnsServer(): Promise<DnsServer> {
  const socket: UdpSocket = createSocket('udp4');
  const names = new Set<string>();
  const waiters: Array<{ count: number; resolve: () => void }> = [];
  const server: DnsServer = {
    address: '',
    queries: [],
    namesSeen: (count) => new Promise((resolve) => (names.size >= count ? resolve() : waiters.push({ count, resolve }))),
    close: () => new Promise((resolve) => socket.close(() => resolve())),
  };
  socket.on('message', (message, remote) => {
    const { name, type, questionEnd } = parseQuestion(message);
    server.queries.push({ name, type });
    names.add(name);
    server.onQuery?.(name);
    for (const waiter of waiters.filter((each) => names.size >= each.count)) {
      waiters.splice(waiters.indexOf(waiter), 1);
      waiter.resolve();
    }
    if (name.endsWith('blackhole.test')) return;
    const records: Buffer[] = [];
    const known = name === 'ok.test' || name === 'v4only.test';
    if (known && type === 1) records.push(answer(1, Buffer.from([192, 0, 2, 10])));
    if (name === 'ok.test' && type === 28) records.push(answer(28, Buffer.from(parseIp('2001:db8::10')!.bytes)));
    const header = Buffer.alloc(12);
    message.copy(header, 0, 0, 2); // the query's id
    header.writeUInt16BE(known ? 0x8180 : 0x8183, 2); // a response, recursion available; NOERROR or NXDOMAIN
    header.writeUInt16BE(1, 4);
    header.writeUInt16BE(records.length, 6);
    socket.send(Buffer.concat([header, message.subarray(12, questionEnd), ...records]), remote.port, remote.address);
  });
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  server.address = `127.0.0.1:${socket.address().port}`;
  return server;
}

function parseQuestion(message: Buffer): { name: string; type: number; questionEnd: number } {
  const labels: string[] = [];
  let offset = 12;
  while (message[offset]! > 0) {
    const length = message[offset]!;
    labels.push(message.subarray(offset + 1, offset + 1 + length).toString('latin1'));
    offset += length + 1;
  }
  return { name: labels.join('.').toLowerCase(), type: message.readUInt16BE(offset + 1), questionEnd: offset + 5 };
}

function answer(type: number, data: Buffer): Buffer {
  const record = Buffer.alloc(12);
  record.writeUInt16BE(0xc00c, 0); // the name: a pointer to the question's
  record.writeUInt16BE(type, 2);
  record.writeUInt16BE(1, 4); // IN
  record.writeUInt32BE(60, 6);
  record.writeUInt16BE(data.length, 10);
  return Buffer.concat([record, data]);
}

/** Sends one raw request to the proxy and reads everything until it closes the connection. */
function exchange(port: number, raw: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port }, () => socket.write(raw));
    const chunks: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('close', () => resolve(Buffer.concat(chunks).toString('latin1')));
    socket.on('error', reject);
  });
}

let dns: DnsServer;
let dir: string;
let hostsFile: string;
beforeAll(async () => {
  dns = await startDnsServer();
  dir = mkdtempSync(join(tmpdir(), 'workcell-dns-'));
  hostsFile = join(dir, 'hosts');
  writeFileSync(hostsFile, '# a comment\n10.1.2.3 mirror.internal mirror # the operator\'s own\nfd00::7 mirror.internal\n127.0.0.1 localhost\n');
});
afterAll(async () => {
  await dns.close();
  rmSync(dir, { recursive: true, force: true });
});

let resolver: DnsResolver | undefined;
let proxy: EgressProxy | undefined;
afterEach(async () => {
  resolver?.close();
  resolver = undefined;
  await proxy?.close();
  proxy = undefined;
  dns.onQuery = undefined;
});

const formatted = async (promise: Promise<Array<Parameters<typeof formatIp>[0]>>) => (await promise).map(formatIp);

describe('the egress resolver (c-ares)', () => {
  it('asks for A and AAAA, and answers names from the hosts file and localhost without a query', async () => {
    resolver = createDnsResolver({ servers: [dns.address], hostsFile });
    expect(await formatted(resolver.resolve('ok.test'))).toEqual(['192.0.2.10', '2001:db8::10']);
    expect(await formatted(resolver.resolve('v4only.test'))).toEqual(['192.0.2.10']);
    await expect(resolver.resolve('missing.test')).rejects.toMatchObject({ code: 'ENOTFOUND' });
    expect(await formatted(resolver.resolve('MIRROR.internal.'))).toEqual(['10.1.2.3', 'fd00::7']);
    expect(await formatted(resolver.resolve('mirror'))).toEqual(['10.1.2.3']);
    expect(await formatted(resolver.resolve('localhost'))).toEqual(['127.0.0.1']);
    expect(await formatted(resolver.resolve('app.localhost'))).toEqual(['127.0.0.1', '::1']);
    const asked = new Set(dns.queries.map((query) => query.name));
    expect(asked).toEqual(new Set(['ok.test', 'v4only.test', 'missing.test']));
    expect(dns.queries.filter((query) => query.name === 'ok.test').map((query) => query.type).sort()).toEqual([1, 28]);
  });

  it('leaves the thread pool alone: file operations finish while more lookups than it has threads hang', async () => {
    // libuv has 4 threads; dns.lookup would hold one per lookup until the black hole's timeout.
    resolver = createDnsResolver({ servers: [dns.address], timeoutMs: 120_000, tries: 1, maxInFlight: 16 });
    const names = Array.from({ length: 16 }, (_, i) => `n${i}.stall.blackhole.test`);
    let settled = 0;
    const outcomes = Promise.allSettled(names.map((name) => resolver!.resolve(name).finally(() => settled++)));
    await dns.namesSeen(names.length);
    const file = join(dir, 'hosts');
    const reads = await Promise.all(Array.from({ length: 16 }, (_, i) => (i % 2 === 0 ? readFile(file, 'utf8') : stat(file))));
    expect(reads).toHaveLength(16);
    // Every file operation finished while every lookup was still waiting for its answer.
    expect(settled).toBe(0);
    expect(resolver.inFlight).toBe(16);
    resolver.close();
    for (const result of await outcomes) expect(result).toMatchObject({ status: 'rejected', reason: { code: 'ECANCELLED' } });
    expect(processLookupsInFlight()).toBe(0);
  });
});

describe('the egress proxy with a black-holed DNS server', () => {
  it('answers 504 naming each name, with at most its cap of lookups in flight', async () => {
    let mostInFlight = 0;
    dns.onQuery = () => (mostInFlight = Math.max(mostInFlight, processLookupsInFlight()));
    proxy = createEgressProxy({ allow: parseAllowList(['*.blackhole.test']), dns: { servers: [dns.address], timeoutMs: 200, tries: 1, maxInFlight: 2 }, limits: { resolveTimeoutMs: 30_000 } });
    const port = await proxy.listen({ host: '127.0.0.1', port: 0 });
    const hosts = Array.from({ length: 6 }, (_, i) => `h${i}.cap.blackhole.test`);
    const answers = await Promise.all([
      ...hosts.map((host) => exchange(port, `CONNECT ${host}:443 HTTP/1.1\r\nHost: ${host}:443\r\n\r\n`)),
      exchange(port, 'GET http://plain.cap.blackhole.test/x HTTP/1.1\r\nHost: plain.cap.blackhole.test\r\n\r\n'),
    ]);
    for (const [index, host] of [...hosts, 'plain.cap.blackhole.test'].entries()) {
      expect(answers[index]).toMatch(/^HTTP\/1.1 504 /);
      expect(answers[index]).toContain(`cannot resolve ${host}: no answer from DNS in time (ETIMEOUT)`);
    }
    // Every name was asked for in the end, never more than two at once.
    expect(new Set(dns.queries.map((query) => query.name).filter((name) => name.endsWith('cap.blackhole.test'))).size).toBe(7);
    expect(mostInFlight).toBeGreaterThan(0);
    expect(mostInFlight).toBeLessThanOrEqual(2);
  });

  it('cancels its lookups in flight when it closes', async () => {
    proxy = createEgressProxy({ allow: parseAllowList(['*.blackhole.test']), dns: { servers: [dns.address], timeoutMs: 120_000, tries: 1 } });
    const port = await proxy.listen({ host: '127.0.0.1', port: 0 });
    const seen = dns.queries.length;
    const pending = exchange(port, 'CONNECT closing.blackhole.test:443 HTTP/1.1\r\nHost: closing.blackhole.test:443\r\n\r\n');
    await dns.namesSeen(new Set([...dns.queries.map((query) => query.name), 'closing.blackhole.test']).size);
    expect(dns.queries.length).toBeGreaterThan(seen);
    expect(processLookupsInFlight()).toBe(1);
    await proxy.close();
    proxy = undefined;
    await pending;
    expect(processLookupsInFlight()).toBe(0);
  });
});
