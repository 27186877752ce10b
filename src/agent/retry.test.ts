import { APICallError } from 'ai';
import { describe, expect, it } from 'vitest';
import { ModelCallError, backoffMs, classifyModelError, maxRetryAfterMs, parseRetryAfter, withModelRetry, type RetryInfo } from './retry.ts';

function apiError(statusCode: number | undefined, headers: Record<string, string> = {}, cause?: unknown) {
  return new APICallError({
    message: `status ${statusCode}`,
    url: 'http://model.test/v1/chat/completions',
    requestBodyValues: {},
    ...(statusCode === undefined ? {} : { statusCode }),
    responseHeaders: headers,
    cause,
    isRetryable: statusCode === undefined,
  });
}

describe('classifyModelError', () => {
  it('retries 429, 5xx and network errors, nothing else', () => {
    expect(classifyModelError(apiError(429)).retryable).toBe(true);
    expect(classifyModelError(apiError(500)).retryable).toBe(true);
    expect(classifyModelError(apiError(503)).retryable).toBe(true);
    expect(classifyModelError(apiError(undefined)).retryable).toBe(true);
    for (const status of [400, 401, 403, 404, 408, 409, 422]) expect(classifyModelError(apiError(status)).retryable, String(status)).toBe(false);
    expect(classifyModelError(new TypeError('fetch failed', { cause: Object.assign(new Error('connect'), { code: 'ECONNREFUSED' }) })).retryable).toBe(true);
    expect(classifyModelError(new Error('schema mismatch')).retryable).toBe(false);
    expect(classifyModelError(apiError(429)).description).toBe('HTTP 429: status 429');
  });

  it('takes the delay the server asks for', () => {
    expect(classifyModelError(apiError(429, { 'retry-after': '2' })).retryAfterMs).toBe(2000);
    expect(classifyModelError(apiError(400, { 'retry-after': '2' })).retryAfterMs).toBeUndefined();
  });
});

describe('parseRetryAfter', () => {
  it('reads retry-after-ms first, then retry-after as seconds or an HTTP date', () => {
    const now = Date.parse('2025-01-01T00:00:00Z');
    expect(parseRetryAfter({ 'retry-after-ms': '250', 'retry-after': '9' }, now)).toBe(250);
    expect(parseRetryAfter({ 'Retry-After': '3' }, now)).toBe(3000);
    expect(parseRetryAfter({ 'retry-after': 'Wed, 01 Jan 2025 00:00:05 GMT' }, now)).toBe(5000);
    expect(parseRetryAfter({ 'retry-after': 'Tue, 31 Dec 2024 00:00:00 GMT' }, now)).toBe(0);
    expect(parseRetryAfter({ 'retry-after': '86400' }, now)).toBe(maxRetryAfterMs);
    expect(parseRetryAfter({ 'retry-after': 'soon' }, now)).toBeUndefined();
    expect(parseRetryAfter({}, now)).toBeUndefined();
    expect(parseRetryAfter(undefined, now)).toBeUndefined();
  });
});

describe('backoffMs', () => {
  it('doubles from baseMs with up to 25% jitter', () => {
    expect([1, 2, 3, 4].map((attempt) => backoffMs(attempt, 100, () => 0))).toEqual([100, 200, 400, 800]);
    expect(backoffMs(1, 100, () => 1)).toBe(125);
    expect(backoffMs(30, 1000, () => 0)).toBe(60_000);
  });
});

describe('withModelRetry', () => {
  const signal = new AbortController().signal;

  it('retries until success and reports each retry', async () => {
    const retries: RetryInfo[] = [];
    let calls = 0;
    const result = await withModelRetry(
      async () => {
        calls++;
        if (calls < 3) throw apiError(500);
        return 'ok';
      },
      { maxRetries: 4, baseMs: 2, signal, onRetry: (info) => retries.push(info), random: () => 0 },
    );
    expect(result).toBe('ok');
    expect(retries).toEqual([
      { attempt: 1, delayMs: 2, error: 'HTTP 500: status 500' },
      { attempt: 2, delayMs: 4, error: 'HTTP 500: status 500' },
    ]);
  });

  it('gives up after maxRetries, and at once on other errors', async () => {
    let calls = 0;
    const failing = withModelRetry(
      async () => {
        calls++;
        throw apiError(503);
      },
      { maxRetries: 2, baseMs: 1, signal },
    );
    await expect(failing).rejects.toThrow(new ModelCallError('model call failed after 3 attempts: HTTP 503: status 503'));
    expect(calls).toBe(3);
    calls = 0;
    const badRequest = withModelRetry(
      async () => {
        calls++;
        throw apiError(400);
      },
      { maxRetries: 5, baseMs: 1, signal },
    );
    await expect(badRequest).rejects.toThrow('model call failed: HTTP 400: status 400');
    expect(calls).toBe(1);
  });

  it('stops waiting when the signal aborts', async () => {
    const controller = new AbortController();
    const reason = new Error('cancelled');
    const started = Date.now();
    const waiting = withModelRetry(() => Promise.reject(apiError(429, { 'retry-after': '60' })), {
      maxRetries: 3,
      baseMs: 1,
      signal: controller.signal,
      onRetry: () => setTimeout(() => controller.abort(reason), 10),
    });
    await expect(waiting).rejects.toBe(reason);
    expect(Date.now() - started).toBeLessThan(5000);
  });
});
