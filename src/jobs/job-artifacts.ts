// A job's output.zip: its workspace (artifacts.ts zipWorkspace) and, for a job that started from inputs (a git clone or
// uploaded files), changes.patch at the archive's root: the unified diff of what the job changed (changes/). Made when
// the job ends (JobService), and made again when a person changes a finished job's workspace through the file routes,
// so the zip is always the workspace as it is: the rebuild runs in the background, one at a time per job (another
// change meanwhile asks for one more), into a file of its own renamed over output.zip only if the job is still
// finished then (a job continued meanwhile zips itself when it ends again); GET artifacts.zip waits for a rebuild in
// progress (artifactsSettled), so a client that changes a file and then downloads gets its change.
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { finished } from 'node:stream/promises';
import type { Logger } from 'pino';
import type { Config } from '../config.ts';
import { errorMessage } from '../errors.ts';
import { WorkspaceRawFiles } from '../sandboxd/files/raw-files.ts';
import { zipWorkspace, type ZipWorkspaceResult } from './artifacts.ts';
import { workspaceChanges, writeWorkspacePatch } from './changes/workspace-changes.ts';
import type { JobPaths } from './job-paths.ts';
import type { JobService } from './job-service.ts';
import { finishedStatuses } from '../store/types.ts';
import { readWorkspaceBaseline } from './workspace-baseline.ts';

/** Names changes.patch may take in the zip (the first the workspace does not use itself). */
export const patchNames = ['changes.patch', 'changes.workcell.patch'];

/**
 * Writes `zipPath` (default output.zip) from the job's workspace, with changes.patch when the job started from inputs.
 * A patch that cannot be made is logged and left out: the zip matters more.
 */
export async function writeJobArtifacts(paths: JobPaths, options: { config: Pick<Config, 'sandboxUser'>; logger: Pick<Logger, 'warn' | 'error'>; zipPath?: string; signal?: AbortSignal }): Promise<ZipWorkspaceResult> {
  const patch = await writePatchFile(paths, options);
  try {
    return await zipWorkspace(paths.workspace, options.zipPath ?? paths.outputZip, {
      ...(options.signal === undefined ? {} : { signal: options.signal }),
      ...(patch === undefined ? {} : { extraFiles: [{ names: patchNames, path: patch }] }),
    });
  } finally {
    if (patch !== undefined) await rm(patch, { force: true });
  }
}

/** changes.patch in a temporary file of the job's directory; undefined when there is none to make. */
async function writePatchFile(paths: JobPaths, options: { config: Pick<Config, 'sandboxUser'>; logger: Pick<Logger, 'warn' | 'error'>; signal?: AbortSignal }): Promise<string | undefined> {
  const file = `${paths.root}/.changes-${randomBytes(6).toString('hex')}.patch`;
  try {
    const baseline = await readWorkspaceBaseline(paths.root);
    // A job that started empty: its patch would be the whole workspace again.
    if (baseline === undefined || (baseline.entries.length === 0 && baseline.git === undefined)) return undefined;
    const files = new WorkspaceRawFiles(paths.workspace);
    const source = { get: files.get.bind(files) };
    const changes = await workspaceChanges(source, baseline, options.signal);
    const output = createWriteStream(file, { flags: 'wx', mode: 0o600 });
    try {
      await writeWorkspacePatch({ jobRoot: paths.root, baseline, changes, source, output, config: options.config, logger: options.logger, ...(options.signal === undefined ? {} : { signal: options.signal }) });
    } finally {
      output.end();
      await finished(output);
    }
    return file;
  } catch (error) {
    options.logger.error({ err: error }, `changes.patch could not be made (the zip has none): ${errorMessage(error)}`);
    await rm(file, { force: true });
    return undefined;
  }
}

const refreshes = new Map<string, { running: Promise<void>; again: boolean }>();

/** Rebuilds a finished job's zip after its workspace changed (in the background, one at a time per job). */
export function scheduleArtifactsRefresh(jobs: JobService, jobId: string, logger: Pick<Logger, 'warn' | 'error'>): void {
  const pending = refreshes.get(jobId);
  if (pending !== undefined) {
    pending.again = true;
    return;
  }
  const state = { running: Promise.resolve(), again: true };
  state.running = (async () => {
    while (state.again) {
      state.again = false;
      const paths = jobs.paths(jobId);
      const temporary = `${paths.outputZip}.refresh-${randomBytes(4).toString('hex')}`;
      try {
        if (!(await isFinished(jobs, jobId))) return;
        await writeJobArtifacts(paths, { config: jobs.config, logger, zipPath: temporary });
        if (await isFinished(jobs, jobId)) await rename(temporary, paths.outputZip);
      } catch (error) {
        logger.error({ err: error, jobId }, `rebuilding the zip after a change to the workspace failed: ${errorMessage(error)}`);
      } finally {
        await rm(temporary, { force: true });
      }
    }
  })().finally(() => refreshes.delete(jobId));
  refreshes.set(jobId, state);
}

async function isFinished(jobs: JobService, jobId: string): Promise<boolean> {
  const status = (await jobs.store.get(jobId))?.status;
  return status !== undefined && finishedStatuses.includes(status);
}

/** Resolves once no rebuild of the job's zip is running (at once when none is). */
export async function artifactsSettled(jobId: string): Promise<void> {
  for (let pending = refreshes.get(jobId); pending !== undefined; pending = refreshes.get(jobId)) await pending.running;
}
