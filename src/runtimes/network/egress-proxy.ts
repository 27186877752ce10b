// The egress proxy: a sandbox's one way out. It runs in the worker (host side), one per sandbox, and listens on a
// unix socket that the runtime puts in the sandbox (bwrap: a read-only bind; sandboxd bridges 127.0.0.1:3128 to it).
// It speaks the two things HTTP clients send a proxy when HTTP_PROXY/HTTPS_PROXY point at it:
//   - `CONNECT host:port` (https, and any TCP protocol a client tunnels): a blind byte tunnel once allowed;
//   - absolute-URI requests (`GET http://host/path`): plain http, forwarded on a fresh connection per request.
// Each destination is checked against the allow-list (allow-list.ts), the name is resolved here (the sandbox has no
// DNS) by a bounded c-ares resolver of the proxy's own (dns-resolver.ts: never dns.lookup, whose thread pool the whole
// server shares), every resolved address is classified and non-public ones refused unless listed exactly, and the
// proxy then connects to the very address it checked (never the name again, so DNS rebinding gains nothing).
// Everything else (origin-form requests, other schemes, upgrades, malformed or oversized requests) gets a 4xx with a
// text body that says what to do. Every attempt with a destination is reported once, when it ends, to onConnection (the audit log).
// It must never become an open relay: it listens only where the runtime puts it, forwards only to allowed
// destinations, and rewrites Host to the destination it checked.
import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { errorMessage } from '../../errors.ts';
import { addressVerdict, formatDestination, matchingRules, parseDestination, type AllowRule, type Destination } from './allow-list.ts';
import { createDnsResolver, type DnsResolverOptions } from './dns-resolver.ts';
import { formatIp, type IpAddress } from './ip-address.ts';

/** One connection attempt through the proxy, reported when it ends (denied ones at once). */
export interface ConnectionRecord {
  /** When the request arrived (ISO 8601). */
  time: string;
  /** The agent's step when it arrived, when the proxy was given a currentStep getter. */
  step: number | undefined;
  /** `CONNECT` for tunnels, else the HTTP method of a plain-http request. */
  method: string;
  /** The absolute URL of a plain-http request (without user info; at most 2048 characters). */
  url?: string;
  host: string;
  port: number;
  /** The address connected to (or refused); null when the name did not resolve. */
  ip: string | null;
  /** Whether the allow-list let it through. */
  allowed: boolean;
  /** Why it was refused (allowed false). */
  reason?: string;
  /** Why an allowed connection failed (no such name, refused, timeout). */
  error?: string;
  /** The status line the proxy answered with (200 for an established tunnel). */
  status: number;
  /** Bytes received from the destination. */
  bytes_in: number;
  /** Bytes sent to the destination. */
  bytes_out: number;
  duration_ms: number;
}

export interface EgressProxyLimits {
  /** Largest request head (request line and headers) accepted; larger gets a 431. */
  maxHeaderBytes: number;
  /** Time a client has to send a complete request head. */
  headersTimeoutMs: number;
  /** A connection (tunnel or plain http) with no traffic either way for this long is closed. */
  idleTimeoutMs: number;
  connectTimeoutMs: number;
  resolveTimeoutMs: number;
  /** Client connections open at once; more are dropped. */
  maxConnections: number;
}

export const defaultProxyLimits: EgressProxyLimits = {
  maxHeaderBytes: 16 * 1024,
  headersTimeoutMs: 15_000,
  idleTimeoutMs: 300_000,
  connectTimeoutMs: 10_000,
  resolveTimeoutMs: 10_000,
  maxConnections: 256,
};

/** Resolves a name to its addresses, giving up when `signal` aborts (tests substitute their own). */
export type Resolver = (host: string, signal: AbortSignal) => Promise<IpAddress[]>;

export interface EgressProxyOptions {
  allow: readonly AllowRule[];
  onConnection?: (record: ConnectionRecord) => void;
  /** The agent's current step, read when a request arrives, so each record is linked to the step that made it. */
  currentStep?: () => number;
  /** Default: a c-ares resolver of the proxy's own (dns-resolver.ts, with `dns`), closed with the proxy. */
  resolve?: Resolver;
  dns?: DnsResolverOptions;
  limits?: Partial<EgressProxyLimits>;
  logger?: Pick<Logger, 'debug' | 'warn'>;
}

export interface EgressProxy {
  readonly server: Server;
  /** Listens on a unix socket path or a TCP address; resolves with the TCP port (0 for a socket). */
  listen(target: { path: string } | { host: string; port: number }): Promise<number>;
  /** Stops listening, ends every open connection and resolves once each has been reported. Idempotent. */
  close(): Promise<void>;
}

const hopByHop = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authorization', 'proxy-authenticate', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'host']);

const usage =
  'This is workcell\'s egress proxy. Send "CONNECT host:port HTTP/1.1" (https and other TCP) or an absolute-URI request ' +
  'such as "GET http://host/path HTTP/1.1"; HTTP clients do this by themselves when HTTP_PROXY and HTTPS_PROXY are set.';

/** The body of a 403: which destination, that it is not allowed, and how the job owner can allow it. */
export function deniedMessage(destination: Pick<Destination, 'host' | 'port'>, why: string): string {
  const target = formatDestination(destination);
  return (
    `workcell: the connection to ${target} was refused: ${why}.\n` +
    'This sandbox reaches the network only through workcell\'s egress proxy, and only the destinations its job allows.\n' +
    `The job owner can allow it by scheduling the job with {"network": {"allow": ["${target}"]}} in POST /schedule ` +
    '(a bare host allows ports 80 and 443; "*.example.com" allows subdomains), or the server operator by adding it to WORKCELL_NETWORK_ALLOW.\n'
  );
}

function rawResponse(status: number, reason: string, body: string): string {
  return `HTTP/1.1 ${status} ${reason}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`;
}

function withTimeout<T>(promise: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${timeoutMs} ms`)), timeoutMs);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Connects to the first address that answers, trying them in order. */
function connectFirst(addresses: readonly IpAddress[], port: number, timeoutMs: number): Promise<{ socket: Socket; address: IpAddress }> {
  const attempt = (address: IpAddress) =>
    new Promise<Socket>((resolve, reject) => {
      const socket = connect({ host: formatIp(address), port, family: address.family });
      const timer = setTimeout(() => socket.destroy(new Error(`connecting timed out after ${timeoutMs} ms`)), timeoutMs);
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.off('error', reject);
        resolve(socket);
      });
      socket.once('error', (error) => {
        clearTimeout(timer);
        reject(error);
      });
    });
  return (async () => {
    let lastError: unknown = new Error('no address to connect to');
    for (const address of addresses.slice(0, 4)) {
      try {
        return { socket: await attempt(address), address };
      } catch (error) {
        lastError = error;
      }
    }
    throw lastError;
  })();
}

type Decision =
  | { allowed: true; addresses: IpAddress[] }
  | { allowed: false; status: 403; reason: string; ip: string | null }
  | { allowed: true; failed: true; status: 502 | 504; error: string };

export function createEgressProxy(options: EgressProxyOptions): EgressProxy {
  const limits = { ...defaultProxyLimits, ...options.limits };
  const dns = options.resolve === undefined ? createDnsResolver(options.dns) : undefined;
  const resolve: Resolver = options.resolve ?? ((host, signal) => dns!.resolve(host, signal));
  const log = options.logger;
  const sockets = new Set<Duplex>();
  const exchanges = new Set<Promise<void>>();
  let closing: Promise<void> | undefined;

  const track = (socket: Duplex) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  };

  const report = (record: ConnectionRecord) => {
    log?.debug({ egress: record }, record.allowed ? 'egress connection' : 'egress refused');
    try {
      options.onConnection?.(record);
    } catch (error) {
      log?.warn({ err: error }, 'recording an egress connection failed');
    }
  };

  /** Runs one exchange, keeping it in `exchanges` until it has been reported. */
  const run = (work: () => Promise<void>) => {
    const done = work().catch((error: unknown) => log?.warn({ err: error }, 'egress proxy exchange failed'));
    exchanges.add(done);
    void done.finally(() => exchanges.delete(done));
  };

  async function decide(destination: Destination): Promise<Decision> {
    const matching = matchingRules(options.allow, destination);
    if (matching.length === 0) {
      return { allowed: false, status: 403, reason: "it is not in this job's network allow-list", ip: destination.ip === undefined ? null : formatIp(destination.ip) };
    }
    let addresses: IpAddress[];
    if (destination.ip !== undefined) addresses = [destination.ip];
    else {
      const deadline = new AbortController();
      try {
        addresses = await withTimeout(resolve(destination.host, deadline.signal), limits.resolveTimeoutMs, `resolving ${destination.host}`);
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        const timedOut = code === 'ETIMEOUT' || /timed out/.test(errorMessage(error));
        return { allowed: true, failed: true, status: timedOut ? 504 : 502, error: `cannot resolve ${destination.host}: ${timedOut ? `no answer from DNS in time (${code ?? `${limits.resolveTimeoutMs} ms`})` : (code ?? errorMessage(error))}` };
      } finally {
        // A lookup still waiting for a slot gives it up.
        deadline.abort();
      }
      if (addresses.length === 0) return { allowed: true, failed: true, status: 502, error: `cannot resolve ${destination.host}: no addresses` };
    }
    const usable: IpAddress[] = [];
    let refused: { address: IpAddress; kind: string } | undefined;
    for (const address of addresses) {
      const verdict = addressVerdict(options.allow, destination, address);
      if (verdict.ok) usable.push(address);
      else refused ??= { address, kind: verdict.class };
    }
    if (usable.length === 0 && refused !== undefined) {
      const ip = formatIp(refused.address);
      const what = destination.ip === undefined ? `${destination.host} resolves to ${ip}, a ${refused.kind} address` : `${ip} is a ${refused.kind} address`;
      const exact = destination.ip === undefined ? `"${formatDestination(destination)}" or "${formatDestination({ host: ip, port: destination.port })}"` : `"${formatDestination(destination)}"`;
      const untrusted = matching.every((rule) => rule.opensPrivate === false);
      const how = untrusted
        ? `and a job scheduled with an API key may not open such addresses: only the server's WORKCELL_NETWORK_ALLOW may (or WORKCELL_NETWORK_JOB_PRIVATE=true)`
        : `and such addresses are reached only when listed exactly (${exact})`;
      return { allowed: false, status: 403, reason: `${what}, ${how}`, ip };
    }
    return { allowed: true, addresses: usable };
  }

  /** A connection's audit record, filled in as it goes, and finish() that times and reports it once it ends. */
  function openRecord(fields: Pick<ConnectionRecord, 'method' | 'url' | 'host' | 'port'>): { record: ConnectionRecord; finish: () => void } {
    const started = performance.now();
    const record: ConnectionRecord = { time: new Date().toISOString(), step: options.currentStep?.(), ...fields, ip: null, allowed: false, status: 0, bytes_in: 0, bytes_out: 0, duration_ms: 0 };
    return {
      record,
      finish: () => {
        record.duration_ms = Math.round(performance.now() - started);
        report(record);
      },
    };
  }

  function handleConnect(request: IncomingMessage, client: Socket, head: Buffer): void {
    track(client);
    client.on('error', () => client.destroy());
    client.pause();
    const { record, finish } = openRecord({ method: 'CONNECT', host: '', port: 0 });
    const answer = (status: number, reason: string, body: string) => {
      record.status = status;
      if (client.writable) client.end(rawResponse(status, reason, body));
      else client.destroy();
    };

    const authority = /^(?:\[([0-9a-fA-F:.]+)\]|([^\s:[\]/@]+)):(\d{1,5})$/.exec(request.url ?? '');
    const destination = authority === null ? undefined : parseDestination(authority[1] ?? authority[2] ?? '', Number(authority[3]));
    if (destination === undefined) {
      // No destination to report: a malformed request is not a connection attempt.
      answer(400, 'Bad Request', `workcell: CONNECT needs host:port (a DNS name or an IP address, IPv6 in brackets), not ${JSON.stringify((request.url ?? '').slice(0, 200))}.\n${usage}\n`);
      return;
    }
    record.host = destination.host;
    record.port = destination.port;

    run(async () => {
      const decision = await decide(destination);
      if (!decision.allowed) {
        record.ip = decision.ip;
        record.reason = decision.reason;
        answer(403, 'Forbidden', deniedMessage(destination, decision.reason));
        return finish();
      }
      record.allowed = true;
      if ('failed' in decision) {
        record.error = decision.error;
        answer(decision.status, decision.status === 504 ? 'Gateway Timeout' : 'Bad Gateway', `workcell: ${decision.error}.\n`);
        return finish();
      }
      if (client.destroyed) {
        record.error = 'the client went away before the tunnel was open';
        return finish();
      }
      let upstream: Socket;
      try {
        const connected = await connectFirst(decision.addresses, destination.port, limits.connectTimeoutMs);
        upstream = connected.socket;
        record.ip = formatIp(connected.address);
      } catch (error) {
        record.ip = formatIp(decision.addresses[0]!);
        record.error = `cannot connect to ${formatDestination(destination)}: ${(error as NodeJS.ErrnoException).code ?? errorMessage(error)}`;
        const timedOut = /timed out/.test(errorMessage(error));
        answer(timedOut ? 504 : 502, timedOut ? 'Gateway Timeout' : 'Bad Gateway', `workcell: ${record.error}.\n`);
        return finish();
      }
      track(upstream);
      if (client.destroyed) {
        upstream.destroy();
        record.error = 'the client went away before the tunnel was open';
        return finish();
      }
      record.status = 200;
      await new Promise<void>((resolveTunnel) => {
        let ended = 0;
        const close = () => {
          client.destroy();
          upstream.destroy();
        };
        const onClose = () => {
          if (++ended === 2) resolveTunnel();
          else close();
        };
        // A tunnel is one connection: when either side is done for good, the other is closed too (half-closes pass).
        upstream.once('close', onClose);
        client.once('close', onClose);
        upstream.on('error', close);
        client.on('error', close);
        for (const socket of [client, upstream]) {
          socket.setTimeout(limits.idleTimeoutMs, () => {
            record.error = `idle for ${limits.idleTimeoutMs} ms: closed`;
            close();
          });
        }
        upstream.setNoDelay(true);
        client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
        if (head.length > 0) upstream.write(head);
        client.pipe(upstream);
        upstream.pipe(client);
        client.resume();
      });
      record.bytes_in = upstream.bytesRead;
      record.bytes_out = upstream.bytesWritten;
      finish();
    });
  }

  function handleRequest(request: IncomingMessage, response: ServerResponse): void {
    const fail = (status: number, body: string): void => {
      if (response.headersSent) {
        response.destroy();
        return;
      }
      response.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(body), connection: 'close' });
      response.end(body);
    };
    const target = request.url ?? '';
    if (!/^http:\/\//i.test(target)) {
      const https = /^https:\/\//i.test(target);
      return fail(400, https ? `workcell: send https through CONNECT (HTTPS_PROXY does this), not as ${request.method} ${target.slice(0, 200)}.\n` : `workcell: ${usage}\n`);
    }
    let url: URL;
    try {
      url = new URL(target);
    } catch {
      return fail(400, `workcell: ${JSON.stringify(target.slice(0, 200))} is not a valid URL.\n`);
    }
    const hostname = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
    const destination = parseDestination(hostname, url.port === '' ? 80 : Number(url.port));
    if (destination === undefined) return fail(400, `workcell: ${JSON.stringify(url.host)} is not a valid host.\n`);
    url.username = '';
    url.password = '';
    const { record, finish } = openRecord({ method: request.method ?? 'GET', url: url.href.slice(0, 2048), host: destination.host, port: destination.port });

    run(async () => {
      const decision = await decide(destination);
      if (!decision.allowed) {
        record.ip = decision.ip;
        record.reason = decision.reason;
        record.status = 403;
        fail(403, deniedMessage(destination, decision.reason));
        return finish();
      }
      record.allowed = true;
      if ('failed' in decision) {
        record.error = decision.error;
        record.status = decision.status;
        fail(decision.status, `workcell: ${decision.error}.\n`);
        return finish();
      }
      let socket: Socket;
      try {
        const connected = await connectFirst(decision.addresses, destination.port, limits.connectTimeoutMs);
        socket = connected.socket;
        record.ip = formatIp(connected.address);
      } catch (error) {
        record.ip = formatIp(decision.addresses[0]!);
        record.error = `cannot connect to ${formatDestination(destination)}: ${(error as NodeJS.ErrnoException).code ?? errorMessage(error)}`;
        record.status = /timed out/.test(errorMessage(error)) ? 504 : 502;
        fail(record.status, `workcell: ${record.error}.\n`);
        return finish();
      }
      track(socket);
      await new Promise<void>((resolveExchange) => {
        // The Connection header names more hop-by-hop headers.
        const named = new Set(
          String(request.headers.connection ?? '')
            .split(',')
            .map((name) => name.trim().toLowerCase()),
        );
        const headers: string[] = [];
        for (let i = 0; i + 1 < request.rawHeaders.length; i += 2) {
          const name = request.rawHeaders[i]!;
          if (!hopByHop.has(name.toLowerCase()) && !named.has(name.toLowerCase())) headers.push(name, request.rawHeaders[i + 1]!);
        }
        // A proxy replaces Host with the target it checked (RFC 9112 §3.2.2): no virtual-host confusion.
        headers.unshift('Host', url.host);
        const upstream = httpRequest({
          createConnection: () => socket,
          method: request.method,
          path: `${url.pathname}${url.search}`,
          headers,
          setHost: false,
        });
        const done = () => {
          record.bytes_in = socket.bytesRead;
          record.bytes_out = socket.bytesWritten;
          socket.destroy();
          resolveExchange();
        };
        upstream.setTimeout(limits.idleTimeoutMs, () => upstream.destroy(new Error(`idle for ${limits.idleTimeoutMs} ms`)));
        upstream.on('response', (answer) => {
          const answerHeaders: string[] = [];
          const answerNamed = new Set(
            String(answer.headers.connection ?? '')
              .split(',')
              .map((name) => name.trim().toLowerCase()),
          );
          for (let i = 0; i + 1 < answer.rawHeaders.length; i += 2) {
            const name = answer.rawHeaders[i]!;
            if (!hopByHop.has(name.toLowerCase()) && !answerNamed.has(name.toLowerCase())) answerHeaders.push(name, answer.rawHeaders[i + 1]!);
          }
          record.status = answer.statusCode ?? 502;
          response.writeHead(record.status, answer.statusMessage, answerHeaders);
          answer.pipe(response);
          answer.on('error', () => response.destroy());
        });
        upstream.on('error', (error) => {
          record.error ??= `${formatDestination(destination)}: ${errorMessage(error)}`;
          if (!response.headersSent) {
            record.status = 502;
            fail(502, `workcell: ${record.error}.\n`);
          } else response.destroy();
        });
        response.once('close', () => {
          if (!response.writableFinished) upstream.destroy();
          done();
        });
        request.pipe(upstream);
      });
      finish();
    });
  }

  const server = createServer(
    {
      maxHeaderSize: limits.maxHeaderBytes,
      headersTimeout: limits.headersTimeoutMs,
      connectionsCheckingInterval: Math.max(100, Math.min(1000, Math.floor(limits.headersTimeoutMs / 2))),
      // Uploads may take long; idleness is what ends a connection.
      requestTimeout: 0,
      keepAliveTimeout: 5_000,
      // The destination is the request target; Host is replaced anyway.
      requireHostHeader: false,
    },
    handleRequest,
  );
  server.maxConnections = limits.maxConnections;
  server.timeout = limits.idleTimeoutMs;
  server.on('connection', track);
  // Node hands over the client's net.Socket (typed as a Duplex for other transports).
  server.on('connect', (request: IncomingMessage, client: Duplex, head: Buffer) => handleConnect(request, client as Socket, head));
  server.on('upgrade', (_request: IncomingMessage, socket: Duplex) => {
    socket.end(rawResponse(501, 'Not Implemented', 'workcell: protocol upgrades through plain http are not supported: use CONNECT (wss://, https://).\n'));
  });
  server.on('clientError', (error: NodeJS.ErrnoException, socket: Duplex) => {
    if (!socket.writable || error.code === 'ECONNRESET') return socket.destroy();
    if (error.code === 'HPE_HEADER_OVERFLOW') {
      return socket.end(rawResponse(431, 'Request Header Fields Too Large', `workcell: the request head is larger than ${limits.maxHeaderBytes} bytes.\n`));
    }
    if (error.code === 'ERR_HTTP_REQUEST_TIMEOUT' || error.code === 'ERR_HTTP_HEADERS_TIMEOUT') {
      return socket.end(rawResponse(408, 'Request Timeout', `workcell: the request head did not arrive within ${limits.headersTimeoutMs} ms.\n`));
    }
    socket.end(rawResponse(400, 'Bad Request', `workcell: malformed request (${error.code ?? 'parse error'}). ${usage}\n`));
  });

  return {
    server,
    listen(target) {
      return new Promise((resolveListen, reject) => {
        server.once('error', reject);
        server.listen(target, () => {
          server.off('error', reject);
          const address = server.address();
          resolveListen(typeof address === 'object' && address !== null ? address.port : 0);
        });
      });
    },
    close() {
      return (closing ??= (async () => {
        const closed = server.listening ? new Promise<void>((resolveClose) => server.close(() => resolveClose())) : Promise.resolve();
        for (const socket of sockets) socket.destroy();
        server.closeAllConnections();
        // Lookups in flight end at once (ECANCELLED), so their exchanges can be reported.
        dns?.close();
        await Promise.allSettled([...exchanges]);
        await closed;
      })());
    },
  };
}
