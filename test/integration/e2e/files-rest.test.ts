// A job's files over REST, over real HTTP to a real server: while the job runs (through its bwrap sandbox's sandboxd,
// the agent sees what the API wrote) and after it ends (the final workspace on the host, the zip rebuilt). ETag,
// If-Match and If-None-Match so a person and the agent do not overwrite each other blindly; every operation in the
// audit log with who did it; hostile paths, links the agent planted, oversized and conflicting writes refused with a
// problem and nothing changed.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { collectEvents, downloadZip, get, startTestApp, type TestApp } from '../../helpers/app.ts';

let app: TestApp;
const maxBytes = 1 << 20;
beforeAll(async () => {
  app = await startTestApp({ filesMaxBytes: maxBytes });
});
afterAll(async () => {
  await app.close();
});

const files = (jobId: string, path = '') => `${app.url}/jobs/${jobId}/files${path === '' ? '' : `/${path}`}`;

async function put(url: string, body: string | Buffer, headers: Record<string, string> = {}) {
  const response = await fetch(url, { method: 'PUT', body, headers: { 'content-type': 'application/octet-stream', ...headers } });
  return { status: response.status, etag: response.headers.get('etag'), body: (await response.json()) as Record<string, unknown> };
}

async function auditEntries(jobId: string): Promise<Array<Record<string, unknown>>> {
  const text = await (await fetch(`${app.url}/jobs/${jobId}/audit`)).text();
  return text
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

interface Listing {
  path: string;
  type: string;
  entries: Array<{ name: string; type: string; size: number; etag: string | null; target?: string }>;
}

describe('files of a running job', () => {
  let jobId: string;
  beforeAll(async () => {
    const response = await fetch(`${app.url}/schedule`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ task: 'files', model: 'script:files-rest.json' }) });
    jobId = ((await response.json()) as { job_id: string }).job_id;
  });

  it('is up: the first turn has written its files once the API reads them through the sandbox', async () => {
    await expect.poll(async () => (await fetch(files(jobId, 'before.txt'))).status, { timeout: 60_000 }).toBe(200);
  });

  it('reads a file with its ETag and type, and lists a directory', async () => {
    const response = await fetch(files(jobId, 'before.txt'));
    expect(await response.text()).toBe('hello\n');
    expect(response.headers.get('content-type')).toBe('text/plain; charset=utf-8');
    const etag = response.headers.get('etag');
    expect(etag).toMatch(/^"[0-9a-f]{64}"$/);
    expect((await fetch(files(jobId, 'before.txt'), { headers: { 'if-none-match': etag! } })).status).toBe(304);

    const listing = (await (await fetch(files(jobId))).json()) as Listing;
    const byName = new Map(listing.entries.map((entry) => [entry.name, entry]));
    expect(byName.get('before.txt')).toMatchObject({ type: 'file', size: 6, etag });
    expect(byName.get('dir')?.type).toBe('directory');
    expect(byName.get('passwd-link')).toMatchObject({ type: 'symlink', target: '/etc/passwd' });
    expect(byName.get('pipe')?.type).toBe('other');
  });

  it('serves what the agent wrote as inert content: never a page on the API origin', async () => {
    const response = await fetch(files(jobId, 'page.html'));
    expect(response.status).toBe(200);
    expect(response.headers.get('content-security-policy')).toMatch(/^sandbox/);
    expect(response.headers.get('x-content-type-options')).toBe('nosniff');
    expect(response.headers.get('content-disposition')).toMatch(/^attachment/);
  });

  it('writes with If-Match and If-None-Match, refusing blind overwrites with the current ETag', async () => {
    const created = await put(files(jobId, 'notes/from-api.txt'), 'first', { 'if-none-match': '*' });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({ path: 'notes/from-api.txt', size: 5, created: true });
    expect((await put(files(jobId, 'notes/from-api.txt'), 'again', { 'if-none-match': '*' })).status).toBe(412);

    const stale = await put(files(jobId, 'notes/from-api.txt'), 'second', { 'if-match': `"${'0'.repeat(64)}"` });
    expect(stale.status).toBe(412);
    expect(stale.etag).toBe(created.etag);
    const replaced = await put(files(jobId, 'notes/from-api.txt'), 'second', { 'if-match': created.etag! });
    expect(replaced.status).toBe(200);
    expect(await (await fetch(files(jobId, 'notes/from-api.txt'))).text()).toBe('second');

    // Delete only the version read.
    expect((await fetch(files(jobId, 'notes/from-api.txt'), { method: 'DELETE', headers: { 'if-match': created.etag! } })).status).toBe(412);
    const deleted = await fetch(files(jobId, 'notes/from-api.txt'), { method: 'DELETE', headers: { 'if-match': replaced.etag! } });
    expect(deleted.status).toBe(200);
    expect(await deleted.json()).toEqual({ path: 'notes/from-api.txt', type: 'file' });
    expect((await fetch(files(jobId, 'notes/from-api.txt'))).status).toBe(404);
  });

  it.each([
    ['traversal', '../../../etc/passwd', [400, 403, 404]],
    ['encoded traversal', '%2e%2e/%2e%2e/etc/passwd', [400, 403, 404]],
    ['a symlink out of the workspace', 'passwd-link', [403]],
    ['a symlink that stays inside', 'inside-link', [403]],
    ['a FIFO', 'pipe', [409]],
    ['a NUL in the path', 'a%00b', [400, 404]],
  ])('refuses to read %s', async (_what, path, statuses) => {
    const response = await fetch(files(jobId, path));
    expect(statuses).toContain(response.status);
    expect(response.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect(await response.text()).not.toContain('root:x:0:0');
  });

  it('refuses writes through links, onto directories, outside the workspace and over the size limit', async () => {
    expect((await put(files(jobId, 'passwd-link'), 'pwned')).status).toBe(403);
    expect((await put(files(jobId, 'dir'), 'x')).status).toBe(409);
    const traversal = await put(files(jobId, '..%2f..%2fescape.txt'), 'x');
    expect([400, 403]).toContain(traversal.status);
    const big = await put(files(jobId, 'big.bin'), Buffer.alloc(maxBytes + 1));
    expect(big.status).toBe(413);
    expect(String(big.body.detail)).toMatch(/WORKCELL_FILES_MAX_BYTES/);
    // Nothing of the refused writes is there.
    const names = ((await (await fetch(files(jobId))).json()) as Listing).entries.map((entry) => entry.name);
    expect(names).not.toContain('big.bin');
    expect(names).not.toContain('escape.txt');
    expect((await fetch(files(jobId, 'passwd-link'), { method: 'DELETE' })).status).toBe(200); // the link itself goes
  });

  it('hands the agent what the API wrote, serves the final workspace once the job ends, and audits each operation', async () => {
    expect((await put(files(jobId, 'from-api.txt'), 'written by a person')).status).toBe(201);
    expect((await put(files(jobId, 'go'), '')).status).toBe(201);
    const events = await collectEvents(app, jobId);
    const job = await get<{ status: string; error: string | null }>(app, `/jobs/${jobId}`);
    expect(job.status, job.error ?? '').toBe('complete');
    const outputs = events.filter((event) => event.type === 'tool-result').map((event) => String(event.data.output));
    expect(outputs.at(-2)).toContain('written by a person');

    // After the end: the host's copy, writable; the zip follows.
    expect(await (await fetch(files(jobId, 'from-api.txt'))).text()).toBe('written by a person');
    const after = await put(files(jobId, 'after-end.txt'), 'added after the end');
    expect(after.status).toBe(201);
    await expect.poll(async () => (await downloadZip(app, jobId)).get('after-end.txt')?.content, { timeout: 30_000 }).toBe('added after the end');
    expect((await put(files(jobId, 'passwd-link'), 'x')).status).not.toBe(500);

    const audit = await auditEntries(jobId);
    const api = audit.filter((entry) => entry.by === 'local');
    expect(api.some((entry) => entry.op === 'write' && entry.path === 'from-api.txt' && entry.ok === true)).toBe(true);
    expect(api.some((entry) => entry.op === 'read' && entry.path === 'passwd-link' && entry.ok === false && entry.error === 'path_outside_workspace')).toBe(true);
    expect(api.some((entry) => entry.op === 'delete' && entry.path === 'notes/from-api.txt' && entry.ok === true)).toBe(true);
    expect(api.some((entry) => entry.op === 'list')).toBe(true);
  });

  it('answers 404 for a job that does not exist and 409 for writes to a pending job', async () => {
    expect((await fetch(files('job_00000000000000000000000000', 'a.txt'))).status).toBe(404);
    expect((await put(files('job_00000000000000000000000000', 'a.txt'), 'x')).status).toBe(404);
  });
});
