// The layout of a job's directory (DESIGN.md §3): jobs/<id>/{input.txt, workspace/, logs/, context.db,
// audit.jsonl, output.zip}, and workspace.ext4 while a job with a disk limit runs. Only this module knows the names.
import { chmodSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

export interface JobPaths {
  root: string;
  input: string;
  workspace: string;
  /** The workspace's disk image while the job runs with a disk limit (jobs/workspace-disk.ts). */
  workspaceImage: string;
  logs: string;
  contextDb: string;
  outputZip: string;
  /** audit.jsonl: file operations and network connections (audit-log.ts). */
  audit: string;
}

export function jobPaths(dataDir: string, jobId: string): JobPaths {
  const root = join(dataDir, 'jobs', jobId);
  return {
    root,
    input: join(root, 'input.txt'),
    workspace: join(root, 'workspace'),
    workspaceImage: join(root, 'workspace.ext4'),
    logs: join(root, 'logs'),
    contextDb: join(root, 'context.db'),
    outputZip: join(root, 'output.zip'),
    audit: join(root, 'audit.jsonl'),
  };
}

/**
 * Makes the job's directory with its task, unless it is there: on the first need of it (a worker's claim, an upload,
 * the first event), not at schedule time, so that scheduling writes nothing but the job's row. jobs/ and the job root
 * are traversable but not listable (0711): the unprivileged sandbox user must reach workspace/ (which the runtime
 * hands over to it) and nothing else. Idempotent, and safe to race with another process doing the same; input.txt is
 * written last, so that a directory with it is whole. Synchronous: a few system calls, once per job.
 */
export function ensureJobDir(paths: JobPaths, task: string): void {
  if (existsSync(paths.input)) return;
  mkdirSync(dirname(paths.root), { recursive: true, mode: 0o711 });
  mkdirSync(paths.root, { recursive: true, mode: 0o711 });
  chmodSync(paths.root, 0o711); // mkdir's mode is filtered by the umask
  mkdirSync(paths.logs, { recursive: true, mode: 0o700 });
  mkdirSync(paths.workspace, { recursive: true, mode: 0o700 });
  try {
    writeFileSync(paths.input, task, { mode: 0o600, flag: 'wx' });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  }
}
