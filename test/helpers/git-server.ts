// Test fixture: real git repositories served over git's smart HTTP protocol on loopback, by git's own CGI program
// (`git http-backend`), as a forge would serve them. Each repository is public or private: a private one answers 401
// (with WWW-Authenticate: Basic) unless the request carries one of its credentials in `Authorization: Basic`. The
// server counts requests and authentication failures, and keeps every Authorization header it saw (so a test can say
// which token was used). `createFixtureRepository` makes a bare repository with a known history: branches, an
// annotated tag, and the commit ids of each. Always close the server (afterAll/finally).
import { execFile, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** git with no configuration of the host's, a fixed identity and dates (so commit ids are stable). */
const gitEnv = {
  PATH: '/usr/bin:/bin',
  HOME: '/nonexistent',
  GIT_CONFIG_NOSYSTEM: '1',
  GIT_CONFIG_GLOBAL: '/dev/null',
  GIT_AUTHOR_NAME: 'Fixture',
  GIT_AUTHOR_EMAIL: 'fixture@example.com',
  GIT_COMMITTER_NAME: 'Fixture',
  GIT_COMMITTER_EMAIL: 'fixture@example.com',
  GIT_AUTHOR_DATE: '2026-01-01T00:00:00Z',
  GIT_COMMITTER_DATE: '2026-01-01T00:00:00Z',
  LC_ALL: 'C',
};

export async function git(cwd: string, ...args: string[]): Promise<string> {
  const { stdout } = await run('git', ['-c', 'init.defaultBranch=main', ...args], { cwd, env: gitEnv });
  return stdout.trim();
}

export interface FixtureRepository {
  /** The bare repository. */
  path: string;
  /** Commit ids: main's first and second commit (the tag v1.0 points at the second), feature's tip, main's tip. */
  commits: { first: string; second: string; feature: string; main: string };
}

/**
 * A bare repository `<root>/<name>`: main has three commits (README.md changes in each, src/app.txt from the first),
 * the annotated tag v1.0 marks the second, and the branch feature adds feature.txt on top of the second.
 */
export async function createFixtureRepository(root: string, name: string): Promise<FixtureRepository> {
  const work = mkdtempSync(join(tmpdir(), 'workcell-git-fixture-'));
  try {
    await git(work, 'init', '--quiet');
    const commit = async (files: Record<string, string>, message: string) => {
      for (const [file, content] of Object.entries(files)) {
        mkdirSync(join(work, file, '..'), { recursive: true });
        writeFileSync(join(work, file), content);
      }
      await git(work, 'add', '-A');
      await git(work, 'commit', '--quiet', '-m', message);
      return git(work, 'rev-parse', 'HEAD');
    };
    const first = await commit({ 'README.md': `# ${name}\nfirst\n`, 'src/app.txt': 'app v1\n' }, 'first');
    const second = await commit({ 'README.md': `# ${name}\nsecond\n` }, 'second');
    await git(work, 'tag', '-a', 'v1.0', '-m', 'version 1.0');
    await git(work, 'checkout', '--quiet', '-b', 'feature');
    const feature = await commit({ 'feature.txt': 'only on the feature branch\n' }, 'feature');
    await git(work, 'checkout', '--quiet', 'main');
    const main = await commit({ 'README.md': `# ${name}\nmain head\n`, 'src/app.txt': 'app v2\n' }, 'main head');
    const path = join(root, name);
    await git(root, 'clone', '--quiet', '--bare', work, path);
    // A bare clone points its HEAD where the work tree's was (main), and keeps every branch and tag.
    await git(path, 'config', 'http.receivepack', 'false');
    return { path, commits: { first, second, feature, main } };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

export interface GitServerCredential {
  username: string;
  token: string;
}

export interface GitServerRequest {
  method: string;
  /** The path and query, e.g. /private.git/info/refs?service=git-upload-pack. */
  url: string;
  /** The Authorization header, when one came. */
  authorization: string | undefined;
  status: number;
}

export interface GitServer {
  /** http://127.0.0.1:<port> */
  readonly origin: string;
  readonly port: number;
  readonly requests: GitServerRequest[];
  /** Requests to a private repository that came without a valid credential. */
  readonly authFailures: () => number;
  close(): Promise<void>;
}

/**
 * Serves the bare repositories under `root` (by their directory name, e.g. /public.git) with `git http-backend`.
 * `private` maps a repository's name to the credentials it accepts; the others are public.
 */
export async function startGitServer(root: string, options: { private?: Record<string, GitServerCredential[]> } = {}): Promise<GitServer> {
  const requests: GitServerRequest[] = [];
  let authFailures = 0;
  const accepted = (repository: string, authorization: string | undefined): boolean => {
    const credentials = options.private?.[repository];
    if (credentials === undefined) return true;
    return credentials.some(({ username, token }) => authorization === `Basic ${Buffer.from(`${username}:${token}`).toString('base64')}`);
  };

  const handle = (request: IncomingMessage, response: ServerResponse) => {
    const url = new URL(request.url ?? '/', 'http://localhost');
    const authorization = request.headers.authorization;
    const record: GitServerRequest = { method: request.method ?? '', url: `${url.pathname}${url.search}`, authorization, status: 0 };
    requests.push(record);
    response.on('finish', () => (record.status = response.statusCode));
    const repository = url.pathname.split('/')[1] ?? '';
    if (!accepted(repository, authorization)) {
      authFailures++;
      request.resume();
      response.writeHead(401, { 'www-authenticate': 'Basic realm="fixture"', 'content-type': 'text/plain' });
      response.end('authentication required\n');
      return;
    }
    // git http-backend as a CGI program (RFC 3875): request meta-variables in, a CGI response (headers, body) out.
    const child = spawn('git', ['http-backend'], {
      env: {
        ...gitEnv,
        GIT_PROJECT_ROOT: root,
        GIT_HTTP_EXPORT_ALL: '1',
        REQUEST_METHOD: request.method ?? 'GET',
        PATH_INFO: url.pathname,
        QUERY_STRING: url.search.slice(1),
        CONTENT_TYPE: request.headers['content-type'] ?? '',
        REMOTE_ADDR: request.socket.remoteAddress ?? '',
        ...(request.headers['content-encoding'] === undefined ? {} : { HTTP_CONTENT_ENCODING: request.headers['content-encoding'] }),
        ...(typeof request.headers['git-protocol'] === 'string' ? { GIT_PROTOCOL: request.headers['git-protocol'] } : {}),
        ...(authorization === undefined ? {} : { REMOTE_USER: 'fixture' }),
      },
      stdio: ['pipe', 'pipe', 'ignore'],
    });
    request.pipe(child.stdin);
    child.stdin.on('error', () => undefined);
    let head = Buffer.alloc(0);
    let headersDone = false;
    child.stdout.on('data', (chunk: Buffer) => {
      if (headersDone) {
        response.write(chunk);
        return;
      }
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf('\r\n\r\n');
      const endLf = head.indexOf('\n\n');
      const [at, length] = end !== -1 && (endLf === -1 || end < endLf) ? [end, 4] : [endLf, 2];
      if (at === -1) return;
      headersDone = true;
      let status = 200;
      const headers: Record<string, string> = {};
      for (const line of head.subarray(0, at).toString('latin1').split(/\r?\n/)) {
        const colon = line.indexOf(':');
        if (colon === -1) continue;
        const name = line.slice(0, colon).trim();
        const value = line.slice(colon + 1).trim();
        if (name.toLowerCase() === 'status') status = Number.parseInt(value, 10);
        else headers[name] = value;
      }
      response.writeHead(status, headers);
      response.write(head.subarray(at + length));
    });
    child.stdout.on('end', () => {
      if (!headersDone) response.writeHead(502);
      response.end();
    });
    child.on('error', () => response.destroy());
  };

  const server = createServer(handle);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  return {
    origin: `http://127.0.0.1:${port}`,
    port,
    requests,
    authFailures: () => authFailures,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
