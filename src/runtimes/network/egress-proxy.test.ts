// The egress proxy against real sockets on the host's loopback: destination servers, the proxy on a TCP port (and
// once on a unix socket), clients writing raw HTTP. Names resolve through a fake resolver.
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer as createHttpServer, type IncomingHttpHeaders, type Server as HttpServer } from 'node:http';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { parseAllowList } from './allow-list.ts';
import { createEgressProxy, type ConnectionRecord, type EgressProxy, type EgressProxyOptions } from './egress-proxy.ts';
import { parseIp, type IpAddress } from './ip-address.ts';

let web: HttpServer;
let webPort = 0;
let otherPort = 0;
let echo: Server;
let echoPort = 0;
let other: Server;
const seenHeaders: IncomingHttpHeaders[] = [];

beforeAll(async () => {
  web = createHttpServer((request, response) => {
    seenHeaders.push(request.headers);
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const body = `hello ${request.method} ${request.url} ${Buffer.concat(chunks).toString()}`;
      response.writeHead(200, { 'content-type': 'text/plain', 'x-test': 'yes' });
      response.end(body);
    });
  });
  await new Promise<void>((resolve) => web.listen(0, '127.0.0.1', resolve));
  webPort = (web.address() as { port: number }).port;
  echo = createServer((socket) => socket.pipe(socket));
  await new Promise<void>((resolve) => echo.listen(0, '127.0.0.1', resolve));
  echoPort = (echo.address() as { port: number }).port;
  other = createServer((socket) => socket.end('you should not see this'));
  await new Promise<void>((resolve) => other.listen(0, '127.0.0.1', resolve));
  otherPort = (other.address() as { port: number }).port;
});

afterAll(async () => {
  await Promise.all([web, echo, other].map((server) => new Promise((resolve) => server.close(resolve))));
});

let proxy: EgressProxy | undefined;
afterEach(async () => {
  await proxy?.close();
  proxy = undefined;
});

const fakeDns: Record<string, string[]> = {
  'internal.test': ['127.0.0.1'],
  'mixed.test': ['10.0.0.1', '127.0.0.1'],
  'public.test': ['192.0.2.1'],
};

async function startProxy(allow: string[], extra: Partial<EgressProxyOptions> = {}): Promise<{ port: number; records: ConnectionRecord[]; lookups: string[] }> {
  const records: ConnectionRecord[] = [];
  const lookups: string[] = [];
  let step = 3;
  proxy = createEgressProxy({
    allow: parseAllowList(allow),
    onConnection: (record) => records.push(record),
    currentStep: () => step++,
    resolve: async (host) => {
      lookups.push(host);
      const answer = fakeDns[host];
      if (answer === undefined) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
      return answer.map((address) => parseIp(address) as IpAddress);
    },
    ...extra,
  });
  const port = await proxy.listen({ host: '127.0.0.1', port: 0 });
  return { port, records, lookups };
}

/** Writes raw bytes to the proxy and collects everything until the proxy closes the connection. */
function exchange(port: number, raw: string | Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port });
    const chunks: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('error', reject);
    socket.on('close', () => resolve(Buffer.concat(chunks).toString('latin1')));
    socket.write(raw);
  });
}

/** Opens a CONNECT tunnel; resolves with the socket once the 200 has arrived (or with the whole refusal). */
function openTunnel(port: number, authority: string): Promise<{ socket: Socket; head: string }> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port });
    let buffered = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      const end = buffered.indexOf('\r\n\r\n');
      if (end === -1) return;
      const head = buffered.subarray(0, end).toString('latin1');
      if (!head.startsWith('HTTP/1.1 200')) return;
      socket.off('data', onData);
      resolve({ socket, head });
    };
    socket.on('data', onData);
    socket.on('error', reject);
    socket.on('close', () => resolve({ socket, head: buffered.toString('latin1') }));
    socket.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
  });
}

function readUntil(socket: Socket, expected: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${expected}; got ${text}`)), 5000);
    socket.on('data', (chunk: Buffer) => {
      text += chunk.toString();
      if (text.includes(expected)) {
        clearTimeout(timer);
        resolve(text);
      }
    });
  });
}

const waitFor = async (condition: () => boolean) => {
  const deadline = Date.now() + 5000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
};

describe('plain http (absolute-URI requests)', () => {
  it('forwards an allowed request, replaces Host, drops proxy headers, and reports it with its step', async () => {
    const { port, records } = await startProxy([`127.0.0.1:${webPort}`]);
    const response = await exchange(
      port,
      `POST http://127.0.0.1:${webPort}/path?q=1 HTTP/1.1\r\nHost: evil.example\r\nProxy-Authorization: Basic eA==\r\nProxy-Connection: keep-alive\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbody`,
    );
    expect(response).toMatch(/^HTTP\/1.1 200 OK\r\n/);
    expect(response).toContain('x-test: yes');
    expect(response).toContain('hello POST /path?q=1 body');
    const headers = seenHeaders.at(-1)!;
    expect(headers.host).toBe(`127.0.0.1:${webPort}`);
    expect(headers['proxy-authorization']).toBeUndefined();
    expect(headers['proxy-connection']).toBeUndefined();
    await waitFor(() => records.length === 1);
    expect(records[0]).toMatchObject({
      step: 3,
      method: 'POST',
      url: `http://127.0.0.1:${webPort}/path?q=1`,
      host: '127.0.0.1',
      port: webPort,
      ip: '127.0.0.1',
      allowed: true,
      status: 200,
    });
    expect(records[0]!.bytes_out).toBeGreaterThan(4);
    expect(records[0]!.bytes_in).toBeGreaterThan(20);
    expect(records[0]!.time).toMatch(/^\d{4}-\d\d-\d\dT/);
  });

  it('refuses a destination that is not listed with a 403 that says how to allow it', async () => {
    const { port, records } = await startProxy([`127.0.0.1:${webPort}`]);
    const response = await exchange(port, `GET http://127.0.0.1:${otherPort}/ HTTP/1.1\r\nHost: 127.0.0.1:${otherPort}\r\n\r\n`);
    expect(response).toMatch(/^HTTP\/1.1 403 Forbidden\r\n/);
    expect(response).toContain('content-type: text/plain');
    expect(response).toContain(`127.0.0.1:${otherPort} was refused: it is not in this job's network allow-list`);
    expect(response).toContain(`{"network": {"allow": ["127.0.0.1:${otherPort}"]}}`);
    expect(response).not.toContain('you should not see this');
    await waitFor(() => records.length === 1);
    expect(records[0]).toMatchObject({ method: 'GET', host: '127.0.0.1', port: otherPort, allowed: false, status: 403, bytes_in: 0, bytes_out: 0 });
    expect(records[0]!.reason).toMatch(/not in this job's network allow-list/);
  });

  it('checks the URL, not the Host header or user info', async () => {
    const { port, records } = await startProxy([`127.0.0.1:${webPort}`]);
    const withHost = await exchange(port, `GET http://127.0.0.1:${otherPort}/ HTTP/1.1\r\nHost: 127.0.0.1:${webPort}\r\n\r\n`);
    expect(withHost).toMatch(/^HTTP\/1.1 403/);
    const withUser = await exchange(port, `GET http://127.0.0.1:${webPort}@127.0.0.1:${otherPort}/ HTTP/1.1\r\nHost: x\r\n\r\n`);
    expect(withUser).toMatch(/^HTTP\/1.1 403/);
    await waitFor(() => records.length === 2);
    expect(records.every((record) => !record.allowed && record.port === otherPort)).toBe(true);
  });

  it('answers origin-form requests, https URLs and other schemes with a 400 that explains the proxy', async () => {
    const { port, records } = await startProxy([`127.0.0.1:${webPort}`]);
    expect(await exchange(port, `GET / HTTP/1.1\r\nHost: 127.0.0.1:${webPort}\r\n\r\n`)).toMatch(/^HTTP\/1.1 400[^]*egress proxy[^]*CONNECT host:port/);
    expect(await exchange(port, `GET https://127.0.0.1:${webPort}/ HTTP/1.1\r\nHost: x\r\n\r\n`)).toMatch(/^HTTP\/1.1 400[^]*through CONNECT/);
    expect(await exchange(port, `GET ftp://127.0.0.1:${webPort}/ HTTP/1.1\r\nHost: x\r\n\r\n`)).toMatch(/^HTTP\/1.1 400/);
    // Requests without a destination are not connection attempts: nothing to report.
    expect(records).toEqual([]);
  });
});

describe('CONNECT', () => {
  it('tunnels bytes both ways to an allowed host:port and reports the byte counts', async () => {
    const { port, records } = await startProxy([`127.0.0.1:${echoPort}`]);
    const { socket, head } = await openTunnel(port, `127.0.0.1:${echoPort}`);
    expect(head).toMatch(/^HTTP\/1.1 200 Connection Established/);
    socket.write('ping through the tunnel\n');
    expect(await readUntil(socket, 'ping through the tunnel\n')).toBe('ping through the tunnel\n');
    const big = 'x'.repeat(200_000);
    socket.write(big);
    await readUntil(socket, big.slice(-10));
    socket.end();
    await waitFor(() => records.length === 1);
    expect(records[0]).toMatchObject({ method: 'CONNECT', host: '127.0.0.1', port: echoPort, ip: '127.0.0.1', allowed: true, status: 200 });
    expect(records[0]!.bytes_out).toBe(24 + 200_000);
    expect(records[0]!.bytes_in).toBe(24 + 200_000);
  });

  it('refuses an unlisted destination, the proxy itself included', async () => {
    const { port, records } = await startProxy([`127.0.0.1:${echoPort}`]);
    const refused = await openTunnel(port, `127.0.0.1:${otherPort}`);
    expect(refused.head).toMatch(/^HTTP\/1.1 403 Forbidden[^]*not in this job's network allow-list/);
    const self = await openTunnel(port, `127.0.0.1:${port}`);
    expect(self.head).toMatch(/^HTTP\/1.1 403/);
    const v6 = await openTunnel(port, `[::1]:${echoPort}`);
    expect(v6.head).toMatch(/^HTTP\/1.1 403/);
    await waitFor(() => records.length === 3);
    expect(records.map((record) => record.allowed)).toEqual([false, false, false]);
  });

  it('refuses a name that resolves to a private address unless the name and port are listed', async () => {
    const wildcard = await startProxy([`*.test:${echoPort}`]);
    const refused = await openTunnel(wildcard.port, `internal.test:${echoPort}`);
    expect(refused.head).toMatch(/^HTTP\/1.1 403[^]*internal.test resolves to 127.0.0.1, a loopback address/);
    await waitFor(() => wildcard.records.length === 1);
    expect(wildcard.records[0]).toMatchObject({ host: 'internal.test', ip: '127.0.0.1', allowed: false });
    await proxy!.close();

    const exact = await startProxy([`internal.test:${echoPort}`]);
    const { socket, head } = await openTunnel(exact.port, `internal.test:${echoPort}`);
    expect(head).toMatch(/^HTTP\/1.1 200/);
    socket.write('hi\n');
    await readUntil(socket, 'hi\n');
    socket.destroy();
    await waitFor(() => exact.records.length === 1);
    expect(exact.records[0]).toMatchObject({ host: 'internal.test', ip: '127.0.0.1', allowed: true });
    // The name was resolved once, by the proxy, and the proxy connected to the address it checked.
    expect(exact.lookups).toEqual(['internal.test']);
  });

  it("explains that a job's own entry may not open a private address when it is not trusted to", async () => {
    const { port, records } = await startProxy([]);
    await proxy!.close();
    proxy = createEgressProxy({
      allow: parseAllowList([`internal.test:${echoPort}`]).map((rule) => ({ ...rule, opensPrivate: false })),
      onConnection: (record) => records.push(record),
      resolve: async () => [parseIp('127.0.0.1')!],
    });
    const untrustedPort = await proxy.listen({ host: '127.0.0.1', port: 0 });
    expect(untrustedPort).not.toBe(port);
    const refused = await openTunnel(untrustedPort, `internal.test:${echoPort}`);
    expect(refused.head).toMatch(/^HTTP\/1.1 403[^]*a job scheduled with an API key may not open such addresses[^]*WORKCELL_NETWORK_ALLOW/);
    await waitFor(() => records.length === 1);
    expect(records[0]).toMatchObject({ allowed: false, ip: '127.0.0.1' });
  });

  it('skips refused addresses of a name and connects only to the ones that pass', async () => {
    const { port, records } = await startProxy([`mixed.test:${echoPort}`, `10.0.0.1:1`]);
    const { socket, head } = await openTunnel(port, `mixed.test:${echoPort}`);
    expect(head).toMatch(/^HTTP\/1.1 200/);
    socket.destroy();
    await waitFor(() => records.length === 1);
    expect(records[0]).toMatchObject({ ip: '127.0.0.1', allowed: true });
  });

  it('answers 502 when a listed name does not resolve, and 400 for a malformed authority', async () => {
    const { port, records } = await startProxy(['nowhere.test:443']);
    const missing = await openTunnel(port, 'nowhere.test:443');
    expect(missing.head).toMatch(/^HTTP\/1.1 502 Bad Gateway[^]*cannot resolve nowhere.test: ENOTFOUND/);
    for (const authority of ['nowhere.test', '2130706433:443', 'a b:443', 'user@host:443', '[::1:443', 'host:99999']) {
      const bad = await openTunnel(port, authority);
      expect(bad.head, authority).toMatch(/^HTTP\/1.1 400/);
    }
    await waitFor(() => records.length === 1);
    expect(records[0]).toMatchObject({ host: 'nowhere.test', allowed: true, ip: null, status: 502, error: expect.stringMatching(/ENOTFOUND/) });
  });

  it('close() ends open tunnels and reports each before it resolves', async () => {
    const { port, records } = await startProxy([`127.0.0.1:${echoPort}`]);
    const { socket } = await openTunnel(port, `127.0.0.1:${echoPort}`);
    socket.write('x');
    await readUntil(socket, 'x');
    const closed = new Promise((resolve) => socket.on('close', resolve));
    await proxy!.close();
    expect(records).toHaveLength(1);
    expect(records[0]).toMatchObject({ allowed: true, bytes_in: 1, bytes_out: 1 });
    await closed;
  });

  it('closes an idle tunnel', async () => {
    const { port, records } = await startProxy([`127.0.0.1:${echoPort}`], { limits: { idleTimeoutMs: 200 } });
    const { socket } = await openTunnel(port, `127.0.0.1:${echoPort}`);
    await new Promise((resolve) => socket.on('close', resolve));
    await waitFor(() => records.length === 1);
    expect(records[0]!.error).toMatch(/idle/);
  });
});

describe('malformed and oversized requests', () => {
  it('answers a request head over the limit with 431', async () => {
    const { port } = await startProxy([`127.0.0.1:${webPort}`], { limits: { maxHeaderBytes: 1024 } });
    const response = await exchange(port, `GET http://127.0.0.1:${webPort}/ HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(4000)}\r\n\r\n`);
    expect(response).toMatch(/^HTTP\/1.1 431[^]*larger than 1024 bytes/);
  });

  it('answers garbage with 400 and a protocol upgrade with 501', async () => {
    const { port } = await startProxy([`127.0.0.1:${webPort}`]);
    expect(await exchange(port, 'this is not http\r\n\r\n')).toMatch(/^HTTP\/1.1 400[^]*malformed request/);
    expect(await exchange(port, Buffer.from([0x16, 0x03, 0x01, 0x00, 0xa5, 0x01]))).toMatch(/^HTTP\/1.1 400/);
    const upgrade = await exchange(port, `GET http://127.0.0.1:${webPort}/ HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n`);
    expect(upgrade).toMatch(/^HTTP\/1.1 501/);
  });

  it('times out a client that never finishes its request head', async () => {
    const { port } = await startProxy([`127.0.0.1:${webPort}`], { limits: { headersTimeoutMs: 300 } });
    const started = Date.now();
    const response = await exchange(port, 'GET http://127.0.0.1/ HTTP/1.1\r\nHost: x\r\n');
    expect(Date.now() - started).toBeLessThan(5000);
    expect(response).toMatch(/^HTTP\/1.1 408 Request Timeout[^]*did not arrive within 300 ms/);
  });
});

describe('on a unix socket', () => {
  it('serves CONNECT as on TCP', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'workcell-proxy-'));
    try {
      const records: ConnectionRecord[] = [];
      proxy = createEgressProxy({ allow: parseAllowList([`127.0.0.1:${echoPort}`]), onConnection: (record) => records.push(record) });
      const path = join(dir, 'proxy.sock');
      expect(await proxy.listen({ path })).toBe(0);
      const socket = connect({ path });
      socket.write(`CONNECT 127.0.0.1:${echoPort} HTTP/1.1\r\n\r\nhello`);
      expect(await readUntil(socket, 'hello')).toMatch(/^HTTP\/1.1 200 Connection Established\r\n\r\nhello$/);
      socket.destroy();
      await waitFor(() => records.length === 1);
      expect(records[0]).toMatchObject({ allowed: true, step: undefined });
    } finally {
      await proxy?.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
