// Job files on one file system every process mounts at its data dir (a host's own disk, a volume shared by the
// containers of one host, a cluster file system with POSIX locks: each job's context.db is SQLite in WAL mode). Nothing
// is copied: the worker runs the job in place, and checkin has nothing to send.
//
// What can go wrong is a process whose data dir is not the shared one (a volume left out of one worker's spec): it
// would find no job files and fail every job it claims. At start-up, processes on one database prove they share
// the data dir: each drops a marker file named by a random token in it, then offers its token to the database; the
// first offer is kept, and every process must find the marker of the kept token. The first process wrote its
// marker before offering it, so no order of start-ups makes a shared data dir fail the check.
import { existsSync } from 'node:fs';
import { access, mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { WorkcellError } from '../../errors.ts';
import { ensureJobDir, jobPaths, type JobPaths } from '../../jobs/job-paths.ts';
import type { Job } from '../../store/types.ts';
import type { WorkspaceTransfer } from '../types.ts';

/** The database's choice among the offered tokens: the first offer, kept (KeyStore.serverSecret does that). */
export type FirstOffer = (token: string) => Promise<string>;

const markerPrefix = '.shared-';

export class SharedVolumeTransfer implements WorkspaceTransfer {
  readonly #dataDir: string;
  readonly #firstOffer: FirstOffer | undefined;

  /** `firstOffer`: the shared database's, when several processes share the data dir (none for one process). */
  constructor(dataDir: string, firstOffer?: FirstOffer) {
    this.#dataDir = dataDir;
    this.#firstOffer = firstOffer;
  }

  get description(): string {
    return `shared volume at ${this.#dataDir}`;
  }

  async verify(): Promise<void> {
    if (this.#firstOffer === undefined) return;
    await mkdir(this.#dataDir, { recursive: true });
    const token = randomBytes(16).toString('hex');
    const marker = (of: string) => join(this.#dataDir, `${markerPrefix}${of}`);
    await writeFile(marker(token), 'This file shows that the processes of one workcell database share this data dir. Keep it.\n', { mode: 0o644 });
    const kept = await this.#firstOffer(token);
    if (kept === token) return;
    await rm(marker(token), { force: true });
    if (!/^[0-9a-f]{32}$/.test(kept)) throw new Error(`the database's data-dir token is not one this version writes (${JSON.stringify(kept.slice(0, 40))})`);
    try {
      await access(marker(kept));
    } catch {
      throw new Error(
        `the data dir ${this.#dataDir} is not the one the other processes of this database use: it lacks their marker ${markerPrefix}${kept}. ` +
          'Every API replica and worker must mount the same shared volume at WORKCELL_DATA_DIR. If this is that volume, emptied or restored on purpose, ' +
          `create the marker: touch ${marker(kept)}`,
      );
    }
  }

  async checkout(job: Job): Promise<JobPaths> {
    const paths = jobPaths(this.#dataDir, job.id);
    // Uploaded files and a fork's copy were put in its directory when it was scheduled; any other job's is made now.
    const startsFromFiles = job.inputs.upload !== undefined || job.forked_from !== null;
    if (startsFromFiles && !existsSync(paths.input)) {
      throw new WorkcellError('not_found', `the files this job starts from are not in the data dir (${paths.root} has no input.txt): were they deleted, or is this worker's WORKCELL_DATA_DIR not the shared one?`);
    }
    ensureJobDir(paths, job.task);
    return paths;
  }

  async checkin(): Promise<void> {
    // The worker wrote them in place.
  }
}
