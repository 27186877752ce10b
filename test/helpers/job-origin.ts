// Test helpers for a job's own origin (src/api/origins.ts): its desktop and Jupyter pages live at
// http://job-<id>.localhost:<port>. Browsers resolve *.localhost to loopback themselves; Node asks the system
// resolver, which here knows only `localhost`. So importing this module makes Node resolve *.localhost to 127.0.0.1
// as browsers do (for fetch and Node's WebSocket, which take no lookup option), and request() below connects to
// 127.0.0.1 itself.
import dns from 'node:dns';
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import type { App } from '../../src/app.ts';

const systemLookup = dns.lookup;
if (!(systemLookup as { workcellLocalhost?: boolean }).workcellLocalhost) {
  const lookup = ((hostname: string, ...rest: unknown[]) => (systemLookup as (...args: unknown[]) => void)(connectHost(hostname), ...rest)) as typeof dns.lookup;
  (lookup as { workcellLocalhost?: boolean }).workcellLocalhost = true;
  dns.lookup = lookup;
}

export interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
  text(): string;
  json<T>(): T;
}

/** Where a URL's host really is: *.localhost is loopback (as browsers have it). */
export function connectHost(hostname: string): string {
  return hostname === 'localhost' || hostname.endsWith('.localhost') ? '127.0.0.1' : hostname;
}

/** One HTTP request, no redirects followed; any URL, *.localhost included. */
export function request(url: string, init: { method?: string; headers?: Record<string, string>; body?: string | Buffer } = {}): Promise<Answer> {
  const target = new URL(url);
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      { host: connectHost(target.hostname), port: target.port, path: `${target.pathname}${target.search}`, method: init.method ?? 'GET', headers: { host: target.host, ...init.headers } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('error', reject);
        res.on('end', () => {
          const body = Buffer.concat(chunks);
          resolve({ status: res.statusCode!, headers: res.headers, body, text: () => body.toString('utf8'), json: <T>() => JSON.parse(body.toString('utf8')) as T });
        });
      },
    );
    req.on('error', reject);
    req.end(init.body);
  });
}

/**
 * Opens a job's page the way a person does: a link from POST /jobs/:id/links (with `key` when the server has keys),
 * traded on the job's host for a session cookie. Returns the job's origin, the cookie and where the trade sent us.
 */
export async function openPage(app: App, jobId: string, service: 'desktop' | 'jupyter', key?: string): Promise<{ origin: string; cookie: string; location: string }> {
  const made = await request(`${app.url}/jobs/${jobId}/links`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(key === undefined ? {} : { authorization: `Bearer ${key}` }) },
    body: JSON.stringify({ service }),
  });
  if (made.status !== 201) throw new Error(`POST /jobs/${jobId}/links: ${made.status} ${made.text()}`);
  const link = new URL(made.json<{ url: string }>().url);
  const traded = await request(link.href);
  if (traded.status !== 303) throw new Error(`the link was not traded: ${traded.status} ${traded.text()}`);
  const cookie = traded.headers['set-cookie']?.[0]?.split(';')[0];
  if (cookie === undefined) throw new Error('the link set no cookie');
  return { origin: link.origin, cookie, location: String(traded.headers.location) };
}
