// sandboxd --token-file: the token from a file (for containers, whose stdin nobody writes), which sandboxd deletes
// once read.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { once } from 'node:events';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { SandboxdClient } from '../runtimes/sandboxd-client.ts';
import { readyLine } from './protocol.ts';

const mainPath = fileURLToPath(new URL('main.ts', import.meta.url));
let base: string;
let child: ChildProcessWithoutNullStreams | undefined;

beforeEach(async () => {
  base = await mkdtemp(join(tmpdir(), 'workcell-token-file-'));
});

afterEach(async () => {
  if (child !== undefined && child.exitCode === null && child.signalCode === null) {
    child.kill('SIGKILL');
    await once(child, 'exit');
  }
  child = undefined;
  await rm(base, { recursive: true, force: true });
});

it('reads the token from --token-file, deletes the file and accepts only that token', async () => {
  const workspace = join(base, 'workspace');
  const secrets = join(base, 'secrets');
  await mkdir(workspace);
  await mkdir(secrets);
  await writeFile(join(secrets, 'token'), 'file-token\nignored second line\n', { mode: 0o600 });
  child = spawn(process.execPath, [mainPath, '--listen', '127.0.0.1:0', '--workspace', workspace, '--token-file', join(secrets, 'token')], { stdio: ['pipe', 'pipe', 'pipe'] });
  child.stdin.end();
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
  while (!stdout.includes('\n')) {
    const [event] = await Promise.race([once(child.stdout, 'data').then(() => ['data']), once(child, 'exit').then(() => ['exit'])]);
    if (event === 'exit') throw new Error(`sandboxd exited before it was ready: ${stderr}`);
  }
  const { port } = readyLine.parse(JSON.parse(stdout));
  expect(await readdir(secrets)).toEqual([]);
  const client = new SandboxdClient({ host: '127.0.0.1', port: port! }, 'file-token');
  const stranger = new SandboxdClient({ host: '127.0.0.1', port: port! }, 'ignored second line');
  try {
    expect(await client.healthy()).toBe(true);
    expect(await stranger.healthy()).toBe(false);
  } finally {
    client.close();
    stranger.close();
  }
});

it('refuses to start when the token file is missing', async () => {
  const workspace = join(base, 'workspace');
  await mkdir(workspace);
  child = spawn(process.execPath, [mainPath, '--listen', '127.0.0.1:0', '--workspace', workspace, '--token-file', join(base, 'absent')], { stdio: ['pipe', 'pipe', 'pipe'] });
  child.stdin.end();
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
  const [code] = (await once(child, 'exit')) as [number | null];
  expect(code).toBe(2);
  expect(stderr).toMatch(/cannot read the token from .*absent/);
});
