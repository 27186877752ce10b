// Deleting finished jobs: DELETE /jobs/:id, and WORKCELL_RETENTION_DAYS, which deletes jobs that ended that many
// days ago (checked at start-up and every hour). Only finished jobs: the row goes first, in one statement that
// requires a finished status (so a job reopened or claimed meanwhile stays), then its directory: workspace, context
// store, logs, audit log, zip. A workspace still mounted (a disk a crash left) is unmounted before anything is
// removed, and nothing is followed through a symlink the sandbox planted (fs.rm removes links, not their targets).
import { chmod, lstat, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { errorMessage } from '../errors.ts';
import { findExecutable, runCommand } from '../runtimes/probe.ts';
import type { JobPaths } from './job-paths.ts';
import type { Job } from '../store/types.ts';
import { mountType } from './workspace-disk.ts';

/** Removes a job's directory (its row must already be gone). */
export async function removeJobFiles(paths: JobPaths): Promise<void> {
  for (const mounted of [paths.workspace, `${paths.workspaceImage}.mnt`]) {
    if ((await mountType(mounted)) === undefined) continue;
    const umount = findExecutable('umount');
    if (umount === undefined) throw new Error(`${mounted} is mounted and umount is not on PATH`);
    const result = await runCommand(umount, [mounted], { timeoutMs: 60_000 });
    if (!result.ok) throw new Error(`umount ${mounted} failed: ${result.stderr.trim()}`);
  }
  try {
    await rm(paths.root, { recursive: true, force: true });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code !== 'EACCES' && code !== 'EPERM') throw error;
    // A server that is not root: directories the agent made read-only (chmod 0555) are its own uid's; open them up.
    await makeWritable(paths.root);
    await rm(paths.root, { recursive: true, force: true });
  }
}

async function makeWritable(directory: string): Promise<void> {
  await chmod(directory, 0o700).catch(() => undefined);
  const names = await readdir(directory).catch(() => [] as string[]);
  for (const name of names) {
    const path = join(directory, name);
    const stats = await lstat(path).catch(() => undefined);
    if (stats?.isDirectory() === true) await makeWritable(path);
  }
}

export interface RetentionOptions {
  retentionDays: number;
  /** Finished jobs that ended before the cutoff, oldest first. */
  finishedBefore: (cutoff: Date, limit: number) => Promise<Job[]>;
  /** Deletes one finished job (row, then files); false when it was no longer finished. */
  deleteJob: (job: Job) => Promise<boolean>;
  logger: Pick<Logger, 'info' | 'warn' | 'error'>;
  intervalMs?: number;
  now?: () => number;
}

/** Deletes finished jobs older than WORKCELL_RETENTION_DAYS, at start-up and every hour. */
export class RetentionSweeper {
  readonly #options: RetentionOptions;
  #timer: NodeJS.Timeout | undefined;
  #sweeping: Promise<number> | undefined;

  constructor(options: RetentionOptions) {
    this.#options = options;
  }

  start(): void {
    if (this.#timer !== undefined) return;
    this.#timer = setInterval(() => void this.sweep(), this.#options.intervalMs ?? 3_600_000);
    this.#timer.unref();
    void this.sweep();
  }

  async stop(): Promise<void> {
    clearInterval(this.#timer);
    this.#timer = undefined;
    await this.#sweeping;
  }

  /** One pass; resolves with the number of jobs deleted. */
  sweep(): Promise<number> {
    this.#sweeping ??= this.#sweep().finally(() => {
      this.#sweeping = undefined;
    });
    return this.#sweeping;
  }

  async #sweep(): Promise<number> {
    const { retentionDays, finishedBefore, deleteJob, logger, now = Date.now } = this.#options;
    const cutoff = new Date(now() - retentionDays * 86_400_000);
    let deleted = 0;
    for (;;) {
      const batch = await finishedBefore(cutoff, 100);
      let progress = false;
      for (const job of batch) {
        try {
          if (await deleteJob(job)) {
            deleted += 1;
            progress = true;
          }
        } catch (error) {
          logger.error({ jobId: job.id, err: error }, `deleting an expired job failed: ${errorMessage(error)}`);
        }
      }
      if (batch.length < 100 || !progress) break;
    }
    if (deleted > 0) logger.info({ deleted, retentionDays }, 'expired jobs deleted');
    return deleted;
  }
}
