// The files a sandbox can grow on the host stop at the job's caps, through whole jobs on the real server (bwrap):
// one job floods sandbox.log (Jupyter's warnings, which sandboxd logs), audit.jsonl (refused requests through the
// egress proxy) and its context store (an output over its share) and carries on to finish; another fills its context
// store and ends with an error naming the limit. Each cap reached is in the events and the job's usage; the files on
// disk are within their caps; the server stays up and runs the next job.
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sandboxLogMarker } from '../../../src/runtimes/sandbox-log.ts';
import { collectEvents, downloadZip, get, post, startTestApp, type StreamedEvent, type TestApp } from '../../helpers/app.ts';

interface JobDetail {
  status: string;
  error?: string;
  limits: Record<string, number>;
  usage: { steps: number; limits_reached?: string[] };
}

const megabyte = 1024 * 1024;
const limits = { sandbox_log_mb: 1, audit_log_mb: 1, context_mb: 8 };

let app: TestApp;
beforeAll(async () => {
  app = await startTestApp();
});
afterAll(async () => {
  await app?.close();
});

const limitEvents = (events: StreamedEvent[]) => events.filter((event) => event.type === 'log' && typeof event.data.limit === 'string');

describe('caps on the files a sandbox grows on the host', () => {
  it('sandbox.log, audit.jsonl and a large output stop at their caps; the job is told and finishes', async () => {
    const scheduled = await post<{ job_id: string }>(app, '/schedule', { task: 'flood the host', model: 'script:host-file-flood.json', limits, network: { allow: ['allowed.example'] } });
    expect(scheduled.status).toBe(202);
    const jobId = scheduled.body.job_id;
    const events = await collectEvents(app, jobId);
    const job = await get<JobDetail>(app, `/jobs/${jobId}`);
    expect(job.status, job.error).toBe('complete');
    expect(job.limits).toMatchObject(limits);
    expect(new Set(job.usage.limits_reached)).toEqual(new Set(['sandbox_log_mb', 'audit_log_mb', 'context_mb']));

    const reports = limitEvents(events);
    expect(reports.map((event) => event.data.limit).sort()).toEqual(['audit_log_mb', 'context_mb', 'sandbox_log_mb']);
    expect(reports.find((event) => event.data.limit === 'sandbox_log_mb')?.data.message).toMatch(/logs\/sandbox.log reached its limit of 1 MB \(limits.sandbox_log_mb\)/);
    expect(reports.find((event) => event.data.limit === 'audit_log_mb')?.data.message).toMatch(/audit.jsonl reached its limit of 1 MB \(limits.audit_log_mb\)/);
    expect(reports.find((event) => event.data.limit === 'context_mb')?.data.message).toMatch(/a tool output of [\d.]+ MB was kept as its first and last 256 KB: the job's context store keeps at most 512 KB of one tool output/);

    const results = events.filter((event) => event.type === 'tool-result');
    expect(String(results[1]?.data.output)).toMatch(/flooded jupyter 404/);
    expect(String(results[2]?.data.output)).toMatch(/asked the proxy 600 times/);
    const big = results[3]!;
    expect(big.data.dropped_chars).toBeGreaterThan(400_000);
    expect(String(big.data.output)).toMatch(/^exit code: 0\noutput:\n1\n2\n3\n/);
    expect(String(big.data.output)).toMatch(/characters of this output were not kept: the job's context store keeps at most 512 KB of one tool output \(limits.context_mb is 8 MB\)/);
    expect(String(big.data.output)).toMatch(/\n200000\n?$/);

    const root = join(app.dataDir, 'jobs', jobId);
    const sandboxLog = readFileSync(join(root, 'logs', 'sandbox.log'), 'utf8');
    expect(Buffer.byteLength(sandboxLog)).toBeLessThanOrEqual(megabyte);
    expect(sandboxLog).toMatch(/404 GET \/flood\?x{100}/);
    expect(sandboxLog.endsWith(sandboxLogMarker(megabyte))).toBe(true);
    const audit = readFileSync(join(root, 'audit.jsonl'), 'utf8');
    expect(Buffer.byteLength(audit)).toBeLessThanOrEqual(megabyte);
    const entries = audit.trimEnd().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(entries.filter((entry) => entry.type === 'network' && entry.host === 'denied.example').length).toBeGreaterThan(100);
    expect(entries.at(-1)).toMatchObject({ type: 'limit', limit: 'audit_log_mb', max_bytes: megabyte });
    // The audit API serves the capped file as it is.
    expect((await (await fetch(`${app.url}/jobs/${jobId}/audit`)).text()).trimEnd().split('\n')).toHaveLength(entries.length);
    expect((await downloadZip(app, jobId)).get('result.txt')?.content).toBe('survived\n');
  }, 600_000);

  it('a job whose context store fills up ends with an error naming the limit; the server runs the next job', async () => {
    const scheduled = await post<{ job_id: string }>(app, '/schedule', { task: 'fill the store', model: 'script:context-fill.json', limits: { context_mb: 8 } });
    const jobId = scheduled.body.job_id;
    const events = await collectEvents(app, jobId);
    const job = await get<JobDetail>(app, `/jobs/${jobId}`);
    expect(job.status).toBe('error');
    expect(job.error).toMatch(/the job's context store reached its limit of 8 MB \(limits.context_mb\)/);
    expect(job.usage.limits_reached).toEqual(['context_mb']);
    expect(job.usage.steps).toBeLessThan(12);
    const last = events.filter((event) => event.type === 'tool-result').at(-1)!;
    expect(String(last.data.output)).toMatch(/the job's context store is full \(limits.context_mb is 8 MB\)/);
    expect(limitEvents(events).map((event) => event.data.message)).toContainEqual(expect.stringMatching(/context store reached its limit of 8 MB/));
    expect(events.at(-1)).toMatchObject({ type: 'job-status', data: { status: 'error' } });
    // Counted, not promised to the byte: the store ends near its cap (an output costs about three times its size).
    expect(statSync(join(app.dataDir, 'jobs', jobId, 'context.db')).size).toBeLessThanOrEqual(8 * megabyte * 1.2);

    const health = await fetch(`${app.url}/healthz`);
    expect(health.status).toBe(200);
    const next = await post<{ job_id: string }>(app, '/schedule', { task: 'two files', model: 'script:two-files.json' });
    await collectEvents(app, next.body.job_id);
    expect((await get<JobDetail>(app, `/jobs/${next.body.job_id}`)).status).toBe('complete');
  }, 600_000);
});
