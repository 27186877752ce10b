import { mkdir, mkdtemp, realpath, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { requireHostTool } from '../../../test/helpers/host-tools.ts';
import { SandboxdToolError } from '../errors.ts';
import { maxSearchMatches } from '../protocol.ts';
import { maxLineChars, searchFiles } from './search.ts';

let base: string;
let root: string;

// searchFiles runs ripgrep, the host's here.
beforeAll(() => void requireHostTool('rg'));

beforeEach(async () => {
  base = await realpath(await mkdtemp(join(tmpdir(), 'workcell-search-')));
  root = join(base, 'workspace');
  await mkdir(join(base, 'outside'), { recursive: true });
  await writeFile(join(base, 'outside', 'secret.txt'), 'needle outside\n');
  await put({ 'src/app.py': 'import os\ndef needle():\n    return 1\n', 'src/util.ts': 'export const needle = 2;\n', 'README.md': 'no match here\nneedle in docs\n', 'node_modules/pkg/index.js': 'needle\n', 'dist/bundle.js': 'needle\n', '.gitignore': 'dist/\n' });
});

afterEach(async () => {
  await rm(base, { recursive: true, force: true });
});

async function put(files: Record<string, string>): Promise<void> {
  for (const [path, content] of Object.entries(files)) {
    await mkdir(dirname(join(root, path)), { recursive: true });
    await writeFile(join(root, path), content);
  }
}

const search = (request: { pattern: string; path?: string; glob?: string }) => searchFiles(root, { path: '.', ...request });

async function failure(promise: Promise<unknown>): Promise<SandboxdToolError> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof SandboxdToolError) return error;
    throw error;
  }
  throw new Error('expected the search to fail');
}

describe('searchFiles', () => {
  it('finds a pattern with file and line, skipping ignored and default-skipped directories', async () => {
    const result = await search({ pattern: 'needle' });
    expect(result.matches.sort((a, b) => a.path.localeCompare(b.path))).toEqual([
      { path: 'README.md', line: 2, text: 'needle in docs' },
      { path: 'src/app.py', line: 2, text: 'def needle():' },
      { path: 'src/util.ts', line: 1, text: 'export const needle = 2;' },
    ]);
    expect(result).toMatchObject({ path: '.', truncated: false, files_with_matches: 3 });
    expect(result.files_searched).toBeGreaterThanOrEqual(3);
    expect((await search({ pattern: 'nothing matches this' })).matches).toEqual([]);
  });

  it('honours path and glob', async () => {
    expect((await search({ pattern: 'needle', path: 'src' })).matches.map((match) => match.path).sort()).toEqual(['src/app.py', 'src/util.ts']);
    expect((await search({ pattern: 'needle', glob: '*.py' })).matches.map((match) => match.path)).toEqual(['src/app.py']);
    expect((await search({ pattern: 'needle', path: 'src/util.ts' })).matches).toEqual([{ path: 'src/util.ts', line: 1, text: 'export const needle = 2;' }]);
    // Named explicitly, a skipped directory is searched.
    expect((await search({ pattern: 'needle', path: 'node_modules' })).matches.map((match) => match.path)).toEqual(['node_modules/pkg/index.js']);
    expect((await search({ pattern: 'def \\w+\\(' })).matches.map((match) => match.text)).toEqual(['def needle():']);
  });

  it('refuses paths outside the workspace and never follows a symlink out', async () => {
    for (const path of ['../outside', '/etc', `${base}/outside`, 'src/../../outside']) {
      expect((await failure(search({ pattern: 'needle', path }))).code).toBe('path_outside_workspace');
    }
    await symlink(join(base, 'outside'), join(root, 'link-out'));
    await symlink(join(base, 'outside', 'secret.txt'), join(root, 'src', 'secret-link.txt'));
    expect((await failure(search({ pattern: 'needle', path: 'link-out' }))).code).toBe('path_outside_workspace');
    const all = await search({ pattern: 'outside' });
    expect(all.matches).toEqual([]);
  });

  it('reports an invalid regex or glob clearly, and a missing path as not_found', async () => {
    const regex = await failure(search({ pattern: '(unclosed' }));
    expect(regex.code).toBe('invalid_request');
    expect(regex.message).toMatch(/regex parse error[\s\S]*unclosed group[\s\S]*escape special characters/);
    const glob = await failure(search({ pattern: 'x', glob: '[' }));
    expect(glob.code).toBe('invalid_request');
    expect(glob.message).toMatch(/glob/);
    expect((await failure(search({ pattern: 'x', path: 'missing' }))).code).toBe('not_found');
    expect((await failure(search({ pattern: 'a\0b' }))).code).toBe('invalid_request');
    // Options smuggled in as a pattern or glob are data.
    expect((await search({ pattern: '--files' })).matches).toEqual([]);
    expect((await search({ pattern: 'needle', glob: '--pre=sh' })).matches).toEqual([]);
  });

  it('caps results and long lines, and says so', async () => {
    await put({ 'many.txt': 'hit\n'.repeat(maxSearchMatches + 50), 'long.min.js': `${'x'.repeat(5000)}hit${'y'.repeat(5000)}\n` });
    const result = await search({ pattern: 'hit' });
    expect(result.matches).toHaveLength(maxSearchMatches);
    expect(result.truncated).toBe(true);
    expect(result.files_searched).toBeUndefined();
    const long = await search({ pattern: 'hit', path: 'long.min.js' });
    expect(long.matches[0]?.text).toContain('hit');
    expect(long.matches[0]?.text.length).toBeLessThan(maxLineChars + 60);
    expect(long.matches[0]?.text).toMatch(/\[line of 10003 characters, cut\]$/);
  });
});
