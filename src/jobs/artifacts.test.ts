import { execFileSync } from 'node:child_process';
import { chmod, lstat, mkdir, mkdtemp, readFile, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openPromise } from 'yauzl';
import { requireHostTool } from '../../test/helpers/host-tools.ts';
import { WorkcellError } from '../errors.ts';
import { archiveNameProblem, openWorkspaceEntry, symlinkTargetProblem, zipWorkspace } from './artifacts.ts';

interface ZipItem {
  /** The whole unix mode from the external attributes, type bits included. */
  mode: number;
  content: Buffer;
}

async function readZip(file: string): Promise<Map<string, ZipItem>> {
  const zip = await openPromise(file, { lazyEntries: true, autoClose: false, strictFileNames: true });
  const items = new Map<string, ZipItem>();
  try {
    for await (const entry of zip.eachEntry()) {
      expect(entry.versionMadeBy >> 8, 'made on unix, so that modes are honoured').toBe(3);
      let content = Buffer.alloc(0);
      if (!entry.fileName.endsWith('/')) {
        const stream = await zip.openReadStreamPromise(entry);
        content = Buffer.concat((await stream.toArray()) as Buffer[]);
      }
      items.set(entry.fileName, { mode: entry.externalFileAttributes >>> 16, content });
    }
  } finally {
    zip.close();
  }
  return items;
}

function hasCommand(command: string, args: string[]): boolean {
  try {
    execFileSync(command, args, { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

const hasMkfifo = hasCommand('mkfifo', ['--version']);

const fileMode = (permissions: number) => 0o100000 | permissions;
const directoryMode = (permissions: number) => 0o040000 | permissions;
const symlinkMode = 0o120777;
const weirdName = `it's a "quoted" ünïcødé name\nwith a newline.txt`;
const secret = 'TOP SECRET host file';

let base: string;
let workspace: string;
let outside: string;
let outFile: string;

beforeEach(async () => {
  base = await mkdtemp(path.join(os.tmpdir(), 'workcell-artifacts-'));
  workspace = path.join(base, 'jobs', 'job-1', 'workspace');
  outside = path.join(base, 'jobs', 'outside');
  outFile = path.join(base, 'jobs', 'job-1', 'output.zip');
  await mkdir(workspace, { recursive: true });
  await mkdir(outside, { recursive: true });
  await writeFile(path.join(outside, 'secret.txt'), secret);
});

afterEach(async () => {
  await rm(base, { recursive: true, force: true });
});

/** A workspace as an agent might leave it, with every trick the brief lists. */
async function buildHostileWorkspace(): Promise<void> {
  const at = (name: string) => path.join(workspace, name);
  await mkdir(at('src/app'), { recursive: true });
  await writeFile(at('src/app/main.ts'), 'console.log("hi");\n');
  await writeFile(at('README.md'), '# readme\n');
  await mkdir(at('empty'));
  await writeFile(at('run.sh'), '#!/bin/sh\necho run\n');
  await chmod(at('run.sh'), 0o755);
  await chmod(at('README.md'), 0o644);
  await writeFile(at(weirdName), 'weird');
  await symlink('src/app/main.ts', at('link-to-file'));
  await symlink('../app', at('src/link-to-dir')); // resolves to <workspace>/app: inside, though dangling
  await symlink('/etc/passwd', at('passwd'));
  await mkdir(at('deep/er'), { recursive: true });
  await symlink('../../outside', at('deep/er/escape')); // resolves to <workspace>/outside: inside, though dangling
  await symlink('../../../outside', at('deep/er/escape-really')); // <workspace>/../outside
  await symlink('does-not-exist', at('dangling'));
  await symlink(outside, at('outside-dir-absolute'));
  await symlink('../../outside', at('outside-dir')); // workspace/../../outside = jobs/outside, a directory
  await symlink('.', at('self'));
  await symlink('self/..', at('sneaky')); // lexically inside, really the workspace's parent
  await writeFile(at('back\\slash'), 'x');
  await writeFile(at('C:drive'), 'x');
  if (hasMkfifo) execFileSync('mkfifo', [at('fifo')]);
}

describe('zipWorkspace', () => {
  it('archives files, empty dirs, modes and in-workspace symlinks, and nothing from outside', async () => {
    await buildHostileWorkspace();
    const result = await zipWorkspace(workspace, outFile);
    const items = await readZip(outFile);

    expect([...items.keys()]).toEqual([
      'README.md',
      'dangling',
      'deep/',
      'deep/er/',
      'deep/er/escape',
      'empty/',
      weirdName,
      'link-to-file',
      'run.sh',
      'self',
      'src/',
      'src/app/',
      'src/app/main.ts',
      'src/link-to-dir',
    ]);
    expect(result.entries).toBe(items.size);
    expect(result.bytes).toBe(Buffer.byteLength('console.log("hi");\n# readme\n#!/bin/sh\necho run\nweird'));
    expect(result.zipBytes).toBe((await stat(outFile)).size);

    // Symlinks inside stay symlinks, with their text as content.
    expect(items.get('link-to-file')).toEqual({ mode: symlinkMode, content: Buffer.from('src/app/main.ts') });
    expect(items.get('src/link-to-dir')).toEqual({ mode: symlinkMode, content: Buffer.from('../app') });
    expect(items.get('dangling')).toEqual({ mode: symlinkMode, content: Buffer.from('does-not-exist') });
    // Modes survive; type bits say what each entry is.
    expect(items.get('run.sh')?.mode).toBe(fileMode(0o755));
    expect(items.get('README.md')?.mode).toBe(fileMode(0o644));
    expect(items.get('empty/')?.mode).toBe(directoryMode((await stat(path.join(workspace, 'empty'))).mode & 0o777));
    expect(items.get('src/app/main.ts')?.content.toString()).toBe('console.log("hi");\n');
    expect(items.get(weirdName)?.content.toString()).toBe('weird');

    // Nothing from outside: no secret, no passwd, under any name.
    const passwd = existsSync('/etc/passwd') ? await readFile('/etc/passwd') : Buffer.from('root:');
    for (const [name, item] of items) {
      expect(name).not.toMatch(/secret|passwd|outside-dir|escape-really|sneaky|fifo/);
      expect(item.content.toString()).not.toContain(secret);
      expect(item.content.equals(passwd)).toBe(false);
    }

    const reasons = new Map(result.skipped.map((entry) => [entry.path, entry.reason]));
    expect(reasons.get('passwd')).toMatch(/absolute/);
    expect(reasons.get('deep/er/escape-really')).toMatch(/outside the workspace/);
    expect(reasons.get('outside-dir')).toMatch(/outside the workspace/);
    expect(reasons.get('outside-dir-absolute')).toMatch(/absolute/);
    expect(reasons.get('sneaky')).toMatch(/'\.\.' after a name/);
    expect(reasons.get('back\\slash')).toMatch(/backslash/);
    expect(reasons.get('C:drive')).toMatch(/drive letter/);
    if (hasMkfifo) expect(reasons.get('fifo')).toMatch(/FIFO/);
    expect(result.skippedTotal).toBe(result.skipped.length);
    expect(items.get('deep/er/escape')?.content.toString()).toBe('../../outside');
  });

  it('writes a zip that Info-ZIP reads with the same types and modes', async () => {
    const unzip = requireHostTool('unzip');
    await buildHostileWorkspace();
    await zipWorkspace(workspace, outFile);
    const listing = execFileSync(unzip, ['-Z', outFile], { encoding: 'utf8', env: { ...process.env, LC_ALL: 'C.UTF-8' } });
    expect(listing).toMatch(/^lrwxrwxrwx .* link-to-file$/m);
    expect(listing).toMatch(/^-rwxr-xr-x .* run\.sh$/m);
    expect(listing).toMatch(/^-rw-r--r-- .* README\.md$/m);
    expect(listing).toMatch(/^d[rwx-]{9} .* empty\/$/m);
    expect(listing).not.toMatch(/secret|passwd|outside-dir|sneaky|fifo/);
    // And the archive is sound end to end (CRCs included).
    // In a UTF-8 locale, as users run it: under LANG=C (a bare container) Info-ZIP decodes the UTF-8 names of the local
    // and central headers differently and calls that a warning.
    execFileSync(unzip, ['-tq', outFile], { env: { ...process.env, LC_ALL: 'C.UTF-8' } });
  });

  it('keeps a symlink that resolves inside even when it climbs first', async () => {
    await mkdir(path.join(workspace, 'a/b'), { recursive: true });
    await writeFile(path.join(workspace, 'a/target.txt'), 't');
    await symlink('../target.txt', path.join(workspace, 'a/b/up'));
    await symlink('../../a/target.txt', path.join(workspace, 'a/b/up-to-root'));
    await symlink('../../../x', path.join(workspace, 'a/b/too-far'));
    const result = await zipWorkspace(workspace, outFile);
    const items = await readZip(outFile);
    expect(items.get('a/b/up')?.content.toString()).toBe('../target.txt');
    expect(items.get('a/b/up-to-root')?.content.toString()).toBe('../../a/target.txt');
    expect(items.has('a/b/too-far')).toBe(false);
    expect(result.skipped).toEqual([{ path: 'a/b/too-far', reason: expect.stringMatching(/outside the workspace/) as unknown }]);
  });

  it('does not descend a directory symlink that points outside', async () => {
    await mkdir(path.join(outside, 'tree/deeper'), { recursive: true });
    await writeFile(path.join(outside, 'tree/deeper/leak.txt'), secret);
    await symlink(path.join(outside, 'tree'), path.join(workspace, 'abs-tree'));
    await symlink('../../outside/tree', path.join(workspace, 'rel-tree'));
    const result = await zipWorkspace(workspace, outFile);
    expect([...(await readZip(outFile)).keys()]).toEqual([]);
    expect(result.skipped.map((entry) => entry.path)).toEqual(['abs-tree', 'rel-tree']);
  });

  it.skipIf(!hasMkfifo)('skips a FIFO without blocking on it', async () => {
    execFileSync('mkfifo', [path.join(workspace, 'a-fifo')]);
    await writeFile(path.join(workspace, 'z-file'), 'z');
    const result = await zipWorkspace(workspace, outFile);
    expect([...(await readZip(outFile)).keys()]).toEqual(['z-file']);
    expect(result.skipped).toEqual([{ path: 'a-fifo', reason: expect.stringMatching(/FIFO/) as unknown }]);
  });

  it('gives an empty, valid zip for a workspace that does not exist', async () => {
    const result = await zipWorkspace(path.join(base, 'no-such-workspace'), outFile);
    expect(result).toMatchObject({ entries: 0, bytes: 0, skipped: [] });
    expect((await readZip(outFile)).size).toBe(0);
    // Nothing but the end-of-central-directory record.
    const bytes = await readFile(outFile);
    expect(bytes.length).toBe(22);
    expect(bytes.subarray(0, 4).equals(Buffer.from([0x50, 0x4b, 0x05, 0x06]))).toBe(true);
  });

  it('does not walk a workspace root that has been replaced by a symlink', async () => {
    const root = path.join(base, 'jobs', 'job-2', 'workspace');
    await mkdir(path.dirname(root), { recursive: true });
    await symlink(outside, root);
    const result = await zipWorkspace(root, outFile);
    expect((await readZip(outFile)).size).toBe(0);
    expect(result.skipped).toEqual([{ path: '.', reason: expect.stringMatching(/not a directory/) as unknown }]);
  });

  it('is deterministic: the same workspace gives the same bytes', async () => {
    await buildHostileWorkspace();
    await zipWorkspace(workspace, outFile);
    const first = await readFile(outFile);
    await zipWorkspace(workspace, outFile);
    expect((await readFile(outFile)).equals(first)).toBe(true);
  });

  it('streams a large file intact', async () => {
    const content = randomBytes(3 * 1024 * 1024 + 17);
    await writeFile(path.join(workspace, 'big.bin'), content);
    const result = await zipWorkspace(workspace, outFile);
    expect(result.bytes).toBe(content.length);
    expect((await readZip(outFile)).get('big.bin')?.content.equals(content)).toBe(true);
  });

  it('stops past maxBytes with a clear error, leaving no tmp file and the old output alone', async () => {
    await writeFile(path.join(workspace, 'a.txt'), 'x'.repeat(600));
    await writeFile(path.join(workspace, 'b.txt'), 'x'.repeat(600));
    await writeFile(outFile, 'previous output');
    const error: unknown = await zipWorkspace(workspace, outFile, { maxBytes: 1000 }).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(WorkcellError);
    expect(error).toMatchObject({ code: 'payload_too_large', message: expect.stringMatching(/more than 1000 bytes/) as unknown });
    expect(existsSync(`${outFile}.tmp`)).toBe(false);
    expect(await readFile(outFile, 'utf8')).toBe('previous output');
  });

  it('refuses a sparse giant before reading it', async () => {
    const giant = path.join(workspace, 'sparse.bin');
    await writeFile(giant, '');
    execFileSync('truncate', ['-s', '1T', giant]);
    const started = Date.now();
    await expect(zipWorkspace(workspace, outFile, { maxBytes: 1024 ** 3 })).rejects.toMatchObject({ code: 'payload_too_large' });
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it('stops when aborted and removes the tmp file', async () => {
    await writeFile(path.join(workspace, 'big.bin'), randomBytes(64 * 1024 * 1024));
    const controller = new AbortController();
    const zipping = zipWorkspace(workspace, outFile, { signal: controller.signal });
    setTimeout(() => controller.abort(), 30);
    await expect(zipping).rejects.toMatchObject({ name: 'AbortError' });
    expect(existsSync(`${outFile}.tmp`)).toBe(false);
    expect(existsSync(outFile)).toBe(false);
  });

  it('does not start when the signal is already aborted', async () => {
    await expect(zipWorkspace(workspace, outFile, { signal: AbortSignal.abort() })).rejects.toMatchObject({ name: 'AbortError' });
    expect(existsSync(`${outFile}.tmp`)).toBe(false);
  });
});

describe('openWorkspaceEntry', () => {
  const seenAndSwap = async (swap: (file: string) => Promise<void>) => {
    const file = path.join(workspace, 'victim.txt');
    await writeFile(file, 'original');
    const seen = await lstat(file, { bigint: true });
    // The replacement is made elsewhere first, so that it cannot reuse the original's inode number.
    const replacement = path.join(workspace, 'replacement');
    await swap(replacement);
    await rm(file);
    await rename(replacement, file);
    return openWorkspaceEntry(file, seen, workspace, 'file');
  };

  it('refuses a file swapped for a symlink', async () => {
    const opened = await seenAndSwap((file) => symlink(path.join(outside, 'secret.txt'), file));
    expect(opened).toEqual({ skip: expect.stringMatching(/symlink/) as unknown });
  });

  it.skipIf(!hasMkfifo)('refuses a file swapped for a FIFO without blocking', async () => {
    const opened = await seenAndSwap(async (file) => {
      execFileSync('mkfifo', [file]);
    });
    expect(opened).toMatchObject({ skip: expect.stringMatching(/replaced/) as unknown });
  });

  it('refuses a file swapped for another regular file', async () => {
    const opened = await seenAndSwap((file) => writeFile(file, 'impostor'));
    expect(opened).toMatchObject({ skip: expect.stringMatching(/replaced/) as unknown });
  });

  it('refuses a file that is not under the workspace root', async () => {
    const file = path.join(outside, 'secret.txt');
    const opened = await openWorkspaceEntry(file, await lstat(file, { bigint: true }), workspace, 'file');
    if (existsSync('/proc/self/fd')) expect(opened).toEqual({ skip: 'it resolves outside the workspace' });
    else if ('handle' in opened) await opened.handle.close();
  });

  it('opens the file the walk saw', async () => {
    const file = path.join(workspace, 'fine.txt');
    await writeFile(file, 'fine');
    const opened = await openWorkspaceEntry(file, await lstat(file, { bigint: true }), workspace, 'file');
    expect('handle' in opened).toBe(true);
    if ('handle' in opened) await opened.handle.close();
  });
});

describe('naming rules', () => {
  it.each([
    ['../evil', /'\.\.' segment/],
    ['a/../../b', /'\.\.' segment/],
    ['/abs', /absolute/],
    ['C:\\x', /backslash/],
    ['C:x', /drive letter/],
    ['a\\..\\..\\x', /backslash/],
    ['a\0b', /NUL/],
    ['', /empty/],
  ])('refuses the entry name %j', (name, reason) => {
    expect(archiveNameProblem(name)).toMatch(reason);
  });

  it.each(['a', 'a/b/c.txt', weirdName, '..a', 'a..', 'a/.../b', 'dir/'])('accepts the entry name %j', (name) => {
    expect(archiveNameProblem(name)).toBeUndefined();
  });

  it.each([
    ['l', '/etc/passwd', /absolute/],
    ['l', '..', /outside/],
    ['a/l', '../..', /outside/],
    ['a/b/l', '../../../x', /outside/],
    ['l', 'x/..', /after a name/],
    ['l', 'a/../b', /after a name/],
    ['l', '', /empty/],
    ['l', 'a\\b', /backslash/],
    ['l', 'C:/x', /drive letter/],
  ])('refuses the link %j -> %j', (name, target, reason) => {
    expect(symlinkTargetProblem(name, target, 'the workspace')).toMatch(reason);
  });

  it.each([
    ['l', 'target'],
    ['l', '.'],
    ['a/l', '..'],
    ['a/l', '../b/c'],
    ['a/b/l', '../../x'],
    ['l', './x/./y/'],
  ])('accepts the link %j -> %j', (name, target) => {
    expect(symlinkTargetProblem(name, target, 'the workspace')).toBeUndefined();
  });
});
