// Start-up on a host without loop devices, for real: `workcell serve` and `workcell doctor` as children in a mount
// namespace whose /dev has no loop devices (test/helpers/no-loop-devices.ts), as in a container or an unprivileged
// pod. By default the server refuses to start and says why and what to do; with WORKCELL_DISK_LIMIT=tmpfs it starts,
// a job's workspace is a tmpfs held to its disk_mb (the agent gets ENOSPC at the limit), its isolation report says so,
// and the workspace comes back as a plain directory.
import type { ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { collectEvents, downloadZip, trajectoriesDir } from '../../helpers/app.ts';
import { noLoopDevicesUnavailable, runWithoutLoopDevices, spawnWithoutLoopDevices } from '../../helpers/no-loop-devices.ts';

const main = join(import.meta.dirname, '../../../src/cli/main.ts');
const children: ChildProcess[] = [];
const dirs: string[] = [];

afterEach(() => {
  for (const child of children.splice(0)) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function dataDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'workcell-no-loop-'));
  chmodSync(dir, 0o711);
  dirs.push(dir);
  return dir;
}

function serverEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return { ...process.env, WORKCELL_RUNTIME: 'bwrap', WORKCELL_MODEL: `script:${join(trajectoriesDir, 'workspace-fill.json')}`, WORKCELL_LOG_LEVEL: 'info', ...extra };
}

/** `workcell serve` without loop devices: its URL once it listens, or its exit code and output when it ends first. */
function serve(dir: string, env: NodeJS.ProcessEnv): Promise<{ url: string } | { code: number | null; output: string }> {
  const child = spawnWithoutLoopDevices([process.execPath, main, 'serve', '--port', '0', '--data-dir', dir], { env });
  children.push(child);
  return new Promise((resolve) => {
    let output = '';
    const read = (chunk: Buffer) => {
      output += chunk.toString();
      const url = /workcell listening on (http:\/\/\S+)/.exec(output)?.[1];
      if (url !== undefined) resolve({ url });
    };
    child.stdout!.on('data', read);
    child.stderr!.on('data', read);
    child.once('close', (code) => resolve({ code, output }));
  });
}

describe.runIf(noLoopDevicesUnavailable() === undefined)('start-up on a host without loop devices', () => {
  it('serve refuses to start, saying why and what to do; doctor says the same', async () => {
    const started = await serve(dataDir(), serverEnv());
    expect('code' in started, JSON.stringify(started)).toBe(true);
    if (!('code' in started)) return;
    expect(started.code).not.toBe(0);
    expect(started.output).toMatch(/refusing to start: no working loop devices \(mount -o loop failed: [^)]+\): jobs cannot get their workspace disk limit/);
    expect(started.output).toContain('WORKCELL_DISK_LIMIT=tmpfs');
    expect(started.output).not.toContain('workcell listening');

    const doctor = await runWithoutLoopDevices([process.execPath, main, 'doctor', '--json'], { env: serverEnv(), timeoutMs: 300_000 });
    const probes = JSON.parse(doctor.stdout) as Array<{ name: string; available: boolean; detail: string }>;
    expect(probes.find((probe) => probe.name === 'disk limits')).toEqual({ name: 'disk limits', available: false, detail: expect.stringMatching(/^no working loop devices .*WORKCELL_DISK_LIMIT=tmpfs/) });
  });

  it('with WORKCELL_DISK_LIMIT=tmpfs it starts, and a job gets a tmpfs of its disk_mb, said in its isolation report', async () => {
    const dir = dataDir();
    const started = await serve(dir, serverEnv({ WORKCELL_DISK_LIMIT: 'tmpfs' }));
    expect('url' in started, JSON.stringify(started)).toBe(true);
    if (!('url' in started)) return;
    const app = { url: started.url };
    const response = await fetch(`${app.url}/schedule`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ task: 'fill the disk', limits: { disk_mb: 32 } }) });
    expect(response.status).toBe(202);
    const { job_id: jobId } = (await response.json()) as { job_id: string };
    const events = await collectEvents(app as never, jobId);
    expect(events.at(-1)?.data, JSON.stringify(events.at(-1))).toMatchObject({ status: 'complete' });
    const job = (await (await fetch(`${app.url}/jobs/${jobId}`)).json()) as { isolation: string };
    expect(job.isolation).toContain('workspace disk 32 MB (tmpfs: in memory, counted against the memory limit)');

    // The agent got ENOSPC at 32 MB, not 100 MB; then the file system it saw was a tmpfs.
    const outputs = events.filter((event) => event.type === 'tool-result').map((event) => JSON.stringify(event.data));
    const kept = /kept (\d+) bytes/.exec(outputs.join('\n'))?.[1];
    expect(Number(kept)).toBeGreaterThan(0);
    expect(Number(kept)).toBeLessThanOrEqual(32 * 1024 * 1024);
    expect(outputs.join('\n')).toContain('workspace file system: tmpfs');
    // After the job the workspace is a plain directory again (the namespace's mounts would be gone with the server).
    expect(await readFile(join(dir, 'jobs', jobId, 'workspace', 'result.txt'), 'utf8')).toBe('survived\n');
    expect((await downloadZip(app as never, jobId)).has('result.txt')).toBe(true);
  });
});
