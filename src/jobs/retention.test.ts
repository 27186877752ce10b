// WORKCELL_RETENTION_DAYS with a real store and job directories: the sweep deletes finished jobs that ended before the
// cutoff (row, runs, directory, even one the agent made read-only or planted a link in), keeps newer and live ones, and
// a job reopened meanwhile survives.
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../config.ts';
import { JobService } from './job-service.ts';
import { openSqliteStore } from '../store/sqlite/index.ts';
import type { Store } from '../store/types.ts';
import { RetentionSweeper } from './retention.ts';

let dir: string;
let store: Store;
let jobs: JobService;
const logger = pino({ level: 'silent' });

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'workcell-retention-'));
  const config = loadConfig({}, { dataDir: dir });
  store = openSqliteStore(dir);
  jobs = new JobService({ config, store: store.jobs, logger });
});
afterEach(async () => {
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

async function finishedJob(endedAt: Date): Promise<string> {
  const { job } = await jobs.schedule({ task: 'x' });
  expect((await store.jobs.claim('worker', 60_000))?.id).toBe(job.id);
  jobs.jobFiles(job); // its worker makes the job's directory
  expect(await store.jobs.finish(job.id, 'worker', { status: 'complete', summary: 'done' }, endedAt)).toBe(true);
  return job.id;
}

describe('RetentionSweeper', () => {
  it('deletes finished jobs older than the retention, with their files, and keeps the rest', async () => {
    const day = 86_400_000;
    const now = Date.parse('2026-12-05T12:00:00Z');
    const old = await finishedJob(new Date(now - 8 * day));
    const recent = await finishedJob(new Date(now - 6 * day));
    const { job: pending } = await jobs.schedule({ task: 'still waiting' });
    // What an agent leaves: a read-only directory, a link out of the workspace.
    const workspace = jobs.paths(old).workspace;
    mkdirSync(join(workspace, 'locked'));
    writeFileSync(join(workspace, 'locked', 'file'), 'x');
    chmodSync(join(workspace, 'locked'), 0o555);
    const outside = join(dir, 'outside.txt');
    writeFileSync(outside, 'not the job\'s');
    symlinkSync(outside, join(workspace, 'link'));

    const sweeper = new RetentionSweeper({ retentionDays: 7, finishedBefore: (cutoff, limit) => store.jobs.finishedBefore(cutoff, limit), deleteJob: (job) => jobs.deleteFinished(job), logger, now: () => now });
    expect(await sweeper.sweep()).toBe(1);
    expect(await store.jobs.get(old)).toBeUndefined();
    expect(await store.jobs.runs(old)).toEqual([]);
    expect(existsSync(jobs.paths(old).root)).toBe(false);
    expect(existsSync(outside)).toBe(true);
    expect((await store.jobs.get(recent))?.status).toBe('complete');
    expect(existsSync(jobs.paths(recent).root)).toBe(true);
    expect((await store.jobs.get(pending.id))?.status).toBe('pending');
    expect(await sweeper.sweep()).toBe(0);
  });

  it('leaves a job that a message reopened after the sweep listed it', async () => {
    const now = Date.now();
    const id = await finishedJob(new Date(now - 30 * 86_400_000));
    const sweeper = new RetentionSweeper({
      retentionDays: 1,
      finishedBefore: async (cutoff, limit) => {
        const listed = await store.jobs.finishedBefore(cutoff, limit);
        await jobs.postMessage(id, 'keep going'); // reopens it
        return listed;
      },
      deleteJob: (job) => jobs.deleteFinished(job),
      logger,
    });
    expect(await sweeper.sweep()).toBe(0);
    expect(await store.jobs.get(id)).toMatchObject({ status: 'pending', run: 2 });
    expect(existsSync(jobs.paths(id).root)).toBe(true);
  });
});
