// The layout of a job's directory (DESIGN.md §3): jobs/<id>/{input.txt, workspace/, logs/, context.db,
// output.zip}. Only this module knows the names.
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export interface JobPaths {
  root: string;
  input: string;
  workspace: string;
  logs: string;
  contextDb: string;
  outputZip: string;
}

export function jobPaths(dataDir: string, jobId: string): JobPaths {
  const root = join(dataDir, 'jobs', jobId);
  return {
    root,
    input: join(root, 'input.txt'),
    workspace: join(root, 'workspace'),
    logs: join(root, 'logs'),
    contextDb: join(root, 'context.db'),
    outputZip: join(root, 'output.zip'),
  };
}

/** Creates the job's directory with its task. The job root is traversable (the sandbox user must reach workspace/). */
export async function createJobDir(paths: JobPaths, task: string): Promise<void> {
  await mkdir(paths.logs, { recursive: true, mode: 0o700 });
  await mkdir(paths.workspace, { recursive: true, mode: 0o700 });
  await chmod(paths.root, 0o711);
  await writeFile(paths.input, task, { mode: 0o600 });
}
