// The `workcell` command against a running server (real sandbox, scripted model), run as a child process exactly
// as a user runs it: output, exit codes and the error message for every kind of bad input; nothing the model writes
// reaches the terminal as a control sequence; and `workcell serve`, as set-up installs it, ends on SIGTERM and SIGINT.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../../helpers/app.ts';

const bin = join(import.meta.dirname, '../../../bin/workcell.js');
const installCommand = join(import.meta.dirname, '../../../scripts/install-command.sh');
let app: TestApp;
let work: string;

function workcell(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [bin, ...args], { cwd: work, env: { ...process.env, WORKCELL_URL: app.url, ...env }, timeout: 60_000 }, (error, stdout, stderr) => {
      resolve({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, stdout, stderr });
    });
  });
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
