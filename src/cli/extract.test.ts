import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ZipFile } from 'yazl';
import { WorkcellError } from '../errors.ts';
import { zipWorkspace } from '../jobs/artifacts.ts';
import { extractZip } from './extract.ts';

let base: string;
let dest: string;
let outside: string;

beforeEach(async () => {
  base = await mkdtemp(path.join(os.tmpdir(), 'workcell-extract-'));
  dest = path.join(base, 'dest');
  outside = path.join(base, 'outside');
  await mkdir(outside);
});

afterEach(async () => {
  await rm(base, { recursive: true, force: true });
});

const symlinkMode = 0o120777;

/** Builds a zip in memory with yazl. */
async function buildZip(add: (zip: ZipFile) => void): Promise<Buffer> {
  const zip = new ZipFile();
  add(zip);
  zip.end();
  const chunks: Buffer[] = [];
  for await (const chunk of zip.outputStream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/**
 * yazl refuses hostile names, so the zip is built with a placeholder of the same byte length and the name bytes are
 * patched afterwards, in the local header and in the central directory.
 */
function patchName(zip: Buffer, placeholder: string, name: string): Buffer {
  const from = Buffer.from(placeholder);
  const to = Buffer.from(name);
  expect(to.length).toBe(from.length);
  let count = 0;
  for (let at = zip.indexOf(from); at !== -1; at = zip.indexOf(from, at + from.length)) {
    to.copy(zip, at);
    count += 1;
  }
  expect(count, 'the placeholder appears in both headers').toBe(2);
  return zip;
}

async function writeZip(name: string, bytes: Buffer): Promise<string> {
  const file = path.join(base, name);
  await writeFile(file, bytes);
  return file;
}

async function refusal(zipFile: string, destination = dest): Promise<WorkcellError> {
  const error: unknown = await extractZip(zipFile, destination).catch((caught: unknown) => caught);
  expect(error).toBeInstanceOf(WorkcellError);
  return error as WorkcellError;
}

/** Everything under `root`: type, permission bits and content or link text. */
async function snapshot(root: string, prefix = ''): Promise<Record<string, string>> {
  const result: Record<string, string> = {};
  for (const name of (await readdir(path.join(root, prefix))).sort()) {
    const relative = prefix === '' ? name : `${prefix}/${name}`;
    const absolute = path.join(root, relative);
    const stats = await lstat(absolute);
    const mode = (stats.mode & 0o777).toString(8);
    if (stats.isSymbolicLink()) result[relative] = `link -> ${await readlink(absolute)}`;
    else if (stats.isDirectory()) {
      result[relative] = `dir ${mode}`;
      Object.assign(result, await snapshot(root, relative));
    } else result[relative] = `file ${mode} ${(await readFile(absolute)).toString('base64')}`;
  }
  return result;
}

describe('extractZip refuses names that escape, before writing anything', () => {
  it.each([
    ['xx/evil', '../evil'],
    ['_abs', '/abs'],
    ['a/xx/xx/b', 'a/../../b'],
    ['CQQx', 'C:\\x'],
    ['aQ..Q..Qx', 'a\\..\\..\\x'],
    ['aQb', 'a\0b'],
    ['Cqx', 'C:x'],
    // A name that would set the terminal's title: shown escaped in the message.
    ['EEEEEE/xx/x', '\x1b]0;t\x07/../x'],
  ])('refuses %j patched to %j', async (placeholder, name) => {
    const bytes = await buildZip((zip) => {
      // A harmless entry first: a one-pass extractor would already have written it.
      zip.addBuffer(Buffer.from('fine'), 'ok.txt');
      zip.addBuffer(Buffer.from('pwned'), placeholder, { compress: false });
    });
    const zipFile = await writeZip('evil.zip', patchName(bytes, placeholder, name));

    const error = await refusal(zipFile);
    const shownName = JSON.stringify(name).slice(1, -1);
    expect(error.message).toContain(`zip entry '${shownName}' would escape the destination: refused`);
    // eslint-disable-next-line no-control-regex -- no control character reaches a terminal
    expect(error.message).not.toMatch(/[\u0000-\u001f\u007f-\u009f]/);
    expect(error.details).toEqual({ entry: name });
    expect(existsSync(dest), 'not even the destination is created').toBe(false);
    expect(existsSync(path.join(base, 'evil'))).toBe(false);
    expect(existsSync('/abs')).toBe(false);
    expect(await readdir(base)).toEqual(['evil.zip', 'outside']);
  });
});

describe('extractZip and symlink entries', () => {
  const linkThenFile = (linkName: string, target: string, fileName: string) =>
    buildZip((zip) => {
      zip.addBuffer(Buffer.from('fine'), 'ok.txt');
      zip.addBuffer(Buffer.from(target), linkName, { mode: symlinkMode, compress: false });
      zip.addBuffer(Buffer.from('pwned'), fileName);
    });

  it('refuses a symlink to /etc followed by a file inside it', async () => {
    const zipFile = await writeZip('etc.zip', await linkThenFile('etc', '/etc', 'etc/workcell-extract-test-pwned'));
    const error = await refusal(zipFile);
    expect(error.message).toMatch(/^zip entry '.*' .*: refused/);
    expect(existsSync('/etc/workcell-extract-test-pwned')).toBe(false);
    expect(existsSync(dest)).toBe(false);
  });

  it.each([
    ['an absolute path outside', () => outside],
    ['a relative path outside', () => '../outside'],
    ['a path inside', () => 'inner'],
  ])('refuses a file under a symlink entry to %s', async (_label, target) => {
    const zipFile = await writeZip('link.zip', await linkThenFile('link', target(), 'link/pwned.txt'));
    const error = await refusal(zipFile);
    expect(error.message).toMatch(/refused/);
    expect(existsSync(path.join(outside, 'pwned.txt'))).toBe(false);
    expect(existsSync(dest)).toBe(false);
  });

  it.each([
    ['/etc', /absolute/],
    ['../outside', /outside the destination/],
    ['sub/../../outside', /after a name/],
    ['C:\\Windows', /backslash/],
  ])('refuses a symlink entry to %j', async (target, reason) => {
    const zipFile = await writeZip(
      'link.zip',
      await buildZip((zip) => zip.addBuffer(Buffer.from(target), 'link', { mode: symlinkMode })),
    );
    const error = await refusal(zipFile);
    expect(error.message).toContain(`zip entry 'link' is a symlink to '${JSON.stringify(target).slice(1, -1)}'`);
    expect(error.message).toMatch(reason);
    expect(existsSync(dest)).toBe(false);
  });

  it('refuses the x -> . then y -> x/.. escape', async () => {
    const zipFile = await writeZip(
      'sneaky.zip',
      await buildZip((zip) => {
        zip.addBuffer(Buffer.from('.'), 'x', { mode: symlinkMode });
        zip.addBuffer(Buffer.from('x/..'), 'y', { mode: symlinkMode });
      }),
    );
    expect((await refusal(zipFile)).message).toMatch(/zip entry 'y'/);
    expect(existsSync(dest)).toBe(false);
  });

  it('creates a symlink whose target stays inside', async () => {
    const zipFile = await writeZip(
      'good.zip',
      await buildZip((zip) => {
        zip.addBuffer(Buffer.from('content'), 'sub/file.txt');
        zip.addBuffer(Buffer.from('../sub/file.txt'), 'links/to-file', { mode: symlinkMode });
        zip.addBuffer(Buffer.from('sub'), 'to-dir', { mode: symlinkMode });
      }),
    );
    expect(await extractZip(zipFile, dest)).toEqual({ files: 1, directories: 0, symlinks: 2 });
    expect(await readlink(path.join(dest, 'links/to-file'))).toBe('../sub/file.txt');
    expect(await readFile(path.join(dest, 'links/to-file'), 'utf8')).toBe('content');
    expect(await readFile(path.join(dest, 'to-dir/file.txt'), 'utf8')).toBe('content');
  });
});

describe('extractZip and what is already in the destination', () => {
  it('does not write through a symlinked directory already in the destination', async () => {
    await mkdir(dest);
    await symlink(outside, path.join(dest, 'pre'));
    const zipFile = await writeZip(
      'pre.zip',
      await buildZip((zip) => zip.addBuffer(Buffer.from('pwned'), 'pre/file.txt')),
    );
    const error = await refusal(zipFile);
    expect(error.code).toBe('conflict');
    expect(error.message).toMatch(/'pre' in the destination is a symlink/);
    expect(await readdir(outside)).toEqual([]);
  });

  it('replaces a symlink in the way of a file instead of writing through it', async () => {
    await mkdir(dest);
    await writeFile(path.join(outside, 'target.txt'), 'original');
    await symlink(path.join(outside, 'target.txt'), path.join(dest, 'leaf'));
    const zipFile = await writeZip('leaf.zip', await buildZip((zip) => zip.addBuffer(Buffer.from('new'), 'leaf')));
    await extractZip(zipFile, dest);
    expect(await readFile(path.join(outside, 'target.txt'), 'utf8')).toBe('original');
    expect((await lstat(path.join(dest, 'leaf'))).isFile()).toBe(true);
    expect(await readFile(path.join(dest, 'leaf'), 'utf8')).toBe('new');
  });

  it('refuses a FIFO in the way of a file without blocking on it', async () => {
    await mkdir(dest);
    try {
      execFileSync('mkfifo', [path.join(dest, 'pipe')]);
    } catch {
      return; // no mkfifo here
    }
    const zipFile = await writeZip('fifo.zip', await buildZip((zip) => zip.addBuffer(Buffer.from('x'), 'pipe')));
    expect((await refusal(zipFile)).message).toMatch(/'pipe' already exists in the destination/);
  });
});

describe('extractZip limits and malformed zips', () => {
  it('refuses a zip bomb from its declared sizes before writing anything', async () => {
    const zipFile = await writeZip(
      'bomb.zip',
      await buildZip((zip) => {
        zip.addBuffer(Buffer.from('fine'), 'ok.txt');
        zip.addBuffer(Buffer.alloc(4 * 1024 * 1024), 'zeros-1');
        zip.addBuffer(Buffer.alloc(4 * 1024 * 1024), 'zeros-2');
      }),
    );
    expect((await readFile(zipFile)).length).toBeLessThan(100_000);
    const error: unknown = await extractZip(zipFile, dest, { maxBytes: 6 * 1024 * 1024 }).catch((caught: unknown) => caught);
    expect(error).toMatchObject({ code: 'payload_too_large', message: expect.stringMatching(/zip entry 'zeros-2'.*zip bomb/) as unknown });
    expect(existsSync(dest)).toBe(false);
  });

  it('refuses too many entries', async () => {
    const zipFile = await writeZip(
      'many.zip',
      await buildZip((zip) => {
        for (let index = 0; index < 20; index += 1) zip.addBuffer(Buffer.from('x'), `f${index}`);
      }),
    );
    await expect(extractZip(zipFile, dest, { maxEntries: 10 })).rejects.toMatchObject({ code: 'payload_too_large' });
    expect(existsSync(dest)).toBe(false);
  });

  it('stops an entry that holds more data than it declares', async () => {
    const bytes = await buildZip((zip) => zip.addBuffer(Buffer.alloc(100_000, 1), 'liar.bin'));
    // Central directory record: signature 0x02014b50; the uncompressed size sits at offset 24.
    const central = bytes.indexOf(Buffer.from([0x50, 0x4b, 0x01, 0x02]));
    bytes.writeUInt32LE(10, central + 24);
    const zipFile = await writeZip('liar.zip', bytes);
    await expect(extractZip(zipFile, dest)).rejects.toThrow();
    const written = existsSync(path.join(dest, 'liar.bin')) ? (await readFile(path.join(dest, 'liar.bin'))).length : 0;
    expect(written).toBeLessThanOrEqual(100_000);
  });

  it('refuses a name that appears twice', async () => {
    const zipFile = await writeZip(
      'twice.zip',
      await buildZip((zip) => {
        zip.addBuffer(Buffer.from('first'), 'same.txt');
        zip.addBuffer(Buffer.from('second'), 'same.txt');
      }),
    );
    expect((await refusal(zipFile)).message).toMatch(/zip entry 'same.txt' appears twice/);
    expect(existsSync(dest)).toBe(false);
  });

  it('refuses an entry under a file entry', async () => {
    const zipFile = await writeZip(
      'under.zip',
      await buildZip((zip) => {
        zip.addBuffer(Buffer.from('file'), 'a');
        zip.addBuffer(Buffer.from('x'), 'a/b');
      }),
    );
    expect((await refusal(zipFile)).message).toMatch(/'a', which is a file/);
  });

  it('normalises ./ and empty segments', async () => {
    const bytes = await buildZip((zip) => zip.addBuffer(Buffer.from('dotted'), 'xy/q.txt', { mode: 0o100644 }));
    const zipFile = await writeZip('dots.zip', patchName(bytes, 'xy/q.txt', './/q.txt'));
    await extractZip(zipFile, dest);
    expect(await snapshot(dest)).toEqual({ 'q.txt': `file 644 ${Buffer.from('dotted').toString('base64')}` });
  });
});

describe('zipWorkspace then extractZip', () => {
  it('round-trips a workspace exactly', async () => {
    const workspace = path.join(base, 'workspace');
    const at = (name: string) => path.join(workspace, name);
    await mkdir(at('src/lib/deep'), { recursive: true });
    await mkdir(at('empty'));
    await mkdir(at('read-only'));
    await writeFile(at('src/index.ts'), 'export {};\n');
    await writeFile(at('src/lib/deep/data.bin'), randomBytes(1024 * 1024 + 3));
    await writeFile(at('build.sh'), '#!/bin/sh\n');
    await chmod(at('build.sh'), 0o755);
    await writeFile(at('private.key'), 'k');
    await chmod(at('private.key'), 0o600);
    await writeFile(at(`a "quoted" 'name' ünïcødé\nline.txt`), 'weird');
    await writeFile(at('read-only/inside.txt'), 'ro');
    await chmod(at('read-only'), 0o555);
    await writeFile(at('empty-file'), '');
    await symlink('src/index.ts', at('entry'));
    await symlink('../src', at('empty/up-to-src'));
    await symlink('missing', at('dangling'));

    const zipFile = path.join(base, 'output.zip');
    const zipped = await zipWorkspace(workspace, zipFile);
    expect(zipped.skipped).toEqual([]);
    const extracted = await extractZip(zipFile, dest);
    expect(extracted).toEqual({ files: 7, directories: 5, symlinks: 3 });

    const expected = await snapshot(workspace);
    expect(Object.keys(expected)).toHaveLength(15);
    expect(await snapshot(dest)).toEqual(expected);
    const mtime = (await lstat(at('src/index.ts'))).mtime.getTime();
    expect(Math.abs((await lstat(path.join(dest, 'src/index.ts'))).mtime.getTime() - mtime)).toBeLessThan(2000);
  });
});
