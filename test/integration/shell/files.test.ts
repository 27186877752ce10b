// search_files (ripgrep in the sandbox) and list_files' depth and ignore rules in a real bwrap sandbox, through the
// agent's tool plumbing: results with file and line, glob and path, confinement (paths and symlinks out), bad input.
import { mkdir, symlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { runTool } from '../../../src/agent/tools/run-tool.ts';
import { useSandbox } from '../../helpers/sandbox.ts';

const signal = new AbortController().signal;

describe('search_files and list_files in a real sandbox', () => {
  const fixture = useSandbox();
  const tool = (name: string, input: Record<string, unknown>) => runTool(fixture().sandbox.client, { name, input }, { signal });

  beforeAll(async () => {
    const files: Record<string, string> = {
      'src/app.py': 'import os\n\ndef handle_request(request):\n    return request.body\n',
      'src/util.ts': 'export function handleRequest(): void {}\n',
      'tests/test_app.py': 'from src.app import handle_request\n',
      'node_modules/lib/index.js': 'function handle_request() {}\n',
      'build/out.py': 'def handle_request(): pass\n',
      '.gitignore': 'build/\n*.log\n',
      'debug.log': 'handle_request failed\n',
      '.git/config': '[core]\n',
    };
    const { workspace, sh } = fixture();
    for (const [path, content] of Object.entries(files)) {
      await mkdir(dirname(join(workspace, path)), { recursive: true });
      await writeFile(join(workspace, path), content);
    }
    // The sandbox user must own what the tests wrote from the host side; and links out of the workspace.
    await symlink('/etc', join(workspace, 'etc-link'));
    await symlink('/etc/passwd', join(workspace, 'src', 'passwd-link'));
    expect((await sh('ls /workspace/src')).exit_code).toBe(0);
  });

  it('finds a pattern with file and line results, skipping ignored and default-skipped files', async () => {
    const result = await tool('search_files', { pattern: 'handle_request' });
    expect(result.isError).toBe(false);
    const lines = result.output.split('\n');
    expect(lines.slice(0, -1).sort()).toEqual(['src/app.py:3: def handle_request(request):', 'tests/test_app.py:1: from src.app import handle_request']);
    expect(lines.at(-1)).toBe('[2 matching lines in 2 files]');
  });

  it('honours glob and path', async () => {
    expect((await tool('search_files', { pattern: 'handle_?[rR]equest', glob: '*.ts' })).output).toBe('src/util.ts:1: export function handleRequest(): void {}\n[1 matching line in 1 file]');
    expect((await tool('search_files', { pattern: 'handle_request', path: 'tests' })).output).toMatch(/^tests\/test_app.py:1:/);
    expect((await tool('search_files', { pattern: 'handle_request', path: '/workspace/src/app.py' })).output).toMatch(/^src\/app.py:3:/);
    // A skipped directory named explicitly is searched.
    expect((await tool('search_files', { pattern: 'handle_request', path: 'build' })).output).toMatch(/^build\/out.py:1:/);
  });

  it('refuses paths outside /workspace and symlinks out, and never follows one while searching', async () => {
    for (const path of ['/etc', '../etc', 'src/../../etc', 'etc-link', 'src/passwd-link', '/workspace/../etc/passwd']) {
      const result = await tool('search_files', { pattern: 'root', path });
      expect(result.isError, path).toBe(true);
      expect(result.output, path).toMatch(/^search_files failed: path_outside_workspace: /);
    }
    expect((await tool('search_files', { pattern: 'root:x:0' })).output).toBe('No match for "root:x:0" in the workspace.');
  });

  it('handles an invalid regex and other bad input with a message that says what to fix', async () => {
    const regex = await tool('search_files', { pattern: 'handle_(request' });
    expect(regex.isError).toBe(true);
    expect(regex.output).toMatch(/^search_files failed: invalid_request: ripgrep refused the search:\nregex parse error:[\s\S]*unclosed group[\s\S]*escape special characters/);
    expect((await tool('search_files', { pattern: 'x', glob: 'src/[' })).output).toMatch(/invalid_request: ripgrep refused the search:[\s\S]*glob/);
    expect((await tool('search_files', { pattern: 'x', path: 'nope' })).output).toMatch(/^search_files failed: not_found: "nope" does not exist/);
    expect((await tool('search_files', { pattern: '' })).output).toMatch(/^Invalid arguments for search_files/);
    expect((await tool('search_files', { pattern: 'x', path: 'a\0b' })).output).toMatch(/invalid_request: path: contains a NUL byte/);
    expect((await tool('search_files', { pattern: 'x', extra: 1 })).output).toMatch(/Unrecognized key.*extra/);
  });

  it('lists with depth and ignore rules, says what it skipped, and lists everything when asked', async () => {
    const listing = await tool('list_files', {});
    expect(listing.output.split('\n')).toEqual([
      '.gitignore  (13 bytes)',
      'etc-link@  (symbolic link)',
      'src/',
      'src/app.py  (64 bytes)',
      'src/passwd-link@  (symbolic link)',
      'src/util.ts  (41 bytes)',
      'tests/',
      'tests/test_app.py  (35 bytes)',
      '[not listed: .git/, node_modules/ (skipped by default); build/, debug.log (ignore files); pass include_ignored: true to list them]',
    ]);
    expect((await tool('list_files', { depth: 1 })).output).not.toContain('src/app.py');
    const everything = await tool('list_files', { depth: 3, include_ignored: true });
    for (const path of ['.git/config', 'node_modules/lib/', 'build/out.py', 'debug.log']) expect(everything.output).toContain(path);
    expect((await tool('list_files', { path: '../' })).output).toMatch(/path_outside_workspace/);
    expect((await tool('list_files', { depth: 99 })).output).toMatch(/^Invalid arguments for list_files/);
  });
});
