import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { lstat, mkdir, mkdtemp, readFile, realpath, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { requireHostTool } from '../../test/helpers/host-tools.ts';
import { SandboxdClient, SandboxdError } from '../runtimes/sandboxd-client.ts';
import { errorResponse, readyLine } from './protocol.ts';
import { createSandboxdServer, type SandboxdServer } from './server.ts';
import { listenOnSocket } from './listen.ts';

const token = 'test-token-0123456789abcdef';
let base: string;
let workspace: string;
let socketPath: string;
let server: SandboxdServer | undefined;
let client: SandboxdClient | undefined;

beforeEach(async () => {
  base = await realpath(await mkdtemp(join(tmpdir(), 'workcell-sandboxd-')));
  workspace = join(base, 'workspace');
  socketPath = join(base, 'sandboxd.sock');
  await mkdir(workspace);
});

afterEach(async () => {
  client?.close();
  client = undefined;
  await server?.close();
  server = undefined;
  await rm(base, { recursive: true, force: true });
});

async function startServer(): Promise<SandboxdClient> {
  server = createSandboxdServer({ token, workspaceRoot: workspace });
  await listenOnSocket(server.httpServer, socketPath);
  client = new SandboxdClient({ socketPath }, token);
  return client;
}

async function failure(promise: Promise<unknown>): Promise<SandboxdError> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof SandboxdError) return error;
    throw error;
  }
  throw new Error('expected the call to fail');
}

function errorOf(body: string) {
  return errorResponse.parse(JSON.parse(body)).error;
}

/** A raw request, for what the real client never sends (bad JSON, other content types, unknown routes). */
function rawRequest(options: { path: string; method?: string; body?: string; headers?: Record<string, string> }): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        socketPath,
        path: options.path,
        method: options.method ?? 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', ...options.headers },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      },
    );
    req.on('error', reject);
    req.end(options.body);
  });
}

describe('sandboxd server', () => {
  it('serves the tools to the real client', async () => {
    const sandboxd = await startServer();
    expect(await sandboxd.healthy()).toBe(true);
    expect(await sandboxd.call('writeFile', { path: 'src/a.txt', content: 'one\n' })).toEqual({ path: 'src/a.txt', size: 4, created: true });
    expect(await sandboxd.call('editFile', { path: 'src/a.txt', old_string: 'one', new_string: 'two' })).toEqual({ path: 'src/a.txt', size: 4 });
    expect(await sandboxd.call('readFile', { path: 'src/a.txt' })).toEqual({ path: 'src/a.txt', content: 'two\n', size: 4 });
    expect((await sandboxd.call('listFiles', {})).entries).toEqual([
      { path: 'src', type: 'directory', size: 0 },
      { path: 'src/a.txt', type: 'file', size: 4 },
    ]);
    const shell = await sandboxd.call('shellExec', { command: 'pwd; cat src/a.txt; exit_status() { return 3; }; exit_status' });
    expect(shell).toMatchObject({ output: `${workspace}\ntwo\n`, exit_code: 3, timed_out: false });
    expect(await sandboxd.call('deleteFile', { path: 'src' })).toEqual({ path: 'src', type: 'directory' });
  });

  it('answers tool errors with their code and a message that says what to do', async () => {
    const sandboxd = await startServer();
    const outside = await failure(sandboxd.call('readFile', { path: '../../etc/passwd' }));
    expect(outside.code).toBe('path_outside_workspace');
    expect((await failure(sandboxd.call('readFile', { path: 'missing.txt' }))).code).toBe('not_found');
    await sandboxd.call('writeFile', { path: 'a.txt', content: 'x x' });
    const ambiguous = await failure(sandboxd.call('editFile', { path: 'a.txt', old_string: 'x', new_string: 'y' }));
    expect(ambiguous.code).toBe('multiple_matches');
    expect(ambiguous.message).toContain('2 times');
  });

  it('refuses a wrong or missing token with 401', async () => {
    await startServer();
    const wrong = new SandboxdClient({ socketPath }, 'not-the-token');
    try {
      expect(await wrong.healthy()).toBe(false);
      expect((await failure(wrong.call('readFile', { path: 'a.txt' }))).code).toBe('unauthorized');
    } finally {
      wrong.close();
    }
    const missing = await rawRequest({ path: '/v1/files/read', body: '{"path":"a"}', headers: { authorization: '' } });
    expect(missing.status).toBe(401);
    expect(JSON.parse(missing.body)).toEqual({ error: { code: 'unauthorized', message: expect.any(String) as string } });
    expect((await rawRequest({ path: '/v1/health', method: 'GET', headers: { authorization: `Bearer ${token}x` } })).status).toBe(401);
  });

  it('answers malformed JSON and other content types with 400 invalid_request', async () => {
    await startServer();
    const malformed = await rawRequest({ path: '/v1/files/read', body: '{"path": "a.txt"' });
    expect(malformed.status).toBe(400);
    expect(errorOf(malformed.body).code).toBe('invalid_request');
    const text = await rawRequest({ path: '/v1/files/read', body: 'path=a.txt', headers: { 'content-type': 'text/plain' } });
    expect(text.status).toBe(400);
    expect(errorOf(text.body).message).toContain('application/json');
  });

  it('names the field in validation errors', async () => {
    const sandboxd = await startServer();
    const wrongType = await failure(sandboxd.call('readFile', { path: 42 } as unknown as { path: string }));
    expect(wrongType.code).toBe('invalid_request');
    expect(wrongType.message).toContain('path: expected string, got a number');
    const missing = await failure(sandboxd.call('editFile', { path: 'a.txt', old_string: 'x' } as unknown as { path: string; old_string: string; new_string: string }));
    expect(missing.message).toContain('new_string: expected string, got nothing');
    const renamed = await failure(sandboxd.call('readFile', { file_path: 'a.txt' } as unknown as { path: string }));
    expect(renamed.message).toMatch(/path: expected string.*unknown field file_path/);
    const timeout = await failure(sandboxd.call('shellExec', { command: 'true', timeout_ms: -5 }));
    expect(timeout.message).toContain('timeout_ms');
  });

  it('refuses a 20 MiB body with 413 too_large', async () => {
    const sandboxd = await startServer();
    const error = await failure(sandboxd.call('writeFile', { path: 'big.txt', content: 'x'.repeat(20 * 1024 * 1024) }));
    expect(error.code).toBe('too_large');
    await expect(lstat(join(workspace, 'big.txt'))).rejects.toThrow();
    // The server is still fine afterwards.
    expect(await sandboxd.healthy()).toBe(true);
  });

  it('answers unknown routes with 404 and wrong methods with 405', async () => {
    await startServer();
    const unknown = await rawRequest({ path: '/v1/files/chmod', body: '{}' });
    expect(unknown.status).toBe(404);
    expect(errorOf(unknown.body).code).toBe('not_found');
    expect((await rawRequest({ path: '/v1/files/read', method: 'GET' })).status).toBe(405);
  });

  it('answers an unexpected failure with 500 internal and no stack trace', async () => {
    const sandboxd = await startServer();
    await rm(workspace, { recursive: true });
    const response = await rawRequest({ path: '/v1/files/read', body: '{"path":"a.txt"}' });
    expect(response.status).toBe(500);
    const error = errorOf(response.body);
    expect(error.code).toBe('internal');
    expect(error.message).not.toMatch(/\n\s+at /);
    expect((await failure(sandboxd.call('readFile', { path: 'a.txt' }))).code).toBe('internal');
  });
});

describe('listenOnSocket', () => {
  it('creates the socket with mode 0600 and replaces a stale one', async () => {
    // A stale socket: what a sandboxd killed with SIGKILL leaves behind.
    const script = `require('node:net').createServer().listen(${JSON.stringify(socketPath)}, () => process.kill(process.pid, 'SIGKILL'))`;
    const stale = spawn(process.execPath, ['-e', script], { stdio: 'ignore' });
    await once(stale, 'exit');
    expect((await lstat(socketPath)).isSocket()).toBe(true);
    const sandboxd = await startServer();
    expect((await lstat(socketPath)).mode & 0o777).toBe(0o600);
    expect(await sandboxd.healthy()).toBe(true);
  });

  it('refuses to replace a file that is not a socket, or a live socket', async () => {
    await writeFile(socketPath, 'not a socket');
    server = createSandboxdServer({ token, workspaceRoot: workspace });
    await expect(listenOnSocket(server.httpServer, socketPath)).rejects.toThrow(/not a socket/);
    expect(await readFile(socketPath, 'utf8')).toBe('not a socket');
    await rm(socketPath);
    await listenOnSocket(server.httpServer, socketPath);
    const second = createSandboxdServer({ token, workspaceRoot: workspace });
    try {
      await expect(listenOnSocket(second.httpServer, socketPath)).rejects.toThrow(/in use/);
    } finally {
      await second.close();
    }
  });
});

describe('main.ts as a process', () => {
  const mainPath = fileURLToPath(new URL('./main.ts', import.meta.url));
  let child: ChildProcessWithoutNullStreams | undefined;

  afterEach(async () => {
    if (child !== undefined && child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await once(child, 'exit');
    }
    child = undefined;
  });

  it('reads the token from stdin, prints only the ready line on stdout, and exits 0 on SIGTERM', async () => {
    child = spawn(process.execPath, [mainPath, '--socket', socketPath, '--workspace', workspace], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
    child.stdin.end(`${token}\nthis second line must never be read as anything\n`);
    while (!stdout.includes('\n')) {
      const [event] = await Promise.race([once(child.stdout, 'data').then(() => ['data']), once(child, 'exit').then(() => ['exit'])]);
      if (event === 'exit') throw new Error(`sandboxd exited before it was ready: ${stderr}`);
    }
    const ready = readyLine.parse(JSON.parse(stdout.trim()));
    expect(ready.pid).toBe(child.pid);
    expect(ready.version).toMatch(/^\d+\.\d+\.\d+/);

    // The token is in neither the environment nor the command line.
    expect(readFileSync(`/proc/${child.pid}/environ`, 'utf8')).not.toContain(token);
    expect(readFileSync(`/proc/${child.pid}/cmdline`, 'utf8')).not.toContain(token);
    expect((await lstat(socketPath)).mode & 0o777).toBe(0o600);

    client = new SandboxdClient({ socketPath }, token);
    expect((await client.call('shellExec', { command: 'echo hello' })).output).toBe('hello\n');
    await client.call('writeFile', { path: 'a.txt', content: 'x' });
    client.close();
    client = undefined;

    child.kill('SIGTERM');
    const [code] = (await once(child, 'exit')) as [number | null];
    expect(code).toBe(0);
    expect(stdout).toBe(`${JSON.stringify({ ready: true, pid: child.pid, version: ready.version })}\n`);
    // Logs went to stderr, as JSON lines.
    for (const line of stderr.trim().split('\n')) expect(() => JSON.parse(line) as unknown).not.toThrow();
    await expect(lstat(socketPath)).rejects.toThrow();
  });

  it('listens on TCP with --listen and reports the bound port', async () => {
    child = spawn(process.execPath, [mainPath, '--listen', '127.0.0.1:0', '--workspace', workspace], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
    child.stdin.end(`${token}\n`);
    while (!stdout.includes('\n')) {
      const [event] = await Promise.race([once(child.stdout, 'data').then(() => ['data']), once(child, 'exit').then(() => ['exit'])]);
      if (event === 'exit') throw new Error('sandboxd exited before it was ready');
    }
    const { port } = readyLine.parse(JSON.parse(stdout));
    expect(port).toBeGreaterThan(0);
    client = new SandboxdClient({ host: '127.0.0.1', port: port as number }, token);
    expect(await client.healthy()).toBe(true);
  });

  it('refuses to start without a token', async () => {
    child = spawn(process.execPath, [mainPath, '--socket', socketPath, '--workspace', workspace], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
    child.stdin.end('\n');
    const [code] = (await once(child, 'exit')) as [number | null];
    expect(code).toBe(2);
    expect(stdout).toBe('');
  });
});

describe('shell sessions, search and listing over HTTP', () => {
  it('runs named shell sessions and refuses hostile or malformed names', async () => {
    const sandboxd = await startServer();
    await sandboxd.call('shellExec', { command: 'mkdir -p a && cd a', session: 'builder' });
    expect((await sandboxd.call('shellExec', { command: 'pwd', session: 'builder' })).output).toBe(`${workspace}/a\n`);
    expect((await sandboxd.call('shellExec', { command: 'pwd' })).output).toBe(`${workspace}\n`);
    for (const session of ['a;rm -rf /', '../main', '$(id)', '', 'x'.repeat(33), 'tab\there', 'é']) {
      const error = await failure(sandboxd.call('shellExec', { command: 'true', session }));
      expect(error.code, session).toBe('invalid_request');
      expect(error.message, session).toMatch(/session: .*a session name is 1 to 32 letters, digits, "-" or "_"/);
    }
    const wrongType = await failure(sandboxd.call('shellExec', { command: 'true', session: 7 } as unknown as { command: string }));
    expect(wrongType.message).toContain('session: expected string, got a number');
  });

  it('searches and lists with validation of every field', async () => {
    requireHostTool('rg');
    const sandboxd = await startServer();
    await sandboxd.call('writeFile', { path: 'src/a.py', content: 'def needle():\n    pass\n' });
    await sandboxd.call('writeFile', { path: 'node_modules/x/index.js', content: 'needle\n' });
    const found = await sandboxd.call('searchFiles', { pattern: 'needle' });
    expect(found).toMatchObject({ path: '.', matches: [{ path: 'src/a.py', line: 1, text: 'def needle():' }], truncated: false, files_with_matches: 1 });
    expect((await sandboxd.call('listFiles', { depth: 1 })).ignored).toEqual([{ path: 'node_modules', type: 'directory', reason: 'default' }]);
    expect((await failure(sandboxd.call('searchFiles', { pattern: 'x', path: '../..' }))).code).toBe('path_outside_workspace');
    expect((await failure(sandboxd.call('searchFiles', { pattern: '' }))).message).toContain('pattern: must not be empty');
    expect((await failure(sandboxd.call('searchFiles', { pattern: 'x'.repeat(2001) }))).code).toBe('invalid_request');
    expect((await failure(sandboxd.call('searchFiles', { pattern: '[' }))).message).toMatch(/regex parse error/);
    expect((await failure(sandboxd.call('searchFiles', { pattern: 'x', glob: 'g'.repeat(501) }))).code).toBe('invalid_request');
    expect((await failure(sandboxd.call('listFiles', { depth: 0 }))).message).toContain('depth');
    expect((await failure(sandboxd.call('listFiles', { include_ignored: 'yes' } as unknown as { include_ignored: boolean }))).message).toContain('include_ignored: expected boolean');
  });
});
