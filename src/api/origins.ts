// Which Host and Origin the API answers to, and where a job's sandbox pages live. Two kinds of host reach this
// server: the API's own (loopback names, WORKCELL_PUBLIC_URL's host, WORKCELL_ALLOWED_HOSTS) and one host per job for
// the pages its sandbox serves (the noVNC desktop, Jupyter: WORKCELL_SANDBOX_URL, by default job-<id>.localhost).
// Pages from a sandbox are written by whoever controls the sandbox, so they must never run with the API's origin:
// on a host of their own, a sandbox page can reach neither the API's cookies nor its routes (the Origin check
// below refuses it), nor another job's pages (each job is another site).
//
// Any other Host is refused (DNS rebinding: a page whose name was pointed at this server sends its own name), and a
// request that a browser sends from another origin (Origin, Sec-Fetch-Site) is refused unless it is a plain
// top-level navigation: with or without API keys, no web page can drive this server through a visitor's browser.
// Nothing here may throw on any header value.
import type { IncomingHttpHeaders } from 'node:http';
import type { Config } from '../config.ts';
import { isJobId } from '../util/ids.ts';

export type HostClass = { kind: 'api' } | { kind: 'sandbox'; jobId: string } | { kind: 'refused'; reason: string };

/** The label a job gets in sandbox host names: job ids carry `_`, which host names may not. */
export const sandboxLabel = (jobId: string) => jobId.replace('_', '-');
const labelPattern = /^job-([0-9a-hjkmnp-tv-z]{26})$/;

/** A Host header split into name and port (lower case, brackets kept for IPv6); undefined when it is malformed. */
export function parseHost(value: string | undefined): { name: string; port: string | undefined } | undefined {
  if (value === undefined || value.length > 300) return undefined;
  const match = /^(\[[0-9a-f:.]+\]|[a-z0-9._-]+)(?::(\d{1,5}))?$/i.exec(value.trim());
  if (!match) return undefined;
  return { name: match[1]!.toLowerCase().replace(/\.$/, ''), port: match[2] };
}

/** Loopback names: localhost, 127.0.0.0/8, ::1 (bracketed in a Host header). */
export function isLoopbackName(name: string): boolean {
  return name === 'localhost' || name === '::1' || name === '[::1]' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(name);
}

export class HostPolicy {
  readonly #apiHosts: Set<string>;
  readonly #publicOrigin: string | undefined;
  /** The sandbox URL template's parts: scheme, the host after `{job}.`, and its port (if it names one). */
  readonly #sandbox: { scheme: 'http' | 'https'; suffix: string; port: string | undefined } | undefined;

  constructor(config: Pick<Config, 'publicUrl' | 'allowedHosts' | 'sandboxUrl'>) {
    this.#apiHosts = new Set(config.allowedHosts);
    if (config.publicUrl !== undefined) {
      const url = new URL(config.publicUrl);
      this.#apiHosts.add(url.hostname.toLowerCase());
      this.#publicOrigin = url.host.toLowerCase();
    }
    if (config.sandboxUrl !== undefined) {
      const url = new URL(config.sandboxUrl.replace('{job}', 'job'));
      this.#sandbox = { scheme: url.protocol === 'https:' ? 'https' : 'http', suffix: url.hostname.toLowerCase().slice('job.'.length), port: url.port || undefined };
    }
  }

  /** Whether the API answers to this host name on its own routes. */
  isApiHost(name: string): boolean {
    return isLoopbackName(name) || this.#apiHosts.has(name);
  }

  /** Whether sandbox pages are served at all: a configured WORKCELL_SANDBOX_URL, or the default under localhost. */
  classify(hostHeader: string | undefined): HostClass {
    const host = parseHost(hostHeader);
    if (host === undefined) return { kind: 'refused', reason: `the Host header ${JSON.stringify(String(hostHeader ?? '').slice(0, 100))} is missing or malformed` };
    const dot = host.name.indexOf('.');
    const label = labelPattern.exec(dot === -1 ? '' : host.name.slice(0, dot));
    if (label) {
      const suffix = host.name.slice(dot + 1);
      const jobId = `job_${label[1]!}`;
      if (isJobId(jobId) && suffix === (this.#sandbox?.suffix ?? 'localhost')) return { kind: 'sandbox', jobId };
    }
    if (this.isApiHost(host.name)) return { kind: 'api' };
    return {
      kind: 'refused',
      reason: `this server does not answer to the host name ${JSON.stringify(host.name)}: reach it by a loopback name or the host of WORKCELL_PUBLIC_URL, or add the name to WORKCELL_ALLOWED_HOSTS`,
    };
  }

  /**
   * Whether a browser request may proceed: refused when it comes from another origin (its Origin is not the host it
   * was sent to, nor WORKCELL_PUBLIC_URL's origin for API hosts), or Sec-Fetch-Site says another site sent it and it is
   * not a top-level GET navigation (a link the person followed). Requests without these headers (curl, the CLI) pass.
   */
  checkOrigin(headers: IncomingHttpHeaders, method: string, hostClass: HostClass): string | undefined {
    const origin = headers.origin;
    if (typeof origin === 'string') {
      const host = originHost(origin);
      const own = typeof headers.host === 'string' ? headers.host.trim().toLowerCase() : undefined;
      const allowed = host !== undefined && (host === own || (hostClass.kind === 'api' && host === this.#publicOrigin));
      if (!allowed) return `requests from the web page at ${JSON.stringify(origin.slice(0, 200))} are refused: only pages of this server's own origin may call it`;
    }
    const site = headers['sec-fetch-site'];
    if (site === 'cross-site' || site === 'same-site') {
      const navigation = headers['sec-fetch-mode'] === 'navigate' && (method === 'GET' || method === 'HEAD');
      if (!navigation) return `a ${site} request from a web page is refused: only pages of this server's own origin may call it`;
    }
    return undefined;
  }

  /**
   * The origin that serves a job's sandbox pages. `requestHost` is the Host the API was reached by: without
   * WORKCELL_SANDBOX_URL the pages live at http://job-<id>.localhost on that port (browsers resolve *.localhost to
   * loopback themselves), which only makes sense for a server reached on loopback.
   */
  sandboxOrigin(jobId: string, requestHost: string | undefined): { origin: string; secure: boolean } | { error: string } {
    if (this.#sandbox !== undefined) {
      const port = this.#sandbox.port === undefined ? '' : `:${this.#sandbox.port}`;
      return { origin: `${this.#sandbox.scheme}://${sandboxLabel(jobId)}.${this.#sandbox.suffix}${port}`, secure: this.#sandbox.scheme === 'https' };
    }
    const host = parseHost(requestHost);
    if (host === undefined || !isLoopbackName(host.name)) {
      return { error: 'desktop and Jupyter pages are served on a host of their own per job: set WORKCELL_SANDBOX_URL (e.g. https://{job}.sandbox.example.com, with a wildcard DNS name and certificate) to serve them to other machines' };
    }
    return { origin: `http://${sandboxLabel(jobId)}.localhost${host.port === undefined ? '' : `:${host.port}`}`, secure: false };
  }
}

/** host[:port] of an Origin header value, lower case; undefined for "null" and anything that is not an origin. */
function originHost(origin: string): string | undefined {
  const match = /^https?:\/\/([^/?#\s]+)$/i.exec(origin.trim());
  return match?.[1]?.toLowerCase();
}
