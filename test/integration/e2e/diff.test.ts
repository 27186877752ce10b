// What a job changed, over real HTTP to a real server with a bwrap sandbox: a job starts from uploaded files, the agent
// edits, adds, deletes, flips an executable bit, adds a symlink and a binary file, and plants a hostile .git (config
// and hooks that would run commands if the host's git read them). GET /jobs/:id/diff lists the changes while it runs
// and after; the patch (also changes.patch in the zip) applies with `git apply` to the uploaded tree and gives exactly
// the final workspace; the planted commands never run.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { postMultipart } from '../../helpers/archives.ts';
import { collectEvents, downloadZip, get, startTestApp, type TestApp } from '../../helpers/app.ts';

const marker = '/tmp/workcell-diff-pwned';
const uploaded: Record<string, string> = {
  'notes/readme.txt': 'first line\n',
  'old.txt': 'to be deleted\n',
  'script.sh': 'echo run\n',
  'keep.txt': 'unchanged\n',
};

interface Diff {
  status: string;
  base: { files: number };
  files: Array<{ path: string; change: string; type: string; size?: number; previous_size?: number }>;
  summary: { added: number; changed: number; deleted: number };
  patch_url: string;
}

let app: TestApp;
let jobId: string;
beforeAll(async () => {
  rmSync(marker, { force: true });
  app = await startTestApp();
  const parts = [
    { name: 'task', data: 'change the project' },
    { name: 'job', data: JSON.stringify({ model: 'script:diff.json' }), contentType: 'application/json' },
    ...Object.entries(uploaded).map(([filename, data]) => ({ name: 'files', filename, data })),
  ];
  const scheduled = await postMultipart(app.url, parts);
  expect(scheduled.status).toBe(202);
  jobId = String(scheduled.body.job_id);
});
afterAll(async () => {
  await app.close();
});

const expectedChanges = [
  { path: '.gitattributes', change: 'added', type: 'file' },
  { path: '.gitignore', change: 'added', type: 'file' },
  { path: 'data.bin', change: 'added', type: 'file' },
  { path: 'latest', change: 'added', type: 'symlink' },
  { path: 'new.txt', change: 'added', type: 'file' },
  { path: 'notes/readme.txt', change: 'changed', type: 'file', size: 23, previous_size: 11 },
  { path: 'old.txt', change: 'deleted', type: 'file' },
  { path: 'script.sh', change: 'changed', type: 'file' },
];

describe('the diff of a job that started from uploaded files', () => {
  it('is a conflict before the job starts and 404 for a job that does not exist', async () => {
    expect((await fetch(`${app.url}/jobs/job_00000000000000000000000000/diff`)).status).toBe(404);
  });

  it('lists what the agent changed so far while the job runs', async () => {
    await expect
      .poll(
        async () => {
          const response = await fetch(`${app.url}/jobs/${jobId}/diff`);
          return response.ok ? ((await response.json()) as Diff).files.length : 0;
        },
        { timeout: 60_000 },
      )
      .toBe(expectedChanges.length);
    const diff = (await (await fetch(`${app.url}/jobs/${jobId}/diff`)).json()) as Diff;
    expect(diff.status).toBe('running');
    expect(diff.base.files).toBe(4);
    expect(diff.files).toMatchObject(expectedChanges);
  });

  it('after the end: the list, and a patch that turns the uploaded tree into the final workspace', async () => {
    const go = await fetch(`${app.url}/jobs/${jobId}/files/go`, { method: 'PUT', body: '' });
    expect(go.status).toBe(201);
    await collectEvents(app, jobId);
    const job = await get<{ status: string; error: string | null }>(app, `/jobs/${jobId}`);
    expect(job.status, job.error ?? '').toBe('complete');

    const diff = (await (await fetch(`${app.url}/jobs/${jobId}/diff`)).json()) as Diff;
    expect(diff.status).toBe('complete');
    expect(diff.files).toMatchObject(expectedChanges);
    expect(diff.summary).toEqual({ added: 5, changed: 2, deleted: 1 });

    const patchResponse = await fetch(`${app.url}${diff.patch_url}`);
    expect(patchResponse.headers.get('content-type')).toMatch(/^text\/x-diff/);
    const patch = await patchResponse.text();
    expect(patch).toContain('GIT binary patch');
    expect(patch).toContain('old mode 100644\nnew mode 100755');
    expect(patch).not.toContain('b/ignored.log');
    expect(patch).not.toContain('fsmonitor'); // .git is never compared
    // Accept: text/x-diff asks for the same.
    expect(await (await fetch(`${app.url}/jobs/${jobId}/diff`, { headers: { accept: 'text/x-diff' } })).text()).toBe(patch);

    // The zip carries the same patch.
    const zip = await downloadZip(app, jobId);
    expect(zip.get('changes.patch')?.content).toBe(patch);

    // Applied to the uploaded tree with the user's own git, it gives the final workspace.
    const tree = mkdtempSync(join(tmpdir(), 'workcell-diff-'));
    try {
      for (const [path, content] of Object.entries(uploaded)) {
        execFileSync('mkdir', ['-p', join(tree, path, '..')]);
        writeFileSync(join(tree, path), content);
      }
      writeFileSync(join(tree, 'changes.patch'), patch);
      execFileSync('git', ['apply', 'changes.patch'], { cwd: tree });
      expect(readFileSync(join(tree, 'notes/readme.txt'), 'utf8')).toBe('first line\nsecond line\n');
      expect(readFileSync(join(tree, 'new.txt'), 'utf8')).toBe('added\n');
      expect(existsSync(join(tree, 'old.txt'))).toBe(false);
      expect(statSync(join(tree, 'script.sh')).mode & 0o111).not.toBe(0);
      expect(readFileSync(join(tree, 'data.bin'))).toEqual(Buffer.from('\u0000\u0001\u0002binary', 'latin1'));
      expect(readlinkSync(join(tree, 'latest'))).toBe('notes/readme.txt');
      expect(readFileSync(join(tree, 'keep.txt'), 'utf8')).toBe('unchanged\n');
    } finally {
      rmSync(tree, { recursive: true, force: true });
    }
  });

  it('never ran what the agent planted in .git or .gitattributes', () => {
    expect(existsSync(marker)).toBe(false);
  });

  it('refuses a format it does not know', async () => {
    const response = await fetch(`${app.url}/jobs/${jobId}/diff?format=html`);
    expect(response.status).toBe(400);
    expect(response.headers.get('content-type')).toMatch(/^application\/problem\+json/);
  });
});
