// The `workcell` command against a running server (real sandbox, scripted model), run as a child process exactly
// as a user runs it: output, exit codes and the error message for every kind of bad input.
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../../helpers/app.ts';

const bin = join(import.meta.dirname, '../../../bin/workcell.js');
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
