import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { once } from 'node:events';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, stat, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { readyLine } from '../sandboxd/protocol.ts';
import { SandboxdClient } from './sandboxd-client.ts';
import { sandboxdBundle } from './sandboxd-bundle.ts';

let base: string;
let child: ChildProcessWithoutNullStreams | undefined;

beforeEach(async () => {
  base = await mkdtemp(join(tmpdir(), 'workcell-bundle-'));
});

afterEach(async () => {
  if (child !== undefined && child.exitCode === null && child.signalCode === null) {
    child.kill('SIGKILL');
    await once(child, 'exit');
  }
  child = undefined;
  await rm(base, { recursive: true, force: true });
});

describe('sandboxdBundle', () => {
  it('builds one self-contained file, named by its content, that starts and serves', async () => {
    const outDir = join(base, 'out');
    const path = await sandboxdBundle(outDir);
    expect(basename(path)).toMatch(/^sandboxd-[0-9a-f]{12}\.mjs$/);
    expect(await readdir(outDir)).toEqual([basename(path)]);
    const source = await readFile(path, 'utf8');
    expect(source.startsWith("import { createRequire } from 'module';")).toBe(true);
    expect(source).not.toMatch(/from ["']zod["']/);

    // Run it from a directory with no node_modules anywhere above it.
    const isolated = join(base, 'isolated');
    const workspace = join(base, 'workspace');
    await mkdir(isolated);
    await mkdir(workspace);
    const copy = join(isolated, basename(path));
    await copyFile(path, copy);
    const socketPath = join(base, 'sandboxd.sock');
    // The one thing the bundle does not hold is the native node-pty, which it requires from the image's
    // /usr/local/lib/workcell/node_modules; on this host, Node's global folders (NODE_PATH) stand in for it.
    const nodePath = join(import.meta.dirname, '..', '..', 'node_modules');
    child = spawn(process.execPath, [copy, '--socket', socketPath, '--workspace', workspace], { cwd: isolated, stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, NODE_PATH: nodePath } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
    child.stdin.end('bundle-token\n');
    while (!stdout.includes('\n')) {
      const [event] = await Promise.race([once(child.stdout, 'data').then(() => ['data']), once(child, 'exit').then(() => ['exit'])]);
      if (event === 'exit') throw new Error(`the bundle exited before it was ready: ${stderr}`);
    }
    expect(readyLine.parse(JSON.parse(stdout))).toMatchObject({ ready: true, pid: child.pid });

    const client = new SandboxdClient({ socketPath }, 'bundle-token');
    try {
      expect(await client.call('writeFile', { path: 'hello.txt', content: 'hi' })).toMatchObject({ created: true });
      expect((await client.call('shellExec', { command: 'cat hello.txt' })).output).toBe('hi');
    } finally {
      client.close();
    }
    child.kill('SIGTERM');
    const [code] = (await once(child, 'exit')) as [number | null];
    expect(code).toBe(0);
  });

  it('returns the same path for the same source, and does not rewrite it', async () => {
    const outDir = join(base, 'out');
    const first = await sandboxdBundle(outDir);
    expect(await sandboxdBundle(outDir)).toBe(first);
    // The same directory under another name is built again (not memoized) but finds the file and leaves it alone.
    const before = await stat(first);
    await symlink(outDir, join(base, 'alias'));
    const again = await sandboxdBundle(join(base, 'alias'));
    expect(basename(again)).toBe(basename(first));
    const after = await stat(first);
    expect([after.ino, after.mtimeMs]).toEqual([before.ino, before.mtimeMs]);
    expect(await readdir(outDir)).toEqual([basename(first)]);
    // Another output directory builds again (the memo is per directory) to the same name: same source, same hash.
    const other = await sandboxdBundle(join(base, 'other'));
    expect(basename(other)).toBe(basename(first));
    expect(await readFile(other)).toEqual(await readFile(first));
  });
});
