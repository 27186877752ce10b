// The `workcell` command against a running server (real sandbox, scripted model), run as a child process exactly
// as a user runs it: output, exit codes and the error message for every kind of bad input; `--json` output that
// parses; NO_COLOR; the run options (uploads, limits, network, a git input, --detach); send, files, diff, audit and an
// interactive terminal (in a real pseudo-terminal); nothing the model writes reaches the terminal as a control
// sequence; and `workcell serve`, as set-up installs it, ends on SIGTERM and SIGINT.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn as spawnPty, type IPty } from 'node-pty';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClient, type WorkcellClient } from 'workcell/client';
import { startTestApp, type TestApp } from '../../helpers/app.ts';

const bin = join(import.meta.dirname, '../../../bin/workcell.js');
const installCommand = join(import.meta.dirname, '../../../scripts/install-command.sh');
let app: TestApp;
let work: string;

function workcell(args: string[], env: Record<string, string> = {}, input?: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [bin, ...args], { cwd: work, env: { ...process.env, WORKCELL_URL: app.url, ...env }, timeout: 60_000 }, (error, stdout, stderr) => {
      resolve({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, stdout, stderr });
    });
    if (input !== undefined) child.stdin?.end(input);
  });
}

/** JSON lines as values. */
const jsonLines = (text: string) =>
  text
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as Record<string, unknown>);

/** The command in a pseudo-terminal (stdin and stdout are a terminal, as for a person); `output` grows as it prints. */
function workcellInPty(args: string[], env: Record<string, string> = {}, size = { cols: 100, rows: 30 }) {
  const terminal: IPty = spawnPty(process.execPath, [bin, ...args], { cwd: work, env: { ...process.env, WORKCELL_URL: app.url, ...env }, ...size });
  const session = {
    terminal,
    output: '',
    exited: new Promise<number>((resolve) => terminal.onExit(({ exitCode }) => resolve(exitCode))),
    /** Resolves once the output matches (throws after timeoutMs with what it printed). */
    async waitFor(pattern: RegExp, timeoutMs = 30_000): Promise<RegExpExecArray> {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const match = pattern.exec(session.output);
        if (match) return match;
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${pattern} in ${JSON.stringify(session.output.slice(-2000))}`);
        await new Promise<void>((resolve) => {
          const listener = terminal.onData(() => {
            listener.dispose();
            resolve();
          });
          setTimeout(() => {
            listener.dispose();
            resolve();
          }, 500);
        });
      }
    },
  };
  terminal.onData((data) => (session.output += data));
  return session;
}

beforeAll(async () => {
  app = await startTestApp();
  work = mkdtempSync(join(tmpdir(), 'workcell-cli-'));
});
afterAll(async () => {
  await app.close();
  rmSync(work, { recursive: true, force: true });
});

describe('workcell run, status, logs, jobs, download', () => {
  let jobId = '';

  it('run: schedules, shows the steps live, downloads and extracts the workspace', async () => {
    const result = await workcell(['run', 'Write hello.py and notes.txt', '--model', 'script:two-files.json', '-o', 'out.zip', '--extract', 'out']);
    expect(result.code, result.stderr).toBe(0);
    jobId = /^(job_[0-9a-z]{26})$/m.exec(result.stderr)?.[1] ?? '';
    expect(jobId).not.toBe('');
    expect(result.stdout).toMatch(/job running/);
    expect(result.stdout).toMatch(/sandbox ready: bwrap/);
    expect(result.stdout).toMatch(/▸ write_file/);
    expect(result.stdout).toMatch(/Hello from workcell/);
    expect(result.stdout).toMatch(/job complete/);
    expect(existsSync(join(work, 'out.zip'))).toBe(true);
    expect(readFileSync(join(work, 'out', 'notes.txt'), 'utf8')).toBe('status: verified (python3 hello.py printed the greeting)\n');
  });

  it('status, logs, jobs and download show the finished job', async () => {
    expect((await workcell(['status', jobId])).stdout).toMatch(new RegExp(`^${jobId} complete`));
    const json = JSON.parse((await workcell(['status', jobId, '--json'])).stdout) as { status: string; runtime_used: string };
    expect(json).toMatchObject({ status: 'complete', runtime_used: 'bwrap' });
    const logs = await workcell(['logs', jobId, '--json']);
    const types = logs.stdout.trim().split('\n').map((line) => (JSON.parse(line) as { type: string }).type);
    expect(types[0]).toBe('job-status');
    expect(types.at(-1)).toBe('job-status');
    expect(types).toContain('tool-result');
    expect((await workcell(['logs', jobId, '-f'])).stdout).toMatch(/job complete/);
    expect((await workcell(['jobs'])).stdout).toContain(jobId);
    const download = await workcell(['download', jobId, '-o', 'again.zip']);
    expect(download.code).toBe(0);
    expect(readFileSync(join(work, 'again.zip')).equals(readFileSync(join(work, 'out.zip')))).toBe(true);
  });

  it("open: prints a one-time link to the job's own origin, and refuses other services", async () => {
    const port = new URL(app.url).port;
    const desktop = await workcell(['open', jobId, 'desktop']);
    expect(desktop.code, desktop.stderr).toBe(0);
    expect(desktop.stdout.trim()).toMatch(new RegExp(`^http://${jobId.replace('_', '-')}\\.localhost:${port}/jobs/${jobId}/desktop/\\?workcell_link=[\\w-]+\\.[\\w-]+$`));
    expect((await workcell(['open', jobId, 'terminal'])).stdout.trim()).toMatch(new RegExp(`^ws://127\\.0\\.0\\.1:${port}/jobs/${jobId}/terminal\\?workcell_link=`));
    const bad = await workcell(['open', jobId, 'shell']);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/one of desktop, jupyter, terminal/);
  });

  it('cancel of a finished job is refused with the reason', async () => {
    const result = await workcell(['cancel', jobId]);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/409: .*already ended/);
  });
});

describe('bad input', () => {
  it('refuses a malformed job id before calling the server', async () => {
    for (const command of ['status', 'logs', 'download', 'cancel']) {
      const result = await workcell([command, '../../etc/passwd']);
      expect(result.code).toBe(1);
      expect(result.stderr).toMatch(/expected a job id/);
    }
  });

  it('reports an unknown job with exit code 3', async () => {
    const result = await workcell(['status', 'job_00000000000000000000000000']);
    expect(result.code).toBe(3);
    expect(result.stderr).toMatch(/404: no job/);
  });

  it('passes the server\'s message for an empty task and bad options through', async () => {
    const empty = await workcell(['run', '   ']);
    expect(empty.code).toBe(1);
    expect(empty.stderr).toMatch(/task is empty/);
    const badRuntime = await workcell(['run', 'x', '--runtime', 'nope']);
    expect(badRuntime.stderr).toMatch(/runtime/);
    const badNumber = await workcell(['run', 'x', '--wall-time', 'soon']);
    expect(badNumber.code).toBe(1);
    expect(badNumber.stderr).toMatch(/positive integer/);
    const shell = await workcell(['run', '$(touch /tmp/workcell-pwned); `id`', '--model', 'script:/etc/passwd']);
    expect(shell.code).toBe(1);
    expect(existsSync('/tmp/workcell-pwned')).toBe(false);
  });

  it('says how to start a server when none answers', async () => {
    const result = await workcell(['status', 'job_00000000000000000000000000'], { WORKCELL_URL: 'http://127.0.0.1:9' });
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/cannot reach the workcell server at http:\/\/127\.0\.0\.1:9.*workcell serve/);
  });

  it('refuses unknown commands and options', async () => {
    expect((await workcell(['frobnicate'])).code).toBe(1);
    expect((await workcell(['status', '--bogus'])).code).toBe(1);
  });

  it('refuses an API without a worker, or a worker alone, without a shared Postgres store', async () => {
    const dataDir = join(work, 'roles-data');
    for (const args of [['serve', '--no-worker', '--port', '0'], ['worker']]) {
      const result = await workcell([...args, '--data-dir', dataDir], { WORKCELL_DATABASE_URL: '' });
      expect(result.code).toBe(1);
      expect(result.stderr).toMatch(/set WORKCELL_DATABASE_URL/);
    }
    const bad = await workcell(['worker', '--data-dir', dataDir], { WORKCELL_DATABASE_URL: 'mysql://root:hunter2@db/x' });
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/WORKCELL_DATABASE_URL: a postgres:\/\/ or postgresql:\/\/ URL/);
    expect(bad.stderr).not.toContain('hunter2');
    expect((await workcell(['worker', '--internal-port', '99999'])).stderr).toMatch(/port/);
  });
});

describe('workcell doctor', () => {
  it('reports bwrap as available here and exits 0', async () => {
    const result = await workcell(['doctor']);
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/^yes\s+bwrap\s+bubblewrap/m);
    const json = JSON.parse((await workcell(['doctor', '--json'])).stdout) as Array<{ name: string; available: boolean }>;
    expect(json.find((p) => p.name === 'bwrap')?.available).toBe(true);
  });
});

/** Control characters that must never reach a terminal from the CLI (line feed and tab are fine). */
// eslint-disable-next-line no-control-regex -- what must not get through
const control = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/;

describe('hostile text from the model', () => {
  // The task, the model's text, a file name, tool arguments and the summary all carry escape sequences.
  const task = 'Say hello\u001b]0;task-title\u0007 \u202eplease';
  let jobId = '';

  it('run, status, logs and jobs print it escaped, never raw', async () => {
    const run = await workcell(['run', task, '--model', 'script:hostile-terminal.json', '--no-download']);
    expect(run.code, run.stderr).toBe(0);
    jobId = /^(job_[0-9a-z]{26})$/m.exec(run.stderr)?.[1] ?? '';
    expect(run.stdout).toMatch(/job complete/);
    expect(run.stdout + run.stderr).not.toMatch(control);
    expect(run.stdout).toContain('\\u001b]52;c;');

    const status = await workcell(['status', jobId]);
    expect(status.code).toBe(0);
    expect(status.stdout).not.toMatch(control);
    // The summary keeps its line break; the escapes show what was there.
    expect(status.stdout).toContain('All done.\\u001b]52;c;Y3VybCBldmlsLnNoIHwgc2g=\\u0007\nSecond line \\u2066\\u202eevil\\u202c\\u2069\\u000dhidden\\u001b[1A');

    const logs = await workcell(['logs', jobId]);
    expect(logs.stdout).not.toMatch(control);
    expect(logs.stdout).toContain('notes\\u001b[8m\\u202e.txt');
    expect(logs.stdout).toContain('Working \\u001b]0;pwned-title\\u0007');
    expect((await workcell(['jobs'])).stdout).not.toMatch(control);
  });

  it('--json output is escaped too, and parses back to what the server said', async () => {
    const status = await workcell(['status', jobId, '--json']);
    expect(status.stdout).not.toMatch(control);
    const job = JSON.parse(status.stdout) as { summary: string; task: string };
    expect(job.summary).toContain('\u001b]52;c;');
    expect(job.summary).toContain('\u009d0;title\u009c\u007f');
    const logs = await workcell(['logs', jobId, '--json']);
    expect(logs.stdout).not.toMatch(control);
    const events = logs.stdout.trim().split('\n').map((line) => JSON.parse(line) as { type: string; data: Record<string, unknown> });
    expect(events.find((event) => event.type === 'model-turn')?.data.text).toBe('Working \u001b]0;pwned-title\u0007 on it\u001b[2J\u001b[H \u009b31m');
  });
});

describe('run options, files, diff, audit, send: a job driven from the command line', () => {
  let api: WorkcellClient;
  let jobId = '';
  beforeAll(() => {
    api = createClient({ baseUrl: app.url });
    writeFileSync(join(work, 'notes.txt'), 'uploaded notes\n');
    mkdirSync(join(work, 'src'), { recursive: true });
    writeFileSync(join(work, 'src', 'app.py'), 'print("uploaded app")\n');
    writeFileSync(join(work, 'from-client.txt'), 'written by the client\n');
    writeFileSync(join(work, 'empty'), '');
  });

  it('run --detach uploads --file parts at their paths with --cpus, --memory and --allow, and prints only the job id', async () => {
    const args = ['run', 'Read the notes and wait for go', '--model', 'script:client.json', '--file', 'notes.txt', '--file', 'src/app.py'];
    const result = await workcell([...args, '--allow', 'example.com', '--allow', '*.pypi.org:443', '--cpus', '0.5', '--memory', '256', '--detach']);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toMatch(/^job_[0-9a-z]{26}\n$/);
    jobId = result.stdout.trim();
    const job = JSON.parse((await workcell(['status', jobId, '--json'])).stdout) as { limits: Record<string, number>; network: { allow: string[] }; inputs: { upload?: { entries: number } } };
    expect(job.limits).toMatchObject({ cpus: 0.5, memory_mb: 256 });
    expect(job.network.allow).toEqual(expect.arrayContaining(['example.com', '*.pypi.org:443']));
    expect(job.inputs.upload?.entries).toBe(3);
    const detachedJson = await workcell(['run', 'x', '--model', 'script:two-files.json', '--detach', '--json']);
    expect(JSON.parse(detachedJson.stdout)).toEqual({ job_id: expect.stringMatching(/^job_/) });
  });

  it('files lists, prints and uploads while the job runs; --if-match guards a write', async () => {
    // The agent writes hello.txt, then waits for `go`.
    await expect.poll(async () => (await api.files.list(jobId).catch(() => ({ entries: [] }))).entries.map((entry) => entry.name), { timeout: 60_000 }).toContain('hello.txt');
    const listing = await workcell(['files', jobId]);
    expect(listing.code, listing.stderr).toBe(0);
    expect(listing.stdout).toMatch(/^file\s+15\s+\S+\s+notes\.txt$/m);
    expect(listing.stdout).toMatch(/^directory\s+-\s+\S+\s+src\/$/m);
    const json = JSON.parse((await workcell(['files', jobId, '--json'])).stdout) as { type: string; entries: Array<{ name: string }> };
    expect(json.type).toBe('directory');
    expect(json.entries.map((entry) => entry.name)).toEqual(['hello.txt', 'notes.txt', 'src']);
    expect((await workcell(['files', jobId, 'src/app.py'])).stdout).toBe('print("uploaded app")\n');
    const hello = JSON.parse((await workcell(['files', jobId, 'hello.txt', '--json'])).stdout) as { text: string; etag: string; size: number };
    expect(hello).toMatchObject({ path: 'hello.txt', text: 'hello from the agent\n', size: 21, etag: expect.stringMatching(/^"[0-9a-f]{64}"$/) });

    const stale = await workcell(['files', jobId, 'hello.txt', '--put', 'notes.txt', '--if-match', `"${'0'.repeat(64)}"`]);
    expect(stale.code).toBe(1);
    expect(stale.stderr).toMatch(/412: /);
    const put = await workcell(['files', jobId, 'from-client.txt', '--put', 'from-client.txt', '--json']);
    expect(put.code, put.stderr).toBe(0);
    expect(JSON.parse(put.stdout)).toMatchObject({ path: 'from-client.txt', size: 22, created: true });
    const go = await workcell(['files', jobId, 'go', '--put', 'empty']);
    expect(go.stdout).toMatch(/^created go \(0 bytes, etag "[0-9a-f]{64}"\)$/m);
  });

  it('logs -f --json follows the job to its end as JSON lines; diff, diff --patch and audit show what happened', async () => {
    const logs = await workcell(['logs', jobId, '-f', '--json']);
    expect(logs.code, logs.stderr).toBe(0);
    const events = jsonLines(logs.stdout);
    expect(events.map((event) => event.seq)).toEqual(events.map((_, index) => index + 1));
    expect(events.at(-1)).toMatchObject({ type: 'job-status', data: { status: 'complete' } });

    const diff = await workcell(['diff', jobId]);
    expect(diff.code, diff.stderr).toBe(0);
    expect(diff.stdout).toBe('A  from-client.txt  (22 bytes)\nA  hello.txt  (21 bytes)\n2 added, 0 changed, 0 deleted (job complete)\n');
    const diffJson = JSON.parse((await workcell(['diff', jobId, '--json'])).stdout) as { summary: Record<string, number> };
    expect(diffJson.summary).toEqual({ added: 2, changed: 0, deleted: 0 });
    const patch = await workcell(['diff', jobId, '--patch']);
    expect(patch.stdout).toContain('diff --git a/hello.txt b/hello.txt\nnew file mode 100644\n');
    expect(patch.stdout).toContain('+written by the client\n');

    const audit = await workcell(['audit', jobId]);
    expect(audit.code, audit.stderr).toBe(0);
    expect(audit.stdout).toMatch(/^\d\d:\d\d:\d\d step \d+ file write from-client\.txt ok \(by local\)$/m);
    expect(audit.stdout).toMatch(/file write hello\.txt failed: precondition_failed \(by local\)$/m);
    const auditJson = jsonLines((await workcell(['audit', jobId, '--json'])).stdout);
    expect(auditJson).toContainEqual(expect.objectContaining({ type: 'file', op: 'write', path: 'go', ok: true }));
    expect((await workcell(['audit', jobId, '--after', String(auditJson.length)])).stdout).toBe('');
  });

  it('send continues the finished job; --json answers, status, jobs, cancel, open and download print JSON', async () => {
    const sent = await workcell(['send', jobId, 'Now write second.txt', '--json']);
    expect(sent.code, sent.stderr).toBe(0);
    expect(JSON.parse(sent.stdout)).toMatchObject({ job_id: jobId, run: 2, reopened: true });
    expect((await api.waitFor(jobId, { timeoutMs: 60_000 })).run).toBe(2);
    expect((await workcell(['files', jobId, 'second.txt'])).stdout).toBe('second run\n');
    // A message from stdin, to the finished job: it continues again (the script has run out: it just ends).
    const fromStdin = await workcell(['send', jobId, '-'], {}, 'one more thing\n');
    expect(fromStdin.stdout).toMatch(new RegExp(`^${jobId}: message \\d+ for run 3 \\(the job continues`));
    await api.waitFor(jobId, { timeoutMs: 60_000 });

    const page = JSON.parse((await workcell(['jobs', '--json', '--limit', '50'])).stdout) as { jobs: Array<{ job_id: string }>; next_cursor: string | null };
    expect(page.jobs.map((job) => job.job_id)).toContain(jobId);
    expect(page).toHaveProperty('next_cursor');
    const download = await workcell(['download', jobId, '-o', 'cli.zip', '--extract', 'cli-out', '--json']);
    expect(download.code, download.stderr).toBe(0);
    expect(JSON.parse(download.stdout)).toMatchObject({ job_id: jobId, output: 'cli.zip', extracted_to: 'cli-out', bytes: expect.any(Number) });
    expect(readFileSync(join(work, 'cli-out', 'second.txt'), 'utf8')).toBe('second run\n');
    const deleted = await workcell(['files', jobId, 'second.txt', '--rm', '--json']);
    expect(JSON.parse(deleted.stdout)).toEqual({ path: 'second.txt', type: 'file' });
    const cancelled = await workcell(['cancel', jobId, '--json']);
    expect(cancelled.code).toBe(1);
    expect(cancelled.stderr).toMatch(/409: /);
  });

  it('run --json prints the events as JSON lines; --repo goes as inputs.git', async () => {
    const run = await workcell(['run', 'Write hello.py and notes.txt', '--model', 'script:two-files.json', '--json', '--no-download']);
    expect(run.code, run.stderr).toBe(0);
    const events = jsonLines(run.stdout);
    expect(events[0]).toMatchObject({ type: 'job-status', data: { status: 'pending' } });
    expect(events.at(-1)).toMatchObject({ type: 'job-status', data: { status: 'complete' } });

    // Nothing serves this repository: what matters here is what the CLI asked for.
    const repo = await workcell(['run', 'Fix the bug', '--model', 'script:two-files.json', '--repo', 'http://127.0.0.1:9/team/app.git#release/1.2', '--detach']);
    expect(repo.code, repo.stderr).toBe(0);
    const job = await api.get(repo.stdout.trim());
    expect(job.inputs.git).toEqual({ url: 'http://127.0.0.1:9/team/app.git', ref: 'release/1.2' });
    await api.waitFor(job.job_id, { timeoutMs: 60_000 });
  });
});

describe('NO_COLOR', () => {
  it('colours events on a terminal, and not with NO_COLOR set', async () => {
    const { job_id } = await createClient({ baseUrl: app.url }).schedule({ task: 'two files', model: 'script:two-files.json' });
    await createClient({ baseUrl: app.url }).waitFor(job_id, { timeoutMs: 60_000 });
    const colored = workcellInPty(['logs', job_id], { NO_COLOR: '' });
    expect(await colored.exited).toBe(0);
    expect(colored.output).toMatch(/job complete/);
    expect(colored.output).toContain('\u001b[1m');
    const plain = workcellInPty(['logs', job_id], { NO_COLOR: '1' });
    expect(await plain.exited).toBe(0);
    expect(plain.output).toMatch(/job complete/);
    expect(plain.output).not.toContain('\u001b[');
  });
});

describe('workcell terminal', () => {
  let api: WorkcellClient;
  let running = '';
  beforeAll(async () => {
    api = createClient({ baseUrl: app.url });
    running = (await api.schedule({ task: 'sleep', model: 'script:long-sleep.json' })).job_id;
    // Running, with the agent's long command sent to its shell session.
    for await (const event of api.events(running)) {
      if (event.type === 'tool-call' && JSON.stringify(event.data.args).includes('sleep 300')) break;
    }
  });
  afterAll(async () => {
    await api.cancel(running).catch(() => undefined);
  });

  it('runs what is piped into it in a new bash in /workspace, and ends with its input', async () => {
    const result = await workcell(['terminal', running], {}, 'echo TERM-$((6*7)) in $PWD\n');
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toContain('TERM-42 in /workspace');
  });

  it('on a terminal: raw mode (Ctrl-C reaches the sandbox), resizes, and exit leaves', async () => {
    const session = workcellInPty(['terminal', running]);
    session.terminal.write('stty size; echo READY-$((1+1))\r');
    // Lines end \r\r\n: the sandbox's terminal sends \r\n, and the local one (raw input, cooked output) adds its \r.
    await session.waitFor(/30 100\r+\nREADY-2/);
    session.terminal.resize(120, 40);
    session.terminal.write('stty size\r');
    await session.waitFor(/40 120/);
    // Ctrl-C goes to the sandbox's terminal (raw mode): it stops the command running there (in the foreground once it
    // has printed STARTED), and the CLI goes on; without it the next command would wait 600 s.
    session.terminal.write("sh -c 'echo STARTED; exec sleep 600'\r");
    await session.waitFor(/[\r\n]STARTED\r+\n/);
    session.terminal.write('\u0003');
    session.terminal.write('echo AFTER-$((2+2))\r');
    await session.waitFor(/[\r\n]AFTER-4\r+\n/);
    session.terminal.write('exit\r');
    expect(await session.exited).toBe(0);
  });

  it("--session watches the agent's shell read-only, until the job ends", async () => {
    const watcher = workcellInPty(['terminal', running, '--session', 'main']);
    await watcher.waitFor(/sleep 300/);
    await api.cancel(running);
    await watcher.exited;
    expect(watcher.output).toContain('sleep 300');
  });

  it('refuses what it cannot open, saying why', async () => {
    const finished = await workcell(['terminal', running]);
    expect(finished.code).toBe(1);
    expect(finished.stderr).toMatch(/409: .*no sandbox/);
    const unknown = await workcell(['terminal', 'job_00000000000000000000000000']);
    expect(unknown.code).toBe(3);
    expect(unknown.stderr).toMatch(/404: /);
    const session = await workcell(['terminal', running, '--session', 'a;rm']);
    expect(session.code).toBe(1);
    expect(session.stderr).toMatch(/session name/);
    const down = await workcell(['terminal', running], { WORKCELL_URL: 'http://127.0.0.1:9' });
    expect(down.code).toBe(1);
    expect(down.stderr).toMatch(/cannot reach the workcell server at http:\/\/127\.0\.0\.1:9/);
  });
});

describe('bad input to the new commands and options', () => {
  const unknownJob = 'job_00000000000000000000000000';
  let finished = '';
  beforeAll(async () => {
    const api = createClient({ baseUrl: app.url });
    finished = (await api.schedule({ task: 'two files', model: 'script:two-files.json' })).job_id;
    await api.waitFor(finished, { timeoutMs: 60_000 });
    mkdirSync(join(work, 'a-directory'), { recursive: true });
  });

  it.each([
    [['send', '../x', 'hi'], 1, /expected a job id/],
    [['send', unknownJob, 'hi'], 3, /404: no job/],
    [['send', 'JOB', '   '], 1, /the message is empty/],
    [['files', 'nope'], 1, /expected a job id/],
    [['files', unknownJob], 3, /404: no job/],
    [['files', 'JOB', 'missing.txt'], 3, /404: .*does not exist/],
    [['files', 'JOB', '../etc/passwd'], 1, /without \. or \.\. segments/],
    [['files', 'JOB', 'x.txt', '--put', 'no-such-local-file'], 1, /--put no-such-local-file: no such file/],
    [['files', 'JOB', '--put', 'notes.txt'], 1, /--put needs the path/],
    [['files', 'JOB', 'x.txt', '--put', 'notes.txt', '--rm'], 1, /cannot be used with/],
    [['files', 'JOB', '--rm'], 1, /--rm needs the path/],
    [['files', 'JOB', 'hello.py', '--if-match', '"x"'], 1, /--if-match goes with --put or --rm/],
    [['diff', unknownJob], 3, /404: no job/],
    [['diff', 'JOB', '--patch', '--json'], 1, /cannot be used with/],
    [['audit', unknownJob], 3, /404: no job/],
    [['audit', 'JOB', '--after', '-1'], 1, /whole number/],
    [['terminal', '--bogus', 'JOB'], 1, /unknown option/],
    [['run', 'x', '--cpus', 'lots'], 1, /positive number/],
    [['run', 'x', '--memory', '0'], 1, /positive integer/],
    [['run', 'x', '--file', '/etc/hostname'], 1, /under the current directory/],
    [['run', 'x', '--file', 'missing.txt'], 1, /--file missing\.txt: no such file/],
    [['run', 'x', '--file', 'a-directory'], 1, /not a regular file \(a directory/],
    [['run', 'x', '--archive', 'missing.tar'], 1, /--archive missing\.tar: no such file/],
    [['run', 'x', '--repo', '#main'], 1, /give the repository's URL/],
    [['run', 'x', '--repo', 'https://git.example.com/app.git#'], 1, /nothing after #/],
    [['run', 'x', '--repo', 'ftp://git.example.com/app.git', '--detach'], 1, /400: .*https:\/\/ or http:\/\//],
    [['run', 'x', '--allow', 'not a host!', '--detach'], 1, /400: .*network\.allow/],
    [['run', 'x', '--cpus', '100000', '--detach'], 1, /400: .*cpus/],
    [['jobs', '--status', 'sleeping'], 1, /Allowed choices are pending, running/],
  ])('%j exits %i saying what is wrong', async (args, code, message) => {
    const result = await workcell(args.map((arg) => (arg === 'JOB' ? finished : arg)));
    expect(result.code, result.stderr).toBe(code);
    expect(result.stderr).toMatch(message);
    expect(result.stdout).toBe('');
  });

  it('says how to start a server when none answers, for every new command', async () => {
    for (const args of [['send', unknownJob, 'hi'], ['files', unknownJob], ['diff', unknownJob], ['audit', unknownJob]]) {
      const result = await workcell(args, { WORKCELL_URL: 'http://127.0.0.1:9' });
      expect(result.code, args.join(' ')).toBe(1);
      expect(result.stderr).toMatch(/cannot reach the workcell server at http:\/\/127\.0\.0\.1:9.*workcell serve.*WORKCELL_URL/);
    }
  });
});

describe('workcell serve, as set-up puts it on PATH', () => {
  let binDir = '';
  const servers: ChildProcess[] = [];
  beforeAll(async () => {
    binDir = mkdtempSync(join(tmpdir(), 'workcell-bin-'));
    await new Promise<void>((resolve, reject) => execFile(installCommand, [binDir], (error, _stdout, stderr) => (error ? reject(new Error(`install-command.sh: ${stderr}`)) : resolve())));
  });
  afterAll(() => {
    for (const child of servers) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    rmSync(binDir, { recursive: true, force: true });
  });

  /** PATH with only the system's directories: a node there is not the one the command runs (Debian's is older). */
  const systemPath = '/usr/bin:/bin';

  it('runs with its own Node, whatever node PATH finds first', async () => {
    const result = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      execFile(join(binDir, 'workcell'), ['--version'], { env: { PATH: systemPath } }, (error, stdout, stderr) => resolve({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, stdout, stderr }));
    });
    expect(result, result.stderr).toMatchObject({ code: 0 });
    expect(result.stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
  });

  it.each(['SIGTERM', 'SIGINT'] as const)('%s to the workcell process stops the server and it exits', async (signal) => {
    const dataDir = mkdtempSync(join(work, `serve-${signal}-`));
    const child = spawn(join(binDir, 'workcell'), ['serve', '--port', '0', '--data-dir', dataDir], {
      env: { ...process.env, PATH: systemPath, WORKCELL_LOG_LEVEL: 'warn', WORKCELL_RUNTIME: 'bwrap' },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    servers.push(child);
    let stderr = '';
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, exitSignal) => resolve({ code, signal: exitSignal })));
    const url = await new Promise<string>((resolve, reject) => {
      child.stderr.on('data', (chunk: Buffer) => {
        stderr += chunk.toString();
        const listening = /workcell listening on (http:\/\/\S+)/.exec(stderr)?.[1];
        if (listening !== undefined) resolve(listening);
      });
      void exited.then(({ code }) => reject(new Error(`workcell serve exited (${code}) before listening: ${stderr}`)));
    });
    expect((await fetch(`${url}/healthz`)).status).toBe(200);
    // The wrapper exec'd node: the process the signal goes to is the server itself, not a shell or npm in front of it.
    const [command, script] = readFileSync(`/proc/${child.pid}/cmdline`, 'utf8').split('\0');
    expect(command).toMatch(/\/node$/);
    expect(script).toMatch(/\/bin\/workcell\.js$/);

    child.kill(signal);
    expect(await exited, stderr).toEqual({ code: 0, signal: null });
    expect(stderr).toContain(`workcell: ${signal}: shutting down`);
    await expect(fetch(`${url}/healthz`)).rejects.toThrow();
  });
});
