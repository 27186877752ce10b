// Limits through the whole system: POST /schedule with limits, a real job that runs into them (the agent is told in
// the tool result, and the event records which), the limits and usage in GET /jobs/:id, and the workspace disk
// handed back as a plain directory after the zip. Limits above the server's are refused; unset ones take its defaults.
import { existsSync, readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { isMountPoint } from '../../../src/jobs/workspace-disk.ts';
import { collectEvents, downloadZip, get, post, startTestApp, type TestApp } from '../../helpers/app.ts';

interface JobDetail {
  status: string;
  error?: string;
  isolation: string | null;
  limits: Record<string, number>;
  usage: { steps: number; cpu_seconds?: number; peak_memory_mb?: number };
}

let app: TestApp | undefined;
afterEach(async () => {
  await app?.close();
  app = undefined;
});

const asRoot = process.getuid?.() === 0;

describe('per-job limits', () => {
  it('a job that runs into its memory and /tmp limits is told so, carries on, and reports limits and usage', async () => {
    app = await startTestApp();
    const limits = { cpus: 0.5, memory_mb: 256, pids: 128, disk_mb: 32, idle_time_s: 120 };
    const scheduled = await post<{ job_id: string }>(app, '/schedule', { task: 'hit the limits', model: 'script:limits.json', limits });
    expect(scheduled.status).toBe(202);
    const jobId = scheduled.body.job_id;
    const events = await collectEvents(app, jobId);
    const job = await get<JobDetail>(app, `/jobs/${jobId}`);

    expect(job.status).toBe('complete');
    expect(job.limits).toEqual({ wall_time_s: 3600, max_steps: 200, sandbox_log_mb: 64, audit_log_mb: 64, context_mb: 1024, ...limits });
    expect(job.isolation).toMatch(/seccomp filter/);
    expect(job.isolation).toMatch(/limits: 0.5 CPU, 256 MB memory, 128 processes.*\/tmp 32 MB, workspace disk 32 MB \(ext4 on a loop device\)$/);
    const results = events.filter((event) => event.type === 'tool-result');
    expect(results[0]?.data.limits_hit).toEqual(['memory']);
    expect(String(results[0]?.data.output)).toContain("[limit] a process was killed: the sandbox's memory limit (256 MB) was reached.");
    expect(results[1]?.data.limits_hit).toEqual(['tmp_disk']);
    expect(String(results[1]?.data.output)).toContain('[limit] no space left: /tmp is full (its limit is 32 MB).');
    expect(results[2]?.data).toMatchObject({ name: 'write_file', is_error: false });
    expect(results[2]?.data.limits_hit).toBeUndefined();
    expect(job.usage.cpu_seconds).toBeGreaterThan(0);
    expect(job.usage.peak_memory_mb).toBeGreaterThan(200);
    expect(job.usage.peak_memory_mb).toBeLessThanOrEqual(256);

    expect((await downloadZip(app, jobId)).get('result.txt')?.content).toBe('survived\n');
    // After the zip the workspace is a plain directory again, holding the final content.
    const root = join(app.dataDir, 'jobs', jobId);
    expect(await isMountPoint(join(root, 'workspace'))).toBe(false);
    expect(existsSync(join(root, 'workspace.ext4'))).toBe(false);
    expect(readFileSync(join(root, 'workspace', 'result.txt'), 'utf8')).toBe('survived\n');
  });

  it.runIf(asRoot)('runs the workspace on a disk of the job\'s disk_mb', async () => {
    app = await startTestApp();
    const scheduled = await post<{ job_id: string }>(app, '/schedule', { task: 'look at the disk', model: 'script:two-files.json', limits: { disk_mb: 64 } });
    const jobId = scheduled.body.job_id;
    let sawMount = false;
    await collectEvents(app, jobId, {
      onEvent: (event) => {
        if (event.type === 'sandbox-ready') sawMount = existsSync(join(app!.dataDir, 'jobs', jobId, 'workspace.ext4'));
      },
    });
    expect(sawMount).toBe(true);
    const orchestratorLog = await readFile(join(app.dataDir, 'jobs', jobId, 'logs', 'orchestrator.log'), 'utf8');
    expect(orchestratorLog).not.toMatch(/releasing the workspace disk failed/);
    expect((await get<JobDetail>(app, `/jobs/${jobId}`)).status).toBe('complete');
  });

  it('takes the server defaults for unset limits and refuses more than the server allows', async () => {
    app = await startTestApp({ memoryMb: 1024, pids: 256 });
    const over = await post<{ detail: string }>(app, '/schedule', { task: 'greedy', model: 'script:two-files.json', limits: { memory_mb: 4096 } });
    expect(over.status).toBe(400);
    expect(over.body.detail).toMatch(/limits.memory_mb \(4096\) is above what this server allows \(1024, set by WORKCELL_MEMORY_MB\)/);
    const invalid = await post<{ detail: string }>(app, '/schedule', { task: 'odd', limits: { pids: 3 } });
    expect(invalid.status).toBe(400);

    const scheduled = await post<{ job_id: string }>(app, '/schedule', { task: 'defaults', model: 'script:two-files.json', limits: { pids: 100 } });
    await collectEvents(app, scheduled.body.job_id);
    const job = await get<JobDetail>(app, `/jobs/${scheduled.body.job_id}`);
    expect(job.limits).toMatchObject({ cpus: 1, memory_mb: 1024, pids: 100, disk_mb: 4096, idle_time_s: 600 });
    expect(job.status).toBe('complete');
  });
});
