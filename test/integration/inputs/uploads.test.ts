// Uploads at schedule time, over real HTTP to a real server (test/helpers/app.ts): multipart POST /schedule with files
// parts and a tar.gz or a zip, and a real job (bwrap, script model test/fixtures/trajectories/uploads.json) that reads,
// runs and changes them in its sandbox as uid 1000; then hostile uploads, each refused with a 4xx problem that names the
// bad entry, with no job and no directory left behind.
import { existsSync, mkdirSync, readdirSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTar, buildTarGz, buildZip, postMultipart, type FormPart, type TarItem, type ZipItem } from '../../helpers/archives.ts';
import { collectEvents, downloadZip, get, startTestApp, type TestApp } from '../../helpers/app.ts';

const script = { model: 'script:uploads.json' };
const readme = { name: 'files', filename: 'notes/readme.txt', data: 'uploaded as a files part\n' } satisfies FormPart;

const tarItems: TarItem[] = [
  { name: 'src/', type: 'directory', mode: 0o755 },
  { name: 'src/app.py', data: 'print("sum", sum(int(line) for line in open("src/data/values.csv")))\n', mode: 0o644 },
  { name: 'src/data/values.csv', data: '1\n2\n3\n', mode: 0o644 },
  { name: 'src/tool.sh', data: 'echo tool ran\n', mode: 0o4755 }, // setuid: dropped
  { name: 'src/latest', type: 'symlink', linkname: 'data/values.csv' },
];
const zipItems: ZipItem[] = [
  { name: 'src/', mode: 0o040755 },
  { name: 'src/app.py', data: 'print("sum", sum(int(line) for line in open("src/data/values.csv")))\n' },
  { name: 'src/data/values.csv', data: '1\n2\n3\n' },
  { name: 'src/tool.sh', data: 'echo tool ran\n', mode: 0o104755 },
  { name: 'src/latest', data: 'data/values.csv', mode: 0o120777 },
];

describe('a job with uploaded files', () => {
  let app: TestApp;
  beforeAll(async () => {
    app = await startTestApp();
  });
  afterAll(async () => {
    await app.close();
  });

  it.each([
    ['a tar.gz', async () => ({ name: 'archive', filename: 'project.tar.gz', data: await buildTarGz(tarItems) })],
    ['a zip', async () => ({ name: 'archive', filename: 'project.zip', data: buildZip(zipItems) })],
  ])('reads, runs and changes files parts and %s in its sandbox', async (_kind, archive) => {
    const scheduled = await postMultipart(app.url, [{ name: 'task', data: 'work on the uploaded project' }, { name: 'job', data: JSON.stringify(script), contentType: 'application/json' }, readme, await archive()]);
    expect(scheduled.status, JSON.stringify(scheduled.body)).toBe(202);
    const jobId = String(scheduled.body.job_id);
    // The files are in the job's workspace before it is pending.
    const detail = await get<{ inputs: { upload?: { entries: number; bytes: number } } }>(app, `/jobs/${jobId}`);
    expect(detail.inputs.upload).toEqual({ entries: 8, bytes: 25 + 69 + 6 + 14 });

    const events = await collectEvents(app, jobId);
    const job = await get<{ status: string; error?: string }>(app, `/jobs/${jobId}`);
    expect(job.status, job.error).toBe('complete');
    const outputs = events.filter((event) => event.type === 'tool-result').map((event) => String(event.data.output));
    expect(outputs[0]).toContain(['./notes', './notes/readme.txt', './src', './src/app.py', './src/data', './src/data/values.csv', './src/latest', './src/tool.sh'].join('\n'));
    // Owned by the sandbox user (uid 1000 inside), modes kept, the set-id bit dropped.
    expect(outputs[0]).toContain('notes/readme.txt 644 1000\nsrc 755 1000\nsrc/app.py 644 1000\nsrc/tool.sh 755 1000\n');
    expect(outputs[0]).toContain('data/values.csv\n1\n2\n3\nuploaded as a files part');
    expect(outputs[1]).toContain('1\n2\n3');
    expect(outputs[2]).toContain('sum 6');
    expect(outputs[2]).toContain('tool ran');
    expect(outputs[2]).toContain('WRITES-OK');

    const zip = await downloadZip(app, jobId);
    expect(zip.get('notes/readme.txt')?.content).toBe('uploaded as a files part\nchanged in the sandbox\n');
    expect(zip.get('src/data/new.txt')?.content).toBe('new\n');
    expect(zip.get('src/latest')).toMatchObject({ kind: 'symlink', content: 'data/values.csv' });
  });
});

describe('hostile uploads', () => {
  let app: TestApp;
  const maxBytes = 20 << 20;
  const maxFileBytes = 12 << 20;
  beforeAll(async () => {
    app = await startTestApp({ uploadMaxBytes: maxBytes, uploadMaxFileBytes: maxFileBytes, uploadMaxFiles: 50 });
  });
  afterAll(async () => {
    await app.close();
  });

  /** No job, no job directory, no staging directory. */
  async function expectNothingLeft(): Promise<void> {
    expect((await get<{ jobs: unknown[] }>(app, '/jobs')).jobs).toEqual([]);
    for (const dir of ['jobs', 'uploads']) {
      const path = join(app.dataDir, dir);
      if (existsSync(path)) expect(readdirSync(path), dir).toEqual([]);
    }
  }

  async function expectRefused(parts: FormPart[], status: number, detail: RegExp): Promise<void> {
    const response = await postMultipart(app.url, [{ name: 'task', data: 'x' }, ...parts]);
    expect(response.status, JSON.stringify(response.body)).toBe(status);
    expect(response.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect(response.body.detail).toMatch(detail);
    await expectNothingLeft();
  }

  const tarGz = async (items: TarItem[]) => ({ name: 'archive', filename: 'a.tar.gz', data: await buildTarGz(items) });
  const tar = async (items: TarItem[]) => ({ name: 'archive', filename: 'a.tar', data: await buildTar(items) });
  const zip = (items: ZipItem[]) => ({ name: 'archive', filename: 'a.zip', data: buildZip(items) });
  const ok = { name: 'ok.txt', data: 'fine\n' };

  it.each<[string, () => Promise<FormPart[]> | FormPart[], number, RegExp]>([
    ['traversal in a tar.gz', async () => [await tarGz([ok, { name: '../escape.txt', data: 'x' }])], 400, /archive entry "\.\.\/escape\.txt" .*'\.\.' segment/],
    ['traversal in a zip', () => [zip([{ name: 'a/../../escape.txt', data: 'x' }])], 400, /archive entry "a\/\.\.\/\.\.\/escape\.txt"/],
    ['traversal in a files part', () => [{ name: 'files', filename: '../escape.txt', data: 'x' }], 400, /files part "\.\.\/escape\.txt"/],
    ['an absolute path in a tar', async () => [await tar([{ name: '/etc/cron.d/evil', data: 'x' }])], 400, /"\/etc\/cron\.d\/evil" .*absolute/],
    ['an absolute path in a zip', () => [zip([{ name: '/tmp/evil', data: 'x' }])], 400, /"\/tmp\/evil" .*absolute/],
    ['an absolute path in a files part', () => [{ name: 'files', filename: '/etc/passwd', data: 'x' }], 400, /files part "\/etc\/passwd" .*absolute/],
    ['a symlink out of the workspace (tar)', async () => [await tarGz([{ name: 'link', type: 'symlink', linkname: '../../etc' }])], 400, /"link" is a symlink to "\.\.\/\.\.\/etc", which would lead out/],
    ['an absolute symlink (zip)', () => [zip([{ name: 'passwd', data: '/etc/passwd', mode: 0o120777 }])], 400, /"passwd" is a symlink to "\/etc\/passwd"/],
    ['a file written through a symlink that stays inside', async () => [await tarGz([{ name: 'sub/', type: 'directory' }, { name: 'dir', type: 'symlink', linkname: 'sub' }, { name: 'dir/file', data: 'x' }])], 400, /"dir\/file" lies under "dir", which is a symlink/],
    ['a hard link', async () => [await tarGz([ok, { name: 'hard', type: 'link', linkname: 'ok.txt' }])], 400, /"hard" is a hard link/],
    ['a character device', async () => [await tarGz([{ name: 'null', type: 'character-device', devmajor: 1, devminor: 3 }])], 400, /"null" is a device/],
    ['a block device', async () => [await tarGz([{ name: 'sda', type: 'block-device', devmajor: 8, devminor: 0 }])], 400, /"sda" is a device/],
    ['a FIFO', async () => [await tarGz([{ name: 'pipe', type: 'fifo' }])], 400, /"pipe" is a FIFO/],
    ['a device in a zip', () => [zip([{ name: 'null', mode: 0o020666 }])], 400, /"null" has an unsupported file type/],
    ['a zip bomb (declared larger than a file may be)', () => [zip([{ name: 'bomb', data: Buffer.alloc(maxFileBytes + 1) }])], 413, /"bomb" is larger than 12582912 bytes/],
    ['a zip that lies about its size', () => [zip([{ name: 'liar', data: Buffer.alloc(1 << 20), declaredSize: 10 }])], 400, /"liar" cannot be read/],
    ['a gzip bomb', async () => [{ name: 'archive', filename: 'a.tgz', data: (await import('node:zlib')).gzipSync(Buffer.concat([await buildTar([ok]), Buffer.alloc(maxBytes + (4 << 20))])) }], 413, /unpacks to more than .* gzip bomb/],
    ['too many entries', async () => [await tarGz(Array.from({ length: 51 }, (_, index) => ({ name: `f${index}`, data: 'x' })))], 413, /"f50" is past the limit of 50 entries/],
    ['too many bytes in all', () => [{ name: 'files', filename: 'a', data: Buffer.alloc(maxFileBytes) }, { name: 'files', filename: 'b', data: Buffer.alloc(maxBytes - maxFileBytes + 1) }], 413, /files part "b" takes the upload past 20971520 bytes/],
    ['a name twice in a tar', async () => [await tarGz([ok, { ...ok, data: 'again' }])], 400, /"ok\.txt" appears twice/],
    ['a name twice across files parts and the archive', async () => [{ name: 'files', filename: 'ok.txt', data: 'x' }, await tarGz([ok])], 400, /archive entry "ok\.txt" appears twice/],
    ['a NUL in a name', () => [zip([{ name: 'a\u0000b.txt', data: 'x' }])], 400, /"a\\u0000b\.txt" .*NUL/],
    ['a backslash in a name', () => [zip([{ name: '..\\..\\evil.txt', data: 'x' }])], 400, /backslash/],
    ['a file where a directory must go', async () => [await tarGz([{ name: 'a', data: 'x' }, { name: 'a/b', data: 'y' }])], 400, /"a\/b" lies under "a", which is a file/],
    ['a directory where a file was', async () => [await tarGz([{ name: 'a', data: 'x' }, { name: 'a/', type: 'directory' }])], 400, /"a\/" appears twice/],
    ['something that is not an archive', () => [{ name: 'archive', filename: 'a.rar', data: Buffer.from('Rar!\u001a\u0007\u0000'.padEnd(2000, 'x')) }], 400, /not a tar, tar\.gz \(tgz\) or zip/],
    ['two archives', async () => [await tarGz([ok]), await tarGz([{ name: 'other', data: 'x' }])], 400, /more than one archive part/],
    ['an unknown field', () => [{ name: 'taks', data: 'typo' }], 400, /unknown field "taks"/],
    ['a job field that is not JSON', () => [{ name: 'job', data: '{"limits": ' }], 400, /job field is not valid JSON/],
    ['options the schema refuses', () => [{ name: 'job', data: JSON.stringify({ limits: { max_steps: -1 } }) }, { name: 'files', filename: 'a.txt', data: 'x' }], 400, /limits\.max_steps/],
    ['a task given twice', () => [{ name: 'job', data: JSON.stringify({ task: 'y' }) }, { name: 'files', filename: 'a.txt', data: 'x' }], 400, /task is given twice/],
    ['a git input with uploaded files', () => [{ name: 'job', data: JSON.stringify({ inputs: { git: { url: 'https://example.com/a.git' } } }) }, { name: 'files', filename: 'a.txt', data: 'x' }], 400, /inputs\.git cannot be combined with uploaded files/],
    ['more than the job\'s disk holds', () => [{ name: 'job', data: JSON.stringify({ limits: { disk_mb: 16 } }) }, { name: 'files', filename: 'a', data: Buffer.alloc(maxFileBytes) }, { name: 'files', filename: 'b', data: Buffer.alloc(3 << 20) }], 413, /more than 90 % of the job's disk \(limits\.disk_mb: 16 MB\)/],
  ])('refuses %s', async (_name, parts, status, detail) => {
    await expectRefused(await parts(), status, detail);
  });

  it('refuses multipart from another origin before reading it, and on routes that take no files', async () => {
    const response = await postMultipart(app.url, [{ name: 'task', data: 'x' }, { name: 'files', filename: 'a.txt', data: 'x' }], { origin: 'https://evil.example' });
    expect(response.status).toBe(403);
    const other = await fetch(`${app.url}/jobs/job_00000000000000000000000000/messages`, { method: 'POST', body: (() => { const form = new FormData(); form.append('text', 'x'); return form; })() });
    expect(other.status).toBe(415);
    await expectNothingLeft();
  });

  it('leaves nothing behind when the client goes away in the middle of an upload', async () => {
    const boundary = 'cut-short';
    const head = `--${boundary}\r\nContent-Disposition: form-data; name="task"\r\n\r\nx\r\n--${boundary}\r\nContent-Disposition: form-data; name="files"; filename="big.bin"\r\nContent-Type: application/octet-stream\r\n\r\n`;
    const url = new URL(app.url);
    mkdirSync(join(app.dataDir, 'uploads'), { recursive: true });
    await new Promise<void>((resolve) => {
      const request = httpRequest({ host: url.hostname, port: url.port, path: '/schedule', method: 'POST', headers: { 'content-type': `multipart/form-data; boundary=${boundary}`, 'content-length': String(10 << 20) } });
      request.on('error', () => resolve());
      request.write(head);
      request.write(Buffer.alloc(1 << 20));
      // Once the server is writing the file into its staging directory, the client leaves.
      void expect
        .poll(() => readdirSync(join(app.dataDir, 'uploads')).length, { timeout: 20_000 })
        .toBe(1)
        .then(() => {
          request.destroy();
          resolve();
        });
    });
    // The server notices the reset and deletes what it had received.
    await expect.poll(() => readdirSync(join(app.dataDir, 'uploads')), { timeout: 20_000 }).toEqual([]);
    await expectNothingLeft();
  });
});
