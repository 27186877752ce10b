// Lifecycle hooks over real HTTP: a real server runs real jobs (bwrap, script model) whose status changes reach a
// receiver on loopback as signed POSTs, verified here with the Standard Webhooks project's own library
// (`standardwebhooks`), retried with backoff after 5xx (the same event id, a new timestamp and signature), in order per
// job, with the reopened run when a message continues the job. Hostile and unusable callback URLs are refused at
// schedule time.
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Webhook } from 'standardwebhooks';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../../src/config.ts';
import { collectEvents, post, startTestApp, type TestApp } from '../../helpers/app.ts';

const secret = `whsec_${Buffer.from('0123456789abcdef0123456789abcdef').toString('base64')}`;

interface Delivery {
  headers: IncomingHttpHeaders;
  body: string;
  answered: number;
}

interface Receiver {
  url: string;
  deliveries: Delivery[];
  close(): Promise<void>;
}

/** A receiver that answers `answer(delivery index, event id)`: an HTTP status. */
async function startReceiver(answer: (index: number, eventId: string) => number): Promise<Receiver> {
  const deliveries: Delivery[] = [];
  const server: Server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const status = answer(deliveries.length, String(request.headers['webhook-id']));
      deliveries.push({ headers: request.headers, body: Buffer.concat(chunks).toString('utf8'), answered: status });
      response.writeHead(status, { 'content-type': 'text/plain' }).end(status === 200 ? 'ok' : 'try again');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/hooks`,
    deliveries,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

let app: TestApp | undefined;
let receiver: Receiver | undefined;
afterEach(async () => {
  await app?.close();
  await receiver?.close();
  app = undefined;
  receiver = undefined;
});

const hostPort = (url: string) => new URL(url).host;

/** The payloads the receiver accepted (status 200), each verified with the Standard Webhooks library. */
function accepted(deliveries: Delivery[]): Array<Record<string, unknown>> {
  const verifier = new Webhook(secret);
  return deliveries.filter((delivery) => delivery.answered === 200).map((delivery) => verifier.verify(delivery.body, delivery.headers as Record<string, string>) as Record<string, unknown>);
}

describe('lifecycle hooks', () => {
  it('posts every status change, signed, retried after a 5xx with the same event id, in order', async () => {
    const seen = new Set<string>();
    // The first attempt of every event fails with a 503; the retry succeeds.
    receiver = await startReceiver((_index, eventId) => (seen.has(eventId) ? 200 : (seen.add(eventId), 503)));
    app = await startTestApp({ callbackSecret: secret, callbackAllowPrivate: [hostPort(receiver.url)], callbackRetryBaseMs: 50 });
    const scheduled = await post<{ job_id: string }>(app, '/schedule', { task: 'two files', model: 'script:two-files.json', callback_url: receiver.url });
    expect(scheduled.status).toBe(202);
    const jobId = scheduled.body.job_id;
    await collectEvents(app, jobId);
    await expect.poll(() => accepted(receiver!.deliveries).length, { timeout: 30_000 }).toBe(3);

    const payloads = accepted(receiver.deliveries);
    expect(payloads.map((payload) => [payload.status, payload.previous_status ?? null])).toEqual([
      ['pending', null],
      ['running', 'pending'],
      ['complete', 'running'],
    ]);
    for (const payload of payloads) expect(payload).toMatchObject({ type: 'job.status', job_id: jobId, run: 1 });
    expect(payloads[2]).toMatchObject({ download_url: `${app.url}/jobs/${jobId}/artifacts.zip` });
    expect(String(payloads[2]?.summary)).toMatch(/hello\.py/);

    // Each event was tried twice: the same id, each attempt signed on its own.
    const byEvent = Map.groupBy(receiver.deliveries, (delivery) => String(delivery.headers['webhook-id']));
    expect(byEvent.size).toBe(3);
    for (const attempts of byEvent.values()) {
      expect(attempts.map((attempt) => attempt.answered)).toEqual([503, 200]);
      expect(attempts[0]?.body).toBe(attempts[1]?.body);
    }
    // A forged or altered delivery does not verify.
    const last = receiver.deliveries.at(-1)!;
    expect(() => new Webhook(secret).verify(last.body.replace('complete', 'error'), last.headers as Record<string, string>)).toThrow();
    expect(() => new Webhook(`whsec_${Buffer.from('another key of sixteen+').toString('base64')}`).verify(last.body, last.headers as Record<string, string>)).toThrow();
  });

  it("goes to the server's WORKCELL_CALLBACK_URL for jobs without their own, and says when a message reopened the job", async () => {
    receiver = await startReceiver(() => 200);
    app = await startTestApp({ callbackSecret: secret, callbackUrl: receiver.url });
    const { body } = await post<{ job_id: string }>(app, '/schedule', { task: 'two files', model: 'script:two-files.json' });
    const first = await collectEvents(app, body.job_id);
    await expect.poll(() => accepted(receiver!.deliveries).length, { timeout: 30_000 }).toBe(3);
    expect((await post(app, `/jobs/${body.job_id}/messages`, { text: 'once more' })).status).toBe(202);
    await collectEvents(app, body.job_id, { lastEventId: first.at(-1)!.id });
    await expect.poll(() => accepted(receiver!.deliveries).length, { timeout: 30_000 }).toBe(6);
    const payloads = accepted(receiver.deliveries);
    expect(payloads.slice(3).map((payload) => [payload.status, payload.run, payload.reopened ?? false])).toEqual([
      ['pending', 2, true],
      ['running', 2, false],
      [expect.stringMatching(/complete|error/), 2, false],
    ]);
    expect(new Set(payloads.map((payload) => payload.event_id)).size).toBe(6);
  });

  it('gives up after WORKCELL_CALLBACK_MAX_ATTEMPTS and does not retry a 4xx', async () => {
    let answer = 500;
    receiver = await startReceiver(() => answer);
    app = await startTestApp({ callbackSecret: secret, callbackAllowPrivate: [hostPort(receiver.url)], callbackRetryBaseMs: 20, callbackMaxAttempts: 3 });
    const { body } = await post<{ job_id: string }>(app, '/schedule', { task: 'nothing', model: 'script:no-tool-calls.json', callback_url: receiver.url });
    await collectEvents(app, body.job_id);
    // Three attempts for the first event, then the next event's turn (order per job is kept, not blocked forever).
    await expect.poll(() => new Set(receiver!.deliveries.map((delivery) => delivery.headers['webhook-id'])).size, { timeout: 30_000 }).toBe(3);
    await expect.poll(() => receiver!.deliveries.length, { timeout: 30_000 }).toBe(9);
    const byEvent = Map.groupBy(receiver.deliveries, (delivery) => String(delivery.headers['webhook-id']));
    for (const attempts of byEvent.values()) expect(attempts).toHaveLength(3);

    answer = 410;
    receiver.deliveries.length = 0;
    const gone = await post<{ job_id: string }>(app, '/schedule', { task: 'nothing', model: 'script:no-tool-calls.json', callback_url: receiver.url });
    await collectEvents(app, gone.body.job_id);
    await expect.poll(() => receiver!.deliveries.length, { timeout: 30_000 }).toBe(3);
    const ids = receiver.deliveries.map((delivery) => delivery.headers['webhook-id']);
    expect(new Set(ids).size).toBe(3); // one attempt each
  });

  it.each([
    ['a private address the operator did not list', 'http://127.0.0.1:9/hook', /only to public addresses.*WORKCELL_CALLBACK_ALLOW_PRIVATE/],
    ['link-local metadata', 'http://169.254.169.254/latest', /only to public addresses/],
    ['user info', 'https://user:pass@example.com/hook', /user|password/],
    ['another scheme', 'file:///etc/passwd', /http/],
    ['not a URL', 'not a url', /URL|url/],
    ['an oversized URL', `https://example.com/${'a'.repeat(3000)}`, /2048|too long|at most/],
  ])('refuses a callback_url with %s', async (_what, url, detail) => {
    app ??= await startTestApp({ callbackSecret: secret });
    const response = await post<{ detail: string }>(app, '/schedule', { task: 'x', callback_url: url });
    expect(response.status).toBe(400);
    expect(response.body.detail).toMatch(detail);
    expect((await fetch(`${app.url}/jobs`).then((r) => r.json()) as { jobs: unknown[] }).jobs).toEqual([]);
  });

  it('refuses callback_url on a server that cannot sign, and a server URL without a secret', async () => {
    app = await startTestApp();
    const response = await post<{ detail: string }>(app, '/schedule', { task: 'x', callback_url: 'https://example.com/hook' });
    expect(response.status).toBe(400);
    expect(response.body.detail).toMatch(/WORKCELL_CALLBACK_SECRET/);
    expect(() => loadConfig({ WORKCELL_CALLBACK_URL: 'https://example.com/hook' })).toThrow(/WORKCELL_CALLBACK_SECRET/);
    expect(() => loadConfig({ WORKCELL_CALLBACK_SECRET: 'short' })).toThrow(/whsec_/);
  });
});
