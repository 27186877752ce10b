// Delivers the webhook outbox (store/types.ts WebhookOutbox): each job status change as a signed JSON POST (signature.ts) to the job's
// callback_url or the server's WORKCELL_CALLBACK_URL, in order per job. An attempt that fails with a network error, a
// timeout, a 5xx or a 429 is tried again after an exponential backoff with jitter (a longer Retry-After wins), up to
// WORKCELL_CALLBACK_MAX_ATTEMPTS; a 3xx (redirects are never followed) or another 4xx, and a destination the policy
// refuses, end the delivery at once. The event id is the same on every attempt; the timestamp and signature are new.
// Every attempt resolves the host once and connects to the address callback-url.ts checked, with a short timeout, and
// reads at most a few KiB of the answer (only for the log). It must never follow a redirect, never send to an address
// the policy refused, and never log the secret.
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { LookupFunction } from 'node:net';
import type { Logger } from 'pino';
import { errorMessage } from '../../errors.ts';
import { formatIp, type IpAddress } from '../../runtimes/network/ip-address.ts';
import { version } from '../../version.ts';
import type { CallbackPolicy} from './callback-url.ts';
import { parseCallbackUrl, type CheckedCallback } from './callback-url.ts';
import type { OutboxRow, WebhookOutbox } from '../../store/types.ts';
import { signatureHeaders, webhookKey } from './signature.ts';

export interface WebhookSenderOptions {
  outbox: WebhookOutbox;
  policy: CallbackPolicy;
  /** WORKCELL_CALLBACK_URL: where jobs without their own callback_url send (trusted: it may be private). */
  serverUrl: string | undefined;
  /** WORKCELL_CALLBACK_SECRET ("whsec_..."); without it nothing is sent (deliveries wait). */
  secret: string | undefined;
  maxAttempts: number;
  retryBaseMs: number;
  timeoutMs: number;
  /** The API's base URL, for download_url. */
  baseUrl: () => string;
  workerId: string;
  logger: Pick<Logger, 'info' | 'warn' | 'error' | 'debug'>;
  /** Deliveries in flight at once (each of a different job). */
  concurrency?: number;
  /** How often to look for due deliveries at most; they are also looked for when one is due. */
  pollMs?: number;
  now?: () => number;
  random?: () => number;
}

/** What a receiver gets: the job's status change. */
export interface WebhookPayload {
  event_id: string;
  type: 'job.status';
  job_id: string;
  status: string;
  previous_status?: string;
  /** The change is a reopening: a message continued the finished job (status pending, previous the old outcome). */
  reopened?: true;
  run: number;
  time: string;
  error?: string;
  summary?: string;
  download_url?: string;
}

/** An attempt's outcome. */
export type AttemptResult = { ok: true; status: number } | { ok: false; retry: boolean; error: string; retryAfterMs?: number | undefined };

const maxRetryDelayMs = 3_600_000;
/** Deliveries that ended (delivered or given up) are kept this long for inspection, then pruned (checked hourly). */
const endedKeptMs = 7 * 86_400_000;
const responseBytesRead = 4096;
const finishedStatuses = new Set(['complete', 'error', 'cancelled']);

export function webhookPayload(row: OutboxRow, baseUrl: string): WebhookPayload {
  return {
    event_id: row.event_id,
    type: 'job.status',
    job_id: row.job_id,
    status: row.status,
    ...(row.previous_status === null ? {} : { previous_status: row.previous_status }),
    ...(row.status === 'pending' && row.previous_status !== null && finishedStatuses.has(row.previous_status) ? { reopened: true as const } : {}),
    run: row.run,
    time: row.time,
    ...(row.error === null ? {} : { error: row.error }),
    ...(row.summary === null ? {} : { summary: row.summary }),
    ...(row.status === 'complete' ? { download_url: `${baseUrl.replace(/\/$/, '')}/jobs/${row.job_id}/artifacts.zip` } : {}),
  };
}

/** The delay before attempt `attempt + 1` after `attempt` failed ones: base * 2^(attempt-1), then 50-100 % of it. */
export function retryDelayMs(attempt: number, baseMs: number, random: () => number, retryAfterMs?: number): number {
  const exponential = Math.min(maxRetryDelayMs, baseMs * 2 ** Math.max(0, attempt - 1));
  const jittered = Math.round(exponential * (0.5 + random() / 2));
  return Math.min(maxRetryDelayMs, Math.max(jittered, retryAfterMs ?? 0));
}

function parseRetryAfter(header: string | undefined, now: number): number | undefined {
  if (header === undefined) return undefined;
  if (/^\d+$/.test(header.trim())) return Number(header.trim()) * 1000;
  const date = Date.parse(header);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

/** One POST to `address` (already checked) for the URL's host; never throws. */
export async function postOnce(target: CheckedCallback, address: IpAddress, headers: Record<string, string>, body: string, timeoutMs: number, signal: AbortSignal): Promise<AttemptResult> {
  const { url } = target;
  const lookup: LookupFunction = (_host, options, callback) => {
    if (options.all === true) callback(null, [{ address: formatIp(address), family: address.family }]);
    else callback(null, formatIp(address), address.family);
  };
  const request = url.protocol === 'https:' ? httpsRequest : httpRequest;
  const abort = AbortSignal.any([signal, AbortSignal.timeout(timeoutMs)]);
  return new Promise<AttemptResult>((resolve) => {
    let settled = false;
    const settle = (result: AttemptResult) => {
      if (settled) return;
      settled = true;
      resolve(result);
    };
    const outgoing = request(
      url,
      {
        method: 'POST',
        agent: false,
        lookup,
        signal: abort,
        headers: { ...headers, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'user-agent': `workcell/${version}` },
      },
      (response: IncomingMessage) => {
        const status = response.statusCode ?? 0;
        let text = '';
        response.setEncoding('utf8');
        response.on('data', (chunk: string) => {
          if (text.length < responseBytesRead) text += chunk.slice(0, responseBytesRead - text.length);
          if (text.length >= responseBytesRead) response.destroy();
        });
        response.on('error', () => undefined);
        const done = () => {
          const excerpt = text.trim().replace(/\s+/g, ' ').slice(0, 300);
          if (status >= 200 && status < 300) return settle({ ok: true, status });
          const said = `HTTP ${status}${excerpt === '' ? '' : `: ${excerpt}`}`;
          if (status === 429 || status >= 500) return settle({ ok: false, retry: true, error: said, retryAfterMs: parseRetryAfter(response.headers['retry-after'], Date.now()) });
          if (status >= 300 && status < 400) return settle({ ok: false, retry: false, error: `${said} (redirects are not followed: give the final URL)` });
          settle({ ok: false, retry: false, error: said });
        };
        response.on('end', done);
        response.on('close', done);
      },
    );
    outgoing.on('error', (error) => {
      const timedOut = abort.aborted && !signal.aborted;
      settle({ ok: false, retry: true, error: timedOut ? `no answer within ${timeoutMs} ms` : `${(error as NodeJS.ErrnoException).code ?? errorMessage(error)}` });
    });
    outgoing.end(body);
  });
}

export class WebhookSender {
  readonly #options: WebhookSenderOptions;
  readonly #now: () => number;
  readonly #random: () => number;
  readonly #inFlight = new Map<number, Promise<void>>();
  readonly #stopping = new AbortController();
  #timer: NodeJS.Timeout | undefined;
  #started = false;
  #ticking = false;
  #again = false;
  #prunedAt = 0;

  constructor(options: WebhookSenderOptions) {
    this.#options = options;
    this.#now = options.now ?? Date.now;
    this.#random = options.random ?? Math.random;
  }

  start(): void {
    if (this.#started) return;
    this.#started = true;
    this.wake();
  }

  /** Looks for due deliveries now. */
  wake(): void {
    if (!this.#started || this.#stopping.signal.aborted) return;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    void this.#tick();
  }

  /** Stops sending: attempts in flight are abandoned and their claims given back (the next start retries them). */
  async stop(): Promise<void> {
    this.#stopping.abort();
    clearTimeout(this.#timer);
    await Promise.allSettled([...this.#inFlight.values()]);
  }

  async #tick(): Promise<void> {
    if (this.#ticking) {
      this.#again = true;
      return;
    }
    this.#ticking = true;
    try {
      do {
        this.#again = false;
        await this.#claimDue();
      } while (this.#again && !this.#stopping.signal.aborted);
    } catch (error) {
      this.#options.logger.error({ err: error }, 'claiming webhook deliveries failed');
    } finally {
      this.#ticking = false;
      await this.#schedule();
    }
  }

  async #claimDue(): Promise<void> {
    const { outbox, workerId, timeoutMs, concurrency = 8 } = this.#options;
    const free = concurrency - this.#inFlight.size;
    const now = this.#now();
    if (now - this.#prunedAt >= 3_600_000) {
      this.#prunedAt = now;
      await outbox.prune(new Date(now - endedKeptMs));
    }
    if (free <= 0 || this.#stopping.signal.aborted) return;
    const rows = (await outbox.claim(workerId, free, now, now + timeoutMs + 30_000)).filter((row) => !this.#inFlight.has(row.id));
    for (const row of rows) {
      const done = this.#deliver(row)
        .catch((error: unknown) => this.#options.logger.error({ err: error, jobId: row.job_id, eventId: row.event_id }, 'webhook delivery failed unexpectedly'))
        .finally(() => {
          this.#inFlight.delete(row.id);
          // The job's next change may be waiting for this one.
          this.wake();
        });
      this.#inFlight.set(row.id, done);
    }
  }

  async #schedule(): Promise<void> {
    if (this.#stopping.signal.aborted) return;
    const { pollMs = 1000, outbox } = this.#options;
    let delay = pollMs;
    try {
      const due = await outbox.nextDue();
      if (due !== undefined) delay = Math.min(pollMs, Math.max(0, due - this.#now()));
    } catch {
      // the poll retries
    }
    if (this.#stopping.signal.aborted || this.#ticking) return;
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => this.wake(), delay);
    this.#timer.unref();
  }

  async #deliver(row: OutboxRow): Promise<void> {
    const { outbox, workerId, logger } = this.#options;
    const log = { jobId: row.job_id, eventId: row.event_id, status: row.status, attempt: row.attempts + 1 };
    const result = await this.#attempt(row);
    if (this.#stopping.signal.aborted) {
      await outbox.release(row.id, workerId);
      return;
    }
    const now = new Date(this.#now());
    if (result.ok) {
      await outbox.delivered(row.id, workerId, now);
      logger.debug({ ...log, httpStatus: result.status }, 'webhook delivered');
      return;
    }
    const attempts = row.attempts + 1;
    const next = result.retry && attempts < this.#options.maxAttempts ? now.getTime() + retryDelayMs(attempts, this.#options.retryBaseMs, this.#random, result.retryAfterMs) : undefined;
    await outbox.attemptFailed(row.id, workerId, result.error, next, now);
    if (next === undefined) logger.warn({ ...log, error: result.error }, `webhook not delivered: ${result.retry ? `gave up after ${attempts} attempts` : 'not retried'}`);
    else logger.info({ ...log, error: result.error, retryInMs: next - now.getTime() }, 'webhook attempt failed: retrying');
  }

  async #attempt(row: OutboxRow): Promise<AttemptResult> {
    const { policy, secret, serverUrl, timeoutMs } = this.#options;
    const url = row.url ?? serverUrl;
    if (url === undefined) return { ok: false, retry: false, error: 'the job had the server\'s hook (WORKCELL_CALLBACK_URL), which is no longer set' };
    if (secret === undefined) return { ok: false, retry: false, error: 'WORKCELL_CALLBACK_SECRET is not set: hooks are never sent unsigned' };
    let target: CheckedCallback;
    try {
      target = parseCallbackUrl(url);
    } catch (error) {
      return { ok: false, retry: false, error: errorMessage(error) };
    }
    const signal = this.#stopping.signal;
    const verdict = await policy.address(target, { trusted: row.url === null, signal });
    if (!verdict.ok) return { ok: false, retry: verdict.retry, error: verdict.reason };
    const body = JSON.stringify(webhookPayload(row, this.#options.baseUrl()));
    const headers = signatureHeaders(webhookKey(secret), row.event_id, Math.floor(this.#now() / 1000), body);
    return postOnce(target, verdict.address, headers, body, timeoutMs, signal);
  }
}
