// The workspace transfer seam: how a job's files (its workspace, context store, logs, audit log and zip) reach the
// worker that runs it and come back to where every process reads them. One implementation per folder; the app
// picks one (index.ts). The API reads a job's files through the same paths (jobs/job-paths.ts).
import type { JobPaths } from '../jobs/job-paths.ts';
import type { Job } from '../store/types.ts';

export interface WorkspaceTransfer {
  /** What this transfer is, for logs and `workcell doctor`. */
  readonly description: string;
  /**
   * At start-up: that this process sees the job files the other processes of its store write. Throws an Error that
   * says what is wrong and how to fix it (the process must not start).
   */
  verify(): Promise<void>;
  /**
   * Before a claimed job runs: its files at paths on this host (its directory made if scheduling left that to the
   * worker). Throws a WorkcellError when files it must start from cannot be had.
   */
  checkout(job: Job): Promise<JobPaths>;
  /** After the job's run ended or was handed back: its files back where every process reads them. */
  checkin(jobId: string, paths: JobPaths): Promise<void>;
}
