// No request of any kind can crash or wedge the server (issue 9, finding 1). `workcell serve` runs as a child process
// with API keys while two real jobs run, and is hammered meanwhile: websocket upgrades reset by the client before and
// after their head (on the API's host and on a job's host, the terminal and the desktop), hostile cookies (the `%`
// that once threw in decodeURIComponent), malformed headers, hosts and paths, plain requests reset mid-body. The server
// process lives on, answers, and both jobs complete.
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { trajectoriesDir } from '../../helpers/app.ts';

const bin = join(import.meta.dirname, '../../../bin/workcell.js');
let server: ChildProcess;
let dataDir: string;
let base = '';
let key = '';
let stderr = '';

beforeAll(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'workcell-hostile-'));
  chmodSync(dataDir, 0o711);
  key = /wc_key_\S+/.exec(execFileSync(process.execPath, [bin, 'keys', 'create', '--name', 'alice', '--data-dir', dataDir], { encoding: 'utf8' }))![0];
  server = spawn(process.execPath, [bin, 'serve', '--port', '0', '--data-dir', dataDir], {
    env: { ...process.env, WORKCELL_SCRIPT_DIR: trajectoriesDir, WORKCELL_RUNTIME: 'bwrap', WORKCELL_LOG_LEVEL: 'warn', WORKCELL_CONCURRENCY: '2' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  base = await new Promise<string>((resolve, reject) => {
    server.stderr!.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
      const url = /workcell listening on (http:\/\/\S+)/.exec(stderr)?.[1];
      if (url !== undefined) resolve(url);
    });
    server.once('exit', (code) => reject(new Error(`the server exited (${code}): ${stderr}`)));
  });
});

afterAll(async () => {
  if (server.exitCode === null) {
    const exited = new Promise((resolve) => server.once('exit', resolve));
    server.kill('SIGTERM');
    await exited;
  }
  rmSync(dataDir, { recursive: true, force: true });
});

const port = () => Number(new URL(base).port);

/** Sends raw bytes, then resets the connection at once or after the first answer byte; never throws. */
function hit(text: string, reset: 'now' | 'after-answer' | 'never'): Promise<string> {
  return new Promise((resolve) => {
    let answer = '';
    const socket = connect(port(), '127.0.0.1', () => {
      socket.write(text);
      if (reset === 'now') setImmediate(() => socket.resetAndDestroy());
    });
    socket.on('data', (chunk: Buffer) => {
      answer += chunk.toString('latin1');
      if (reset === 'after-answer') socket.resetAndDestroy();
    });
    socket.on('error', () => undefined);
    socket.on('close', () => resolve(answer));
    if (reset === 'never') socket.end();
  });
}

describe('a server under hostile clients', () => {
  it('lives on and finishes its jobs while upgrades are reset and hostile cookies, headers and paths arrive', async () => {
    const auth = `authorization: Bearer ${key}\r\n`;
    const jobs: string[] = [];
    for (let i = 0; i < 2; i++) {
      const response = await fetch(`${base}/schedule`, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: JSON.stringify({ task: 'wait', model: 'script:slow-steps.json' }) });
      expect(response.status).toBe(202);
      jobs.push(((await response.json()) as { job_id: string }).job_id);
    }
    const jobHost = (id: string) => `${id.replace('_', '-')}.localhost:${port()}`;
    const upgrade = (path: string, host: string, extra = '') => `GET ${path} HTTP/1.1\r\nhost: ${host}\r\nconnection: Upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n${extra}\r\n`;
    const hostileHeads = [
      'cookie: workcell_token=%\r\n',
      'cookie: workcell_session=%\r\n',
      'cookie: workcell_session=%E0%A4%A; workcell_session=x.y\r\n',
      `cookie: ${'a=%; '.repeat(2000)}\r\n`,
      'authorization: Bearer %\r\n',
      'authorization: \r\n',
      'origin: \xff\xfe\r\n',
      'sec-fetch-site: cross-site\r\nsec-fetch-mode: websocket\r\n',
      'x-workcell-base-path: /../../etc\r\n',
    ];
    const paths = (id: string) => [`/jobs/${id}/terminal`, `/jobs/${id}/terminal?workcell_link=%`, `/jobs/${id}/desktop/websockify`, `/jobs/${id}/jupyter/api/kernels/x/channels`, '/jobs/%/terminal', '//', `/jobs/${id}/desktop/..%2f..%2f`, `/${'x'.repeat(20_000)}`];
    let rounds = 0;
    const running = async () => {
      for (const id of jobs) {
        const job = (await (await fetch(`${base}/jobs/${id}`, { headers: { authorization: `Bearer ${key}` } })).json()) as { status: string };
        if (job.status === 'pending' || job.status === 'running') return true;
      }
      return false;
    };
    while (rounds < 3 || (await running())) {
      rounds++;
      for (const id of jobs) {
        for (const path of paths(id)) {
          for (const host of [`127.0.0.1:${port()}`, jobHost(id), 'evil.example']) {
            await hit(upgrade(path, host, auth), 'now');
            await hit(upgrade(path, host, auth).slice(0, 40), 'now');
            await hit(upgrade(path, host, auth), 'after-answer');
          }
        }
        for (const head of hostileHeads) {
          await hit(upgrade(`/jobs/${id}/desktop/websockify`, jobHost(id), head), 'never');
          await hit(upgrade(`/jobs/${id}/terminal`, `127.0.0.1:${port()}`, head), 'after-answer');
          await hit(`GET /jobs/${id} HTTP/1.1\r\nhost: 127.0.0.1\r\n${head}\r\n`, 'never');
          await hit(`GET /jobs/${id}/desktop/vnc.html HTTP/1.1\r\nhost: ${jobHost(id)}\r\n${head}\r\n`, 'never');
        }
        // A body cut off by a reset, on the API and through the Jupyter proxy.
        await hit(`POST /schedule HTTP/1.1\r\nhost: 127.0.0.1\r\n${auth}content-type: application/json\r\ncontent-length: 100000\r\n\r\n{"task": "`, 'now');
        await hit(`POST /jobs/${id}/jupyter/api/contents/x HTTP/1.1\r\nhost: ${jobHost(id)}\r\n${auth}content-length: 100000\r\n\r\n{"type"`, 'now');
      }
      expect(server.exitCode, stderr).toBeNull();
    }
    expect(rounds).toBeGreaterThanOrEqual(3);
    expect(server.exitCode, stderr).toBeNull();
    // Nothing failed inside the server either: every hostile request was answered or dropped as expected.
    expect(stderr.split('\n').filter((line) => /"level":(50|60)/.test(line))).toEqual([]);
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    for (const id of jobs) {
      const job = (await (await fetch(`${base}/jobs/${id}`, { headers: { authorization: `Bearer ${key}` } })).json()) as { status: string; summary: string };
      expect(job.status).toBe('complete');
      expect(job.summary).toMatch(/wrote done.txt/);
    }
  });
});
