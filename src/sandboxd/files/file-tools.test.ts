import { lstat, mkdir, mkdtemp, readFile, realpath, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { SandboxdToolError } from '../errors.ts';
import { maxFileBytes } from '../protocol.ts';
import { maxListEntries, WorkspaceFiles } from './file-tools.ts';

let base: string;
let root: string;
let outside: string;
let files: WorkspaceFiles;

beforeEach(async () => {
  base = await realpath(await mkdtemp(join(tmpdir(), 'workcell-files-')));
  root = join(base, 'workspace');
  outside = join(base, 'outside');
  await mkdir(root);
  await mkdir(outside);
  await writeFile(join(outside, 'secret.txt'), 'secret\n');
  files = new WorkspaceFiles(root);
});

afterEach(async () => {
  await rm(base, { recursive: true, force: true });
});

async function codeOf(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof SandboxdToolError) return error.code;
    throw error;
  }
  throw new Error('expected the call to fail');
}

async function failure(promise: Promise<unknown>): Promise<SandboxdToolError> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof SandboxdToolError) return error;
    throw error;
  }
  throw new Error('expected the call to fail');
}

async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch {
    return false;
  }
}

describe('normal use', () => {
  it('writes, reads, edits, lists and deletes', async () => {
    expect(await files.write({ path: 'src/deep/a.txt', content: 'hello\nworld\n' })).toEqual({ path: 'src/deep/a.txt', size: 12, created: true });
    expect(await files.write({ path: 'src/deep/a.txt', content: 'hello\nthere\n' })).toEqual({ path: 'src/deep/a.txt', size: 12, created: false });
    expect(await files.read({ path: 'src/deep/a.txt' })).toEqual({ path: 'src/deep/a.txt', content: 'hello\nthere\n', size: 12 });
    expect(await files.edit({ path: './src/deep/a.txt', old_string: 'there', new_string: 'every\u00e9' })).toEqual({ path: 'src/deep/a.txt', size: 14 });
    expect(await readFile(join(root, 'src/deep/a.txt'), 'utf8')).toBe('hello\nevery\u00e9\n');
    await files.write({ path: 'b.txt', content: '' });
    await files.write({ path: 'src-x', content: 'x' });
    const listing = await files.list({ path: '.', depth: 3 });
    expect(listing).toEqual({
      path: '.',
      truncated: false,
      ignored: [],
      ignored_count: 0,
      entries: [
        { path: 'b.txt', type: 'file', size: 0 },
        { path: 'src', type: 'directory', size: 0 },
        { path: 'src/deep', type: 'directory', size: 0 },
        { path: 'src/deep/a.txt', type: 'file', size: 14 },
        { path: 'src-x', type: 'file', size: 1 },
      ],
    });
    expect((await files.list({ path: 'src', depth: 1 })).entries.map((entry) => entry.path)).toEqual(['src/deep']);
    expect(await files.delete({ path: 'src' })).toEqual({ path: 'src', type: 'directory' });
    expect(await exists(join(root, 'src'))).toBe(false);
    expect(await files.delete({ path: 'b.txt' })).toEqual({ path: 'b.txt', type: 'file' });
  });

  it('accepts absolute paths inside the workspace and returns workspace-relative paths', async () => {
    await files.write({ path: join(root, 'a.txt'), content: 'x' });
    expect((await files.read({ path: join(root, 'a.txt') })).path).toBe('a.txt');
    expect((await files.read({ path: 'dir/../a.txt' })).path).toBe('a.txt');
  });

  it('follows symlinks that stay inside the workspace', async () => {
    await files.write({ path: 'real/a.txt', content: 'inside' });
    await symlink('real', join(root, 'linkdir'));
    await symlink(join(root, 'real/a.txt'), join(root, 'link.txt'));
    expect((await files.read({ path: 'linkdir/a.txt' })).content).toBe('inside');
    expect((await files.read({ path: 'link.txt' })).content).toBe('inside');
    await files.write({ path: 'link.txt', content: 'changed' });
    expect(await readFile(join(root, 'real/a.txt'), 'utf8')).toBe('changed');
    expect((await lstat(join(root, 'link.txt'))).isSymbolicLink()).toBe(true);
  });

  it('reports not_found, not_a_file and not_a_directory', async () => {
    await files.write({ path: 'dir/a.txt', content: 'x' });
    expect(await codeOf(files.read({ path: 'missing.txt' }))).toBe('not_found');
    expect(await codeOf(files.read({ path: 'dir' }))).toBe('not_a_file');
    expect(await codeOf(files.edit({ path: 'dir', old_string: 'a', new_string: 'b' }))).toBe('not_a_file');
    expect(await codeOf(files.write({ path: 'dir', content: 'x' }))).toBe('not_a_file');
    expect(await codeOf(files.list({ path: 'dir/a.txt', depth: 1 }))).toBe('not_a_directory');
    expect(await codeOf(files.list({ path: 'nope', depth: 1 }))).toBe('not_found');
    expect(await codeOf(files.delete({ path: 'nope' }))).toBe('not_found');
    expect(await codeOf(files.write({ path: 'dir/a.txt/b', content: 'x' }))).toBe('not_a_directory');
  });
});

describe('edit', () => {
  it('refuses when old_string does not occur, or occurs more than once, and leaves the file alone', async () => {
    await files.write({ path: 'a.txt', content: 'one two two\n' });
    const none = await failure(files.edit({ path: 'a.txt', old_string: 'three', new_string: 'x' }));
    expect(none.code).toBe('no_match');
    expect(none.message).toMatch(/exactly/);
    const many = await failure(files.edit({ path: 'a.txt', old_string: 'two', new_string: 'x' }));
    expect(many.code).toBe('multiple_matches');
    expect(many.message).toContain('2 times');
    expect(many.message).toMatch(/surrounding/);
    expect(await readFile(join(root, 'a.txt'), 'utf8')).toBe('one two two\n');
    await files.edit({ path: 'a.txt', old_string: 'two two', new_string: '2' });
    expect(await readFile(join(root, 'a.txt'), 'utf8')).toBe('one 2\n');
  });

  it('counts overlapping matches as ambiguous', async () => {
    await files.write({ path: 'a.txt', content: 'aaa' });
    expect(await codeOf(files.edit({ path: 'a.txt', old_string: 'aa', new_string: 'b' }))).toBe('multiple_matches');
  });
});

describe('limits and content checks', () => {
  it('refuses files over maxFileBytes with a hint to use the shell', async () => {
    await writeFile(join(root, 'huge.log'), Buffer.alloc(maxFileBytes + 1, 'a'));
    const error = await failure(files.read({ path: 'huge.log' }));
    expect(error.code).toBe('too_large');
    expect(error.message).toContain(String(maxFileBytes + 1));
    expect(error.message).toMatch(/shell.*head/);
    expect(await codeOf(files.edit({ path: 'huge.log', old_string: 'a', new_string: 'b' }))).toBe('too_large');
    expect(await codeOf(files.write({ path: 'big.txt', content: '\u00e9'.repeat(maxFileBytes / 2 + 1) }))).toBe('too_large');
  });

  it('refuses binary files: NUL bytes or invalid UTF-8', async () => {
    await writeFile(join(root, 'nul.bin'), Buffer.from([0x61, 0x00, 0x62]));
    await writeFile(join(root, 'latin1.txt'), Buffer.from([0x63, 0x61, 0x66, 0xe9]));
    const error = await failure(files.read({ path: 'nul.bin' }));
    expect(error.code).toBe('binary_file');
    expect(error.message).toContain('3 bytes');
    expect(await codeOf(files.read({ path: 'latin1.txt' }))).toBe('binary_file');
    expect(await codeOf(files.edit({ path: 'nul.bin', old_string: 'a', new_string: 'c' }))).toBe('binary_file');
  });

  it('caps listings at maxListEntries and says so', async () => {
    await mkdir(join(root, 'many'));
    await Promise.all(Array.from({ length: maxListEntries + 5 }, (_, i) => writeFile(join(root, 'many', `f${i}`), '')));
    const listing = await files.list({ path: '.', depth: 2 });
    expect(listing.entries).toHaveLength(maxListEntries);
    expect(listing.truncated).toBe(true);
    expect(listing.entries[0]).toEqual({ path: 'many', type: 'directory', size: 0 });
  });
});

describe('confinement', () => {
  const hostilePaths = ['../../etc/passwd', '/etc/passwd', '/workspace/../etc', '..', 'a/../../outside/secret.txt'];

  it.each(hostilePaths)('refuses %s in every tool', async (path) => {
    expect(await codeOf(files.read({ path }))).toBe('path_outside_workspace');
    expect(await codeOf(files.write({ path, content: 'x' }))).toBe('path_outside_workspace');
    expect(await codeOf(files.edit({ path, old_string: 'root', new_string: 'x' }))).toBe('path_outside_workspace');
    expect(await codeOf(files.list({ path, depth: 1 }))).toBe('path_outside_workspace');
    expect(await codeOf(files.delete({ path }))).toBe('path_outside_workspace');
  });

  it('refuses the outside directory by absolute path and by climbing', async () => {
    const path = join(outside, 'secret.txt');
    expect(await codeOf(files.read({ path }))).toBe('path_outside_workspace');
    expect(await codeOf(files.write({ path, content: 'pwned' }))).toBe('path_outside_workspace');
    expect(await codeOf(files.delete({ path: '../outside/secret.txt' }))).toBe('path_outside_workspace');
    expect(await readFile(path, 'utf8')).toBe('secret\n');
  });

  it('refuses NUL bytes and empty paths as invalid requests', async () => {
    expect(await codeOf(files.read({ path: 'a\0b' }))).toBe('invalid_request');
    expect(await codeOf(files.write({ path: 'a.txt\0/../../x', content: 'x' }))).toBe('invalid_request');
    expect(await codeOf(files.read({ path: '' }))).toBe('invalid_request');
  });

  it('never goes through a symlink to /etc', async () => {
    await symlink('/etc', join(root, 'etc'));
    await symlink('/etc/passwd', join(root, 'passwd'));
    expect(await codeOf(files.read({ path: 'etc/passwd' }))).toBe('path_outside_workspace');
    expect(await codeOf(files.read({ path: 'passwd' }))).toBe('path_outside_workspace');
    expect(await codeOf(files.list({ path: 'etc', depth: 1 }))).toBe('path_outside_workspace');
    expect(await codeOf(files.edit({ path: 'passwd', old_string: 'root', new_string: 'x' }))).toBe('path_outside_workspace');
    // Listing the workspace shows the links as links and does not descend into them.
    const listing = await files.list({ path: '.', depth: 5 });
    expect(listing.entries.map((entry) => `${entry.path}:${entry.type}`)).toEqual(['etc:symlink', 'passwd:symlink']);
  });

  it('never writes, edits or deletes through a symlinked directory that points outside', async () => {
    await symlink(outside, join(root, 'out'));
    await symlink(join(outside, 'secret.txt'), join(root, 'secret-link'));
    expect(await codeOf(files.write({ path: 'out/secret.txt', content: 'pwned' }))).toBe('path_outside_workspace');
    expect(await codeOf(files.write({ path: 'out/new.txt', content: 'pwned' }))).toBe('path_outside_workspace');
    expect(await codeOf(files.write({ path: 'out/sub/new.txt', content: 'pwned' }))).toBe('path_outside_workspace');
    expect(await codeOf(files.write({ path: 'secret-link', content: 'pwned' }))).toBe('path_outside_workspace');
    expect(await codeOf(files.edit({ path: 'out/secret.txt', old_string: 'secret', new_string: 'pwned' }))).toBe('path_outside_workspace');
    expect(await codeOf(files.edit({ path: 'secret-link', old_string: 'secret', new_string: 'pwned' }))).toBe('path_outside_workspace');
    expect(await codeOf(files.delete({ path: 'out/secret.txt' }))).toBe('path_outside_workspace');
    expect(await codeOf(files.read({ path: 'out/../out/secret.txt' }))).toBe('path_outside_workspace');
    expect(await readFile(join(outside, 'secret.txt'), 'utf8')).toBe('secret\n');
    expect(await exists(join(outside, 'new.txt'))).toBe(false);
    expect(await exists(join(outside, 'sub'))).toBe(false);
  });

  it('deletes a symlink itself, never its target', async () => {
    await symlink(outside, join(root, 'out'));
    await symlink(join(outside, 'secret.txt'), join(root, 'secret-link'));
    expect(await files.delete({ path: 'out' })).toEqual({ path: 'out', type: 'symlink' });
    expect(await files.delete({ path: 'secret-link' })).toEqual({ path: 'secret-link', type: 'symlink' });
    expect(await readFile(join(outside, 'secret.txt'), 'utf8')).toBe('secret\n');
    expect(await exists(join(root, 'out'))).toBe(false);
  });

  it('deleting a directory removes links inside it, not what they point to', async () => {
    await mkdir(join(root, 'dir'));
    await symlink(outside, join(root, 'dir', 'out'));
    await files.delete({ path: 'dir' });
    expect(await readFile(join(outside, 'secret.txt'), 'utf8')).toBe('secret\n');
  });

  it('does not create the target of a dangling symlink that points outside', async () => {
    await symlink(join(outside, 'created-by-write.txt'), join(root, 'dangling'));
    await symlink(join(outside, 'no-such-dir', 'x'), join(root, 'dangling-deep'));
    expect(await codeOf(files.write({ path: 'dangling', content: 'pwned' }))).toBe('path_outside_workspace');
    expect(await codeOf(files.write({ path: 'dangling-deep', content: 'pwned' }))).toBe('path_outside_workspace');
    expect(await codeOf(files.read({ path: 'dangling' }))).toBe('path_outside_workspace');
    expect(await exists(join(outside, 'created-by-write.txt'))).toBe(false);
    expect(await exists(join(outside, 'no-such-dir'))).toBe(false);
    // A dangling link that points inside the workspace is written through, like `echo > link` would.
    await symlink('inside-target.txt', join(root, 'dangling-inside'));
    expect((await files.write({ path: 'dangling-inside', content: 'ok' })).created).toBe(true);
    expect(await readFile(join(root, 'inside-target.txt'), 'utf8')).toBe('ok');
  });

  it('follows chains of links and refuses loops', async () => {
    await symlink('b', join(root, 'a'));
    await symlink('a', join(root, 'b'));
    expect(await codeOf(files.read({ path: 'a' }))).toBe('invalid_request');
    await symlink(outside, join(root, 'hop1'));
    await symlink('hop1/secret.txt', join(root, 'hop2'));
    expect(await codeOf(files.read({ path: 'hop2' }))).toBe('path_outside_workspace');
    await symlink('..', join(root, 'up'));
    expect(await codeOf(files.read({ path: 'up/outside/secret.txt' }))).toBe('path_outside_workspace');
    expect(await codeOf(files.delete({ path: 'up/outside' }))).toBe('path_outside_workspace');
    expect(await codeOf(files.list({ path: 'up', depth: 1 }))).toBe('path_outside_workspace');
  });

  it('never deletes the workspace root, however it is named', async () => {
    await files.write({ path: 'keep.txt', content: 'x' });
    await symlink('.', join(root, 'self'));
    for (const path of ['.', './', root, `${root}/`, 'a/..', '']) {
      expect(await codeOf(files.delete({ path }))).toBe('invalid_request');
    }
    // Deleting a link to the root removes the link only.
    expect(await files.delete({ path: 'self' })).toEqual({ path: 'self', type: 'symlink' });
    expect(await readFile(join(root, 'keep.txt'), 'utf8')).toBe('x');
  });

  it('refuses FIFOs without hanging', async () => {
    const { execFileSync } = await import('node:child_process');
    execFileSync('mkfifo', [join(root, 'pipe')]);
    expect(await codeOf(files.read({ path: 'pipe' }))).toBe('not_a_file');
    expect(await codeOf(files.write({ path: 'pipe', content: 'x' }))).toBe('not_a_file');
  });
});

describe('list_files ignore rules', () => {
  it('skips .git, node_modules, __pycache__, .venv and what ignore files say, and names what it skipped', async () => {
    for (const path of ['.git/HEAD', 'node_modules/pkg/index.js', 'src/__pycache__/m.pyc', '.venv/bin/python', 'dist/app.js', 'src/app.ts', 'src/app.log', 'src/keep.log', 'logs/a.log', 'docs/readme.md', 'docs/build/out.html', '.env']) {
      await files.write({ path, content: 'x' });
    }
    await files.write({ path: '.gitignore', content: '# build output\ndist/\n*.log\n!keep.log\n' });
    await files.write({ path: 'docs/.ignore', content: 'build\n' });
    const listing = await files.list({ path: '.', depth: 3 });
    expect(listing.entries.map((entry) => entry.path)).toEqual(['.env', '.gitignore', 'docs', 'docs/.ignore', 'docs/readme.md', 'logs', 'src', 'src/app.ts', 'src/keep.log']);
    expect(listing.ignored).toEqual([
      { path: '.git', type: 'directory', reason: 'default' },
      { path: '.venv', type: 'directory', reason: 'default' },
      { path: 'dist', type: 'directory', reason: 'ignore_file' },
      { path: 'docs/build', type: 'directory', reason: 'ignore_file' },
      { path: 'logs/a.log', type: 'file', reason: 'ignore_file' },
      { path: 'node_modules', type: 'directory', reason: 'default' },
      { path: 'src/__pycache__', type: 'directory', reason: 'default' },
      { path: 'src/app.log', type: 'file', reason: 'ignore_file' },
    ]);
    expect(listing.ignored_count).toBe(8);
    // Rules of directories above the one listed apply, with paths as the caller named them.
    expect(await files.list({ path: 'src', depth: 1 })).toMatchObject({ entries: [{ path: 'src/app.ts' }, { path: 'src/keep.log' }], ignored_count: 2 });
    // A directory named explicitly is listed, whatever the rules say of it.
    expect((await files.list({ path: 'node_modules', depth: 2 })).entries.map((entry) => entry.path)).toEqual(['node_modules/pkg', 'node_modules/pkg/index.js']);
    const everything = await files.list({ path: '.', depth: 3, include_ignored: true });
    expect(everything.ignored_count).toBe(0);
    expect(everything.entries.map((entry) => entry.path)).toContain('node_modules/pkg');
    expect(everything.entries.map((entry) => entry.path)).toContain('src/app.log');
  });

  it('lists depth levels as asked', async () => {
    await files.write({ path: 'a/b/c/d/e.txt', content: 'x' });
    expect((await files.list({ path: '.', depth: 1 })).entries.map((entry) => entry.path)).toEqual(['a']);
    expect((await files.list({ path: '.', depth: 4 })).entries.map((entry) => entry.path)).toEqual(['a', 'a/b', 'a/b/c', 'a/b/c/d']);
    expect((await files.list({ path: '.', depth: 5 })).entries.at(-1)?.path).toBe('a/b/c/d/e.txt');
  });

  it('never reads an ignore file through a symlink', async () => {
    await writeFile(join(outside, 'rules'), '*\n');
    await symlink(join(outside, 'rules'), join(root, '.gitignore'));
    await files.write({ path: 'visible.txt', content: 'x' });
    expect((await files.list({ path: '.', depth: 1 })).entries.map((entry) => entry.path)).toEqual(['.gitignore', 'visible.txt']);
  });
});
