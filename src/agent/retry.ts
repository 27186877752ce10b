// Retries of model calls, ours rather than the SDK's (which is called with maxRetries: 0) so that each retry is
// recorded as an event and every wait honours the job's abort signal. Retried: 429, 5xx and network errors, with
// exponential backoff from baseMs plus jitter, or the delay the server asks for (retry-after-ms / retry-after).
// Everything else (400, 401, 404, a malformed response, a bug) fails at once: retrying cannot fix it.
import { setTimeout as sleep } from 'node:timers/promises';
import { APICallError } from 'ai';
import { errorMessage } from '../errors.ts';

export interface RetryOptions {
  /** Retries after the first attempt (0: none). */
  maxRetries: number;
  /** Delay before the first retry, doubled for each further one. */
  baseMs: number;
}

export interface RetryInfo {
  /** 1 for the first retry. */
  attempt: number;
  delayMs: number;
  error: string;
}

/** Longest backoff between attempts, and longest server-requested wait we accept. */
export const maxBackoffMs = 60_000;
export const maxRetryAfterMs = 300_000;

export interface ModelErrorClass {
  retryable: boolean;
  /** The wait the server asked for, when it did. */
  retryAfterMs?: number;
  /** For events and error messages: the HTTP status when there is one, and the provider's message. */
  description: string;
}

const networkErrorCodes = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'UND_ERR_SOCKET', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT']);

export function classifyModelError(error: unknown, now = Date.now()): ModelErrorClass {
  if (APICallError.isInstance(error)) {
    const status = error.statusCode;
    if (status === undefined) {
      // The SDK wraps connection failures in an APICallError without a status.
      return { retryable: error.isRetryable || isNetworkError(error.cause), description: `network error: ${error.message}` };
    }
    const retryable = status === 429 || status >= 500;
    const retryAfterMs = retryable ? parseRetryAfter(error.responseHeaders, now) : undefined;
    return { retryable, ...(retryAfterMs === undefined ? {} : { retryAfterMs }), description: `HTTP ${status}: ${error.message}` };
  }
  if (isNetworkError(error)) return { retryable: true, description: `network error: ${errorMessage(error)}` };
  return { retryable: false, description: errorMessage(error) };
}

function isNetworkError(error: unknown): boolean {
  for (let current = error, depth = 0; current instanceof Error && depth < 5; current = current.cause, depth++) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === 'string' && networkErrorCodes.has(code)) return true;
    if (current instanceof TypeError && (current.message === 'fetch failed' || current.message === 'terminated')) return true;
  }
  return false;
}

/** The server's requested delay in ms from `retry-after-ms` or `retry-after` (seconds or an HTTP date), capped. */
export function parseRetryAfter(headers: Record<string, string> | undefined, now = Date.now()): number | undefined {
  if (headers === undefined) return undefined;
  const lower = Object.fromEntries(Object.entries(headers).map(([key, value]) => [key.toLowerCase(), value]));
  let ms: number | undefined;
  const afterMs = lower['retry-after-ms'];
  if (afterMs !== undefined && afterMs.trim() !== '' && Number.isFinite(Number(afterMs))) ms = Number(afterMs);
  const after = lower['retry-after'];
  if (ms === undefined && after !== undefined && after.trim() !== '') {
    if (Number.isFinite(Number(after))) ms = Number(after) * 1000;
    else {
      const date = Date.parse(after);
      if (!Number.isNaN(date)) ms = date - now;
    }
  }
  if (ms === undefined) return undefined;
  return Math.min(Math.max(0, Math.round(ms)), maxRetryAfterMs);
}

/** Exponential backoff: baseMs, 2·baseMs, 4·baseMs, ... (capped), plus up to 25% jitter. */
export function backoffMs(attempt: number, baseMs: number, random: () => number = Math.random): number {
  const exponential = Math.min(baseMs * 2 ** (attempt - 1), maxBackoffMs);
  return Math.round(exponential * (1 + 0.25 * random()));
}

/**
 * Runs `call`, retrying retryable failures. Rejects with the last error (annotated with the attempts made) when
 * retries run out or the error is not retryable, and with the signal's reason when the job is cancelled.
 */
export async function withModelRetry<T>(
  call: () => Promise<T>,
  options: RetryOptions & { signal: AbortSignal; onRetry?: (info: RetryInfo) => void; random?: () => number },
): Promise<T> {
  const { signal } = options;
  for (let attempt = 0; ; attempt++) {
    signal.throwIfAborted();
    try {
      return await call();
    } catch (error) {
      if (signal.aborted) throw signal.reason;
      const { retryable, retryAfterMs, description } = classifyModelError(error);
      if (!retryable || attempt >= options.maxRetries) {
        throw new ModelCallError(retryable ? `model call failed after ${attempt + 1} attempts: ${description}` : `model call failed: ${description}`, { cause: error });
      }
      const delayMs = retryAfterMs ?? backoffMs(attempt + 1, options.baseMs, options.random);
      options.onRetry?.({ attempt: attempt + 1, delayMs, error: description });
      try {
        await sleep(delayMs, undefined, { signal });
      } catch {
        throw signal.reason;
      }
    }
  }
}

/** A model call that failed for good. */
export class ModelCallError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ModelCallError';
  }
}
