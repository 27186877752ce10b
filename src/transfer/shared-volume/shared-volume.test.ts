import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { WorkcellError } from '../../errors.ts';
import { jobPaths } from '../../jobs/job-paths.ts';
import { openSqliteStore } from '../../store/sqlite/index.ts';
import type { Job, Store } from '../../store/types.ts';
import { SharedVolumeTransfer, type FirstOffer } from './shared-volume.ts';

let root: string;
let store: Store;
beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), 'workcell-transfer-'));
  store = openSqliteStore(join(root, 'db'));
});
afterEach(async () => {
  await store.close();
  rmSync(root, { recursive: true, force: true });
});

/** The first offer kept, as a shared database keeps it (a real store's serverSecret). */
const database: () => FirstOffer = () => async (token) => (await store.keys.serverSecret('data-dir-marker', Buffer.from(token, 'hex'))).toString('hex');
const markers = (dir: string) => readdirSync(dir).filter((name) => name.startsWith('.shared-'));

describe('SharedVolumeTransfer.verify', () => {
  it('passes every process that shares the data dir, however many start at once, and leaves one marker', async () => {
    const shared = join(root, 'shared');
    await Promise.all(Array.from({ length: 6 }, () => new SharedVolumeTransfer(shared, database()).verify()));
    await new SharedVolumeTransfer(shared, database()).verify(); // one started later
    expect(markers(shared)).toHaveLength(1);
  });

  it('refuses a process whose data dir is another, saying what to mount and how to accept an emptied volume', async () => {
    const shared = join(root, 'shared');
    const other = join(root, 'other');
    await new SharedVolumeTransfer(shared, database()).verify();
    const refusal = new SharedVolumeTransfer(other, database()).verify();
    await expect(refusal).rejects.toThrow(/data dir .*other is not the one the other processes of this database use.*same shared volume at WORKCELL_DATA_DIR/s);
    expect(markers(other)).toEqual([]); // its own marker, offered and lost, is gone
    // The fix the message names.
    writeFileSync(join(other, markers(shared)[0]!), '');
    await new SharedVolumeTransfer(other, database()).verify();
  });

  it('checks nothing for one process alone (no database shared)', async () => {
    const dir = join(root, 'alone');
    await new SharedVolumeTransfer(dir).verify();
    expect(existsSync(dir)).toBe(false);
  });
});

describe('SharedVolumeTransfer.checkout', () => {
  const job = (id: string, fields: Partial<Job> = {}) => ({ id, task: 'the task', inputs: {}, forked_from: null, ...fields }) as Job;

  it("makes the directory of a job that starts empty (scheduling leaves that to the worker), and keeps one that exists", async () => {
    const dir = join(root, 'data');
    const transfer = new SharedVolumeTransfer(dir);
    const paths = await transfer.checkout(job('job_a'));
    expect(paths).toEqual(jobPaths(dir, 'job_a'));
    expect(readFileSync(paths.input, 'utf8')).toBe('the task');
    expect(statSync(paths.workspace).isDirectory()).toBe(true);
    writeFileSync(join(paths.workspace, 'kept'), 'x');
    await transfer.checkout(job('job_a'));
    expect(readFileSync(join(paths.workspace, 'kept'), 'utf8')).toBe('x');
  });

  it('refuses, with a not_found error, a job whose uploaded or forked files are missing', async () => {
    const transfer = new SharedVolumeTransfer(join(root, 'data'));
    for (const missing of [job('job_b', { inputs: { upload: { entries: 1, bytes: 1 } } }), job('job_c', { forked_from: 'job_a' })]) {
      const error = await transfer.checkout(missing).catch((thrown: unknown) => thrown);
      expect(error).toBeInstanceOf(WorkcellError);
      expect((error as WorkcellError).code).toBe('not_found');
      expect((error as Error).message).toMatch(/no input\.txt.*WORKCELL_DATA_DIR/);
    }
    expect(existsSync(join(root, 'data', 'jobs', 'job_b'))).toBe(false);
  });
});
