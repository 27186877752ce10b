// The layout of a job's directory (DESIGN.md §3): jobs/<id>/{input.txt, workspace/, logs/, context.db,
// audit.jsonl, output.zip}, and workspace.ext4 while a job with a disk limit runs. Only this module knows the names.
import { chmod, mkdir, writeFile } from 'node:fs/promises';
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
 * Creates the job's directory with its task. jobs/ and the job root are traversable but not listable (0711): the
 * unprivileged sandbox user must reach workspace/ (which the runtime hands over to it) and nothing else.
 */
export async function createJobDir(paths: JobPaths, task: string): Promise<void> {
  await mkdir(dirname(paths.root), { recursive: true, mode: 0o711 });
  await mkdir(paths.root, { mode: 0o711 });
  await chmod(paths.root, 0o711); // mkdir's mode is filtered by the umask
  await mkdir(paths.logs, { mode: 0o700 });
  await mkdir(paths.workspace, { mode: 0o700 });
  await writeFile(paths.input, task, { mode: 0o600 });
}
