// Git inputs, over real HTTP to a real server (test/helpers/app.ts) with real bwrap sandboxes: real bare repositories
// served by `git http-backend` on loopback (test/helpers/git-server.ts), one of them private (Basic auth with a
// token). The host clones each job's input before its sandbox starts, through the egress proxy (WORKCELL_GIT_ALLOW lists
// the server's loopback address exactly), and the agent (script model test/fixtures/trajectories/git-input.json)
// looks at the clone, hunts for the token everywhere it can see, and changes a file. Then: the token is in no file of
// the job, no event, no audit line, no log; every failure ends the job with an error that says what failed; hostile
// inputs are refused at schedule time.
import { randomBytes } from 'node:crypto';
import { lstatSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { downloadZip, startTestApp, type TestApp } from '../../helpers/app.ts';
import { createFixtureRepository, git, startGitServer, type FixtureRepository, type GitServer } from '../../helpers/git-server.ts';

// The trajectory hunts for exactly this token (it builds it from two halves, so that it never holds it whole).
const username = 'fixture-user';
const token = 'wcs3cr3t-git-token-7d41c9e2';
const secrets = [token, Buffer.from(`${username}:${token}`).toString('base64')];
const script = 'script:git-input.json';

interface StreamedEvent {
  id: number;
  type: string;
  step: number;
  data: Record<string, unknown>;
}

interface JobDetail {
  status: string;
  error?: string;
  inputs: { git?: { url: string; ref?: string; depth?: number } };
}

interface AuditLine {
  type: string;
  by?: string;
  allowed?: boolean;
  host?: string;
  port?: number;
  url?: string;
  status?: number;
  reason?: string;
}

interface RunResult {
  jobId: string;
  job: JobDetail;
  events: StreamedEvent[];
  /** The raw SSE stream, to search. */
  eventText: string;
  /** The shell outputs, in order. */
  outputs: string[];
  audit: AuditLine[];
  auditText: string;
}

function headersFor(key: string | undefined): Record<string, string> {
  return key === undefined ? {} : { authorization: `Bearer ${key}` };
}

async function schedule(app: TestApp, body: unknown, key?: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await fetch(`${app.url}/schedule`, { method: 'POST', headers: { 'content-type': 'application/json', ...headersFor(key) }, body: JSON.stringify(body) });
  return { status: response.status, body: (await response.json()) as Record<string, unknown> };
}

/** Schedules a job and follows its events to its end (the server closes the stream then). */
async function runJob(app: TestApp, body: Record<string, unknown>, key?: string): Promise<RunResult> {
  const scheduled = await schedule(app, { task: 'work on the repository', model: script, ...body }, key);
  expect(scheduled.status, JSON.stringify(scheduled.body)).toBe(202);
  return followJob(app, String(scheduled.body.job_id), key);
}

/** Follows a job's events (after `lastEventId`) to the end of its current run, then reads its detail and audit log. */
async function followJob(app: TestApp, jobId: string, key?: string, lastEventId?: number): Promise<RunResult> {
  const eventsResponse = await fetch(`${app.url}/jobs/${jobId}/events`, { headers: { ...headersFor(key), ...(lastEventId === undefined ? {} : { 'last-event-id': String(lastEventId) }) } });
  expect(eventsResponse.status).toBe(200);
  const eventText = await eventsResponse.text();
  const events: StreamedEvent[] = [];
  for (const block of eventText.split('\n\n')) {
    const id = /^id: (\d+)$/m.exec(block)?.[1];
    const data = /^data: (.*)$/m.exec(block)?.[1];
    if (id === undefined || data === undefined) continue;
    const parsed = JSON.parse(data) as Omit<StreamedEvent, 'id'>;
    events.push({ id: Number(id), type: parsed.type, step: parsed.step, data: parsed.data });
  }
  const job = (await (await fetch(`${app.url}/jobs/${jobId}`, { headers: headersFor(key) })).json()) as JobDetail;
  const auditText = await (await fetch(`${app.url}/jobs/${jobId}/audit`, { headers: headersFor(key) })).text();
  const audit = auditText === '' ? [] : auditText.trimEnd().split('\n').map((line) => JSON.parse(line) as AuditLine);
  const outputs = events.filter((event) => event.type === 'tool-result' && event.data.name === 'shell').map((event) => String(event.data.output));
  return { jobId, job, events, eventText, outputs, audit, auditText };
}

/** Every file under `dir` (links not followed) whose bytes hold a secret. */
function filesHoldingSecrets(dir: string): string[] {
  const found: string[] = [];
  const walk = (path: string) => {
    const info = lstatSync(path);
    if (info.isDirectory()) for (const entry of readdirSync(path)) walk(join(path, entry));
    else if (info.isFile()) {
      const bytes = readFileSync(path);
      if (secrets.some((secret) => bytes.includes(secret))) found.push(path);
    }
  };
  walk(dir);
  return found;
}

function expectNoSecret(text: string, what: string): void {
  for (const secret of secrets) expect(text.includes(secret), `${what} holds the token`).toBe(false);
}

/** The clone's log events: "cloning ..." and, when it worked, "cloned ... at <commit>". */
function cloneEvents(run: RunResult): StreamedEvent[] {
  return run.events.filter((event) => event.type === 'log' && event.data.input === 'git');
}

let root: string;
let credentialsDir: string;
let credentialsPath: string;
let publicRepo: FixtureRepository;
let privateRepo: FixtureRepository;
let server: GitServer;
let app: TestApp;

function writeCredentials(content: unknown): void {
  writeFileSync(credentialsPath, JSON.stringify(content), { mode: 0o600 });
}

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'workcell-git-repos-'));
  credentialsDir = mkdtempSync(join(tmpdir(), 'workcell-git-credentials-'));
  credentialsPath = join(credentialsDir, 'credentials.json');
  writeCredentials({});
  publicRepo = await createFixtureRepository(root, 'public.git');
  privateRepo = await createFixtureRepository(root, 'private.git');
  server = await startGitServer(root, { private: { 'private.git': [{ username, token }] } });
  app = await startTestApp({ gitAllow: [`127.0.0.1:${server.port}`], gitCredentials: credentialsPath });
});

afterAll(async () => {
  await app?.close();
  await server?.close();
  rmSync(root, { recursive: true, force: true });
  rmSync(credentialsDir, { recursive: true, force: true });
});

describe('a job with a git input', () => {
  it("clones the default branch of a public repository before the sandbox starts, through the egress proxy, and diffs against it", async () => {
    const url = `${server.origin}/public.git`;
    const requestsBefore = server.requests.length;
    const run = await runJob(app, { inputs: { git: { url } } });
    expect(run.job.status, run.job.error).toBe('complete');
    expect(run.job.inputs).toEqual({ git: { url } });

    // The clone came first and is told as log events, then the sandbox started.
    const [cloning, cloned] = cloneEvents(run);
    expect(cloning?.data.message).toBe(`cloning ${url}`);
    expect(cloned?.data.message).toMatch(new RegExp(`^cloned ${url} at ${publicRepo.commits.main} in \\d+ ms$`));
    expect(cloned?.data.git).toEqual({ url, commit: publicRepo.commits.main });
    const sandboxReady = run.events.find((event) => event.type === 'sandbox-ready');
    expect(sandboxReady!.id).toBeGreaterThan(cloned!.id);

    // The agent sees the checkout of main, with all its history, owned by itself, and .git/config with the plain URL.
    const [inspect, hunt, change] = run.outputs;
    expect(inspect).toContain(['.', './README.md', './src', './src/app.txt'].join('\n'));
    expect(inspect).not.toContain('feature.txt');
    expect(inspect).toContain(`[remote "origin"]\n\turl = ${url}\n\tfetch = +refs/heads/*:refs/remotes/origin/*\n[branch "main"]\n\tremote = origin\n\tmerge = refs/heads/main\n--- head`);
    expect(inspect).toContain(`--- head\n${publicRepo.commits.main}\n3\nCOMPLETE\nSTATUS-DONE\nREADME.md 1000\n.git 1000\n.git/config 1000`);
    expect(hunt).toContain('env: 0\nenviron: 0\nfiles: 0\ncontrol: 1\nHUNT-DONE');
    expect(change).toContain(' M README.md');

    // Every connection of the clone is in the audit log, marked as the clone's; the server saw them, with no credential.
    const clone = run.audit.filter((line) => line.type === 'network' && line.by === 'git-clone');
    expect(clone.length).toBeGreaterThanOrEqual(2);
    for (const line of clone) expect(line).toMatchObject({ allowed: true, host: '127.0.0.1', port: server.port, status: 200 });
    expect(clone.map((line) => line.url)).toContain(`${url}/info/refs?service=git-upload-pack`);
    const served = server.requests.slice(requestsBefore);
    expect(served.length).toBe(clone.length);
    expect(served.every((request) => request.authorization === undefined)).toBe(true);

    // The diff is against the commit cloned; its patch applies to the user's own clone of it.
    const diff = (await (await fetch(`${app.url}/jobs/${run.jobId}/diff`)).json()) as { base: { git?: unknown }; files: Array<{ path: string; change: string }> };
    expect(diff.base.git).toEqual({ url, commit: publicRepo.commits.main });
    expect(diff.files).toEqual([expect.objectContaining({ path: 'README.md', change: 'changed' })]);
    const zip = await downloadZip(app, run.jobId);
    expect(zip.get('README.md')?.content).toBe('# public.git\nmain head\nchanged in the sandbox\n');
    const patch = zip.get('changes.patch')?.content ?? '';
    expect(patch).toContain('+changed in the sandbox');
    const userClone = mkdtempSync(join(tmpdir(), 'workcell-git-user-'));
    try {
      await git(userClone, 'clone', '--quiet', publicRepo.path, '.');
      writeFileSync(join(userClone, 'changes.patch'), patch);
      await git(userClone, 'apply', '--index', 'changes.patch');
      expect(readFileSync(join(userClone, 'README.md'), 'utf8')).toBe('# public.git\nmain head\nchanged in the sandbox\n');
    } finally {
      rmSync(userClone, { recursive: true, force: true });
    }
  });

  it.each<[string, { ref?: string; depth?: number }, () => string, { count: number; shallow: boolean; feature: boolean }]>([
    ['a branch', { ref: 'feature' }, () => publicRepo.commits.feature, { count: 3, shallow: false, feature: true }],
    ['an annotated tag', { ref: 'v1.0' }, () => publicRepo.commits.second, { count: 2, shallow: false, feature: false }],
    ['a commit id', { ref: 'COMMIT:first' }, () => publicRepo.commits.first, { count: 1, shallow: false, feature: false }],
    ['depth 1', { depth: 1 }, () => publicRepo.commits.main, { count: 1, shallow: true, feature: false }],
    ['a commit id with depth 1', { ref: 'COMMIT:feature', depth: 1 }, () => publicRepo.commits.feature, { count: 1, shallow: true, feature: true }],
  ])('checks out %s', async (_name, asked, commit, expected) => {
    const url = `${server.origin}/public.git`;
    // Commit ids are known once the repository is made.
    const ref = asked.ref?.startsWith('COMMIT:') ? publicRepo.commits[asked.ref.slice(7) as keyof FixtureRepository['commits']] : asked.ref;
    const input = { url, ...(ref === undefined ? {} : { ref }), ...(asked.depth === undefined ? {} : { depth: asked.depth }) };
    const run = await runJob(app, { inputs: { git: input } });
    expect(run.job.status, run.job.error).toBe('complete');
    expect(run.job.inputs.git).toEqual(input);
    const [inspect] = run.outputs;
    expect(inspect).toContain(`--- head\n${commit()}\n${expected.count}\n${expected.shallow ? 'SHALLOW' : 'COMPLETE'}\nSTATUS-DONE`);
    expect(inspect!.includes('./feature.txt')).toBe(expected.feature);
    expect(inspect).toContain(`\turl = ${url}\n`);
    const diff = (await (await fetch(`${app.url}/jobs/${run.jobId}/diff`)).json()) as { base: { git?: unknown } };
    expect(diff.base.git).toEqual({ url, ...(ref === undefined ? {} : { ref }), commit: commit() });
  });

  it('is cloned once: a job continued by a message keeps its workspace and clones nothing; a fork cannot have a git input', async () => {
    const url = `${server.origin}/public.git`;
    const first = await runJob(app, { inputs: { git: { url, depth: 1 } } });
    expect(first.job.status, first.job.error).toBe('complete');
    const baseline = (await (await fetch(`${app.url}/jobs/${first.jobId}/diff`)).json()) as { base: { recorded_at: string } };
    const requestsBefore = server.requests.length;
    const message = await fetch(`${app.url}/jobs/${first.jobId}/messages`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ text: 'look again' }) });
    expect(message.status).toBe(202);
    const second = await followJob(app, first.jobId, undefined, first.events.at(-1)!.id);
    expect(second.job.status, second.job.error).toBe('complete');
    expect(cloneEvents(second)).toEqual([]);
    expect(server.requests.length).toBe(requestsBefore);
    expect(second.outputs.at(-1)).toContain(`# public.git\nmain head\nchanged in the sandbox\n${publicRepo.commits.main}\n M README.md\nCONTINUED`);
    const diff = (await (await fetch(`${app.url}/jobs/${first.jobId}/diff`)).json()) as { base: { recorded_at: string; git?: unknown } };
    expect(diff.base).toMatchObject({ recorded_at: baseline.base.recorded_at, git: { url, commit: publicRepo.commits.main } });

    // A fork starts from another job's workspace: a clone would have to replace it.
    const fork = await schedule(app, { task: 'fork', model: script, from_job: first.jobId, inputs: { git: { url } } });
    expect(fork.status).toBe(400);
    expect(String(fork.body.detail)).toMatch(/inputs\.git cannot be combined with from_job/);
    expect(server.requests.length).toBe(requestsBefore);
  });

  it('clones a private repository with the credentials of WORKCELL_GIT_CREDENTIALS, which never reach the sandbox or any record of the job', async () => {
    writeCredentials({ hosts: { [`127.0.0.1:${server.port}`]: { username, token } } });
    const url = `${server.origin}/private.git`;
    const requestsBefore = server.requests.length;
    const failuresBefore = server.authFailures();
    const run = await runJob(app, { inputs: { git: { url } } });
    expect(run.job.status, run.job.error).toBe('complete');
    const [inspect, hunt] = run.outputs;
    expect(inspect).toContain(`--- head\n${privateRepo.commits.main}\n3\nCOMPLETE`);
    // .git/config names the remote by its plain URL: no user, no token, no header.
    const config = /--- \.git\/config\n([\s\S]*?)--- head/.exec(inspect!)?.[1];
    expect(config).toBe(`[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = false\n\tlogallrefupdates = true\n[remote "origin"]\n\turl = ${url}\n\tfetch = +refs/heads/*:refs/remotes/origin/*\n[branch "main"]\n\tremote = origin\n\tmerge = refs/heads/main\n`);
    // Not in the sandbox's environment, any process's, or any file it can see.
    expect(hunt).toContain(`hunting ${token.length} and ${secrets[1]!.length} characters\nenv: 0\nenviron: 0\nfiles: 0\ncontrol: 1\nHUNT-DONE`);

    // The server got the token with every request, and never had to ask for it.
    const served = server.requests.slice(requestsBefore);
    expect(served.length).toBeGreaterThanOrEqual(2);
    expect(served.every((request) => request.authorization === `Basic ${secrets[1]}`)).toBe(true);
    expect(server.authFailures()).toBe(failuresBefore);

    // Nowhere in what the job left: events, audit, detail, diff, zip, and every file of its directory (workspace with
    // .git, baseline, logs, context.db) and of the data directory (workcell.db).
    expectNoSecret(run.eventText, 'the event stream');
    expectNoSecret(run.auditText, 'the audit log');
    expect(run.audit.some((line) => line.by === 'git-clone' && line.url === `${url}/info/refs?service=git-upload-pack`)).toBe(true);
    expectNoSecret(await (await fetch(`${app.url}/jobs/${run.jobId}`)).text(), 'the job detail');
    expectNoSecret(await (await fetch(`${app.url}/jobs/${run.jobId}/diff?format=patch`)).text(), 'the patch');
    for (const entry of (await downloadZip(app, run.jobId)).values()) expectNoSecret(entry.content, `${entry.name} in the zip`);
    expect(filesHoldingSecrets(app.dataDir)).toEqual([]);
    expect(readFileSync(join(app.dataDir, 'jobs', run.jobId, 'logs', 'orchestrator.log'), 'utf8')).toContain(`"credential":"hosts[\\"127.0.0.1:${server.port}\\"]"`);
  });

  it('ends with an error naming the credential entry when the repository refuses it, and clones nothing', async () => {
    writeCredentials({ hosts: { [`127.0.0.1:${server.port}`]: { username, token: 'not-the-token' } } });
    const failuresBefore = server.authFailures();
    const run = await runJob(app, { inputs: { git: { url: `${server.origin}/private.git` } } });
    expect(run.job.status).toBe('error');
    expect(run.job.error).toBe(
      `inputs.git: cloning ${server.origin}/private.git failed: authentication failed: the repository refused the credentials of WORKCELL_GIT_CREDENTIALS hosts["127.0.0.1:${server.port}"] (ask the server's operator to check that token)`,
    );
    expect(run.job.error).not.toContain('not-the-token');
    expect(server.authFailures()).toBeGreaterThan(failuresBefore);
    expect(run.events.some((event) => event.type === 'sandbox-ready')).toBe(false);
    expect(readdirSync(join(app.dataDir, 'jobs', run.jobId, 'workspace'))).toEqual([]);
    expect(filesHoldingSecrets(join(app.dataDir, 'jobs', run.jobId)).length).toBe(0);
  });

  it('ends with an error saying that no credentials are configured for a private repository', async () => {
    writeCredentials({ hosts: { 'git.example.com': { username, token } } });
    const run = await runJob(app, { inputs: { git: { url: `${server.origin}/private.git` } } });
    expect(run.job.status).toBe('error');
    expect(run.job.error).toMatch(/authentication failed: the repository asks for credentials, and the server's WORKCELL_GIT_CREDENTIALS has none for 127\.0\.0\.1:\d+/);
  });

  it.each<[string, () => Record<string, unknown>, RegExp]>([
    ['a repository that does not exist', () => ({ url: `${server.origin}/missing.git` }), /failed: repository not found \(HTTP 404\)/],
    ['a branch that does not exist', () => ({ url: `${server.origin}/public.git`, ref: 'no-such-branch' }), /failed: ref "no-such-branch" not found: it has no branch or tag of that name/],
    ['a commit that does not exist', () => ({ url: `${server.origin}/public.git`, ref: 'f'.repeat(40) }), /failed: ref "f{40}" not found: no commit with that id can be fetched from it/],
    ['a short commit id', () => ({ url: `${server.origin}/public.git`, ref: publicRepo.commits.first.slice(0, 7) }), /not found: it has no branch or tag of that name \(a commit must be given by its full id\)/],
  ])('ends with an error for %s, and clones nothing', async (_name, input, message) => {
    const run = await runJob(app, { inputs: { git: input() } });
    expect(run.job.status).toBe('error');
    expect(run.job.error).toMatch(message);
    expect(run.events.some((event) => event.type === 'sandbox-ready')).toBe(false);
    expect(readdirSync(join(app.dataDir, 'jobs', run.jobId, 'workspace'))).toEqual([]);
  });

  it('refuses a host that no allow-list names before connecting, and one the proxy refuses with its reason', async () => {
    const other = await startGitServer(root);
    try {
      // Not listed anywhere: refused before git starts, nothing reaches the server.
      const notListed = await runJob(app, { inputs: { git: { url: `${other.origin}/public.git` } } });
      expect(notListed.job.status).toBe('error');
      expect(notListed.job.error).toBe(
        `inputs.git: cloning ${other.origin}/public.git failed: 127.0.0.1:${other.port} is not a host the clone may reach: the server's WORKCELL_GIT_ALLOW (or WORKCELL_NETWORK_ALLOW), or the job's network.allow, must list it (a bare host allows ports 80 and 443; a private or loopback address only when listed exactly, with its port, by the server)`,
      );
      expect(notListed.audit).toEqual([]);
      // Allowed by a wildcard of the job's, which never opens a loopback address: the proxy refuses it and says why.
      const wildcard = await runJob(app, { network: { allow: [`*:${other.port}`] }, inputs: { git: { url: `${other.origin}/public.git` } } });
      expect(wildcard.job.status).toBe('error');
      expect(wildcard.job.error).toMatch(new RegExp(`failed: the egress proxy refused 127\\.0\\.0\\.1:${other.port}: 127\\.0\\.0\\.1 is a loopback address`));
      expect(wildcard.audit).toEqual([expect.objectContaining({ type: 'network', by: 'git-clone', allowed: false, host: '127.0.0.1', port: other.port, status: 403 })]);
      expect(other.requests).toEqual([]);
      expect(readdirSync(join(app.dataDir, 'jobs', wildcard.jobId, 'workspace'))).toEqual([]);
    } finally {
      await other.close();
    }
  });

  it('clones onto the job\'s disk: a repository larger than disk_mb ends the job saying so', async () => {
    const big = mkdtempSync(join(tmpdir(), 'workcell-git-big-'));
    try {
      await git(big, 'init', '--quiet');
      // Random bytes do not compress: the pack alone is larger than the 16 MB disk.
      writeFileSync(join(big, 'blob.bin'), randomBytes(24 << 20));
      await git(big, 'add', '-A');
      await git(big, 'commit', '--quiet', '-m', 'big');
      await git(root, 'clone', '--quiet', '--bare', big, join(root, 'big.git'));
    } finally {
      rmSync(big, { recursive: true, force: true });
    }
    const run = await runJob(app, { limits: { disk_mb: 16 }, inputs: { git: { url: `${server.origin}/big.git` } } });
    expect(run.job.status).toBe('error');
    expect(run.job.error).toMatch(/failed: the repository does not fit the job's disk: ask for a larger limits\.disk_mb/);
    expect(readdirSync(join(app.dataDir, 'jobs', run.jobId, 'workspace'))).toEqual([]);
  });
});

describe('hostile git inputs', () => {
  it.each<[string, Record<string, unknown>, RegExp]>([
    ['a URL with a user and password', { url: 'https://user:pass@git.example.com/a.git' }, /url must not hold a user or password/],
    ['a URL with a user', { url: 'https://token@git.example.com/a.git' }, /url must not hold a user or password/],
    ['file://', { url: 'file:///etc/passwd' }, /url must be https:\/\/ or http:\/\/ \(not file:\)/],
    ['ssh://', { url: 'ssh://git@git.example.com/a.git' }, /not ssh:/],
    ['an scp-like address', { url: 'git@git.example.com:team/a.git' }, /url is not a URL|not git@git\.example\.com:/],
    ['ext::', { url: 'ext::sh -c touch% /tmp/pwned' }, /not ext:/],
    ['a backslash before an @', { url: 'http://allowed.example\\@evil.example/a.git' }, /url must be plain ASCII without blanks, control characters or backslashes/],
    ['a newline', { url: 'https://git.example.com/a.git\n[core]' }, /url must be plain ASCII/],
    ['a percent-encoded host', { url: 'http://%65vil.example/a.git' }, /no user, "@" or "%" in the host part/],
    ['a single slash after the scheme', { url: 'https:/git.example.com/a.git' }, /url must be https:\/\/host\[:port\]\/path/],
    ['a fragment', { url: 'https://git.example.com/a.git#main' }, /#fragment/],
    ['a ref that is an option', { url: 'https://git.example.com/a.git', ref: '--upload-pack=touch /tmp/pwned' }, /ref must be a branch, a tag or a full commit id/],
    ['a ref starting with -', { url: 'https://git.example.com/a.git', ref: '-b' }, /ref must be/],
    ['a ref with ..', { url: 'https://git.example.com/a.git', ref: 'main/../../x' }, /ref must be/],
    ['a ref with a blank', { url: 'https://git.example.com/a.git', ref: 'main x' }, /ref must be/],
    ['a ref with a reflog selector', { url: 'https://git.example.com/a.git', ref: 'main@{1}' }, /ref must be/],
    ['depth 0', { url: 'https://git.example.com/a.git', depth: 0 }, /depth/],
    ['an unknown field', { url: 'https://git.example.com/a.git', upload_pack: 'x' }, /upload_pack/],
  ])('refuses %s with a 400 and makes no job', async (_name, git, detail) => {
    const jobsBefore = readdirSync(join(app.dataDir, 'jobs')).length;
    const response = await schedule(app, { task: 'x', model: script, inputs: { git } });
    expect(response.status, JSON.stringify(response.body)).toBe(400);
    expect(String(response.body.detail)).toMatch(detail);
    expect(readdirSync(join(app.dataDir, 'jobs')).length).toBe(jobsBefore);
  });
});

describe('git credentials by API key', () => {
  let keyed: TestApp;
  beforeAll(async () => {
    keyed = await startTestApp({ gitAllow: [`127.0.0.1:${server.port}`], gitCredentials: credentialsPath });
  });
  afterAll(async () => {
    await keyed?.close();
  });

  it("uses the job owner's own entry before the host's, and the host's for a key without one", async () => {
    const team = await keyed.store.keys.create('team');
    const other = await keyed.store.keys.create('other');
    // The host's entry holds a token the repository refuses: only the team key's own entry works.
    writeCredentials({ hosts: { [`127.0.0.1:${server.port}`]: { username, token: 'host-wide-token' } }, keys: { [team.id]: { [`127.0.0.1:${server.port}`]: { username, token } } } });
    const url = `${server.origin}/private.git`;
    const teamRun = await runJob(keyed, { inputs: { git: { url } } }, team.token);
    expect(teamRun.job.status, teamRun.job.error).toBe('complete');
    expect(teamRun.outputs[0]).toContain(`--- head\n${privateRepo.commits.main}\n`);
    expect(teamRun.outputs[1]).toContain('env: 0\nenviron: 0\nfiles: 0\ncontrol: 1\nHUNT-DONE');
    expect(filesHoldingSecrets(keyed.dataDir)).toEqual([]);

    const otherRun = await runJob(keyed, { inputs: { git: { url } } }, other.token);
    expect(otherRun.job.status).toBe('error');
    expect(otherRun.job.error).toMatch(new RegExp(`refused the credentials of WORKCELL_GIT_CREDENTIALS hosts\\["127\\.0\\.0\\.1:${server.port}"\\]`));
    expect(otherRun.job.error).not.toContain('host-wide-token');
  });
});

describe('a clone that takes too long', () => {
  let slow: TestApp;
  let silent: Server;
  const connections = new Set<Socket>();
  beforeAll(async () => {
    // Accepts connections and never answers.
    silent = createServer((socket) => {
      connections.add(socket);
      socket.on('close', () => connections.delete(socket));
    });
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const port = (silent.address() as { port: number }).port;
    slow = await startTestApp({ gitAllow: [`127.0.0.1:${port}`], gitTimeoutS: 2 });
  });
  afterAll(async () => {
    await slow?.close();
    for (const socket of connections) socket.destroy();
    await new Promise((resolve) => silent.close(resolve));
  });

  it('ends the job with a timeout error naming WORKCELL_GIT_TIMEOUT_S', async () => {
    const port = (silent.address() as { port: number }).port;
    const run = await runJob(slow, { inputs: { git: { url: `http://127.0.0.1:${port}/slow.git` } } });
    expect(run.job.status).toBe('error');
    expect(run.job.error).toBe(`inputs.git: cloning http://127.0.0.1:${port}/slow.git failed: it took longer than 2 s (WORKCELL_GIT_TIMEOUT_S)`);
    expect(run.audit).toEqual([expect.objectContaining({ by: 'git-clone', allowed: true, port })]);
  });
});
