// GET /jobs/:id/diff: what the job changed since its workspace's start (its baseline, jobs/workspace-baseline.ts): the
// files added, changed and deleted (JSON, the default), or the unified diff (`Accept: text/x-diff` or `?format=patch`),
// made by git on the host from snapshots (jobs/changes/). While the job runs, its sandbox's view of the workspace is
// compared (what the agent has done so far: it may change again before the job ends); once it has ended, the final
// workspace. At most two diffs are computed at once per server: each reads the whole workspace.
import { randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { finished } from 'node:stream/promises';
import { z } from 'zod';
import { WorkcellError } from '../../errors.ts';
import { workspaceChanges, writeWorkspacePatch } from '../../jobs/changes/workspace-changes.ts';
import type { WorkspaceSource } from '../../jobs/changes/workspace-tree.ts';
import type { Job } from '../../store/types.ts';
import { readWorkspaceBaseline } from '../../jobs/workspace-baseline.ts';
import { getSandboxFile } from '../../runtimes/sandboxd-files.ts';
import { WorkspaceRawFiles } from '../../sandboxd/files/raw-files.ts';
import { problemResponses } from '../openapi.ts';
import { jobIdParams } from '../schemas.ts';
import type { ApiContext, ZodApp } from '../server.ts';
import { requireJob } from './jobs.ts';

const diffQuery = z.object({ format: z.enum(['json', 'patch']).optional().describe('json (the default) or patch; `Accept: text/x-diff` asks for the patch too') });
const fileChange = z.object({
  path: z.string(),
  change: z.enum(['added', 'changed', 'deleted']),
  type: z.enum(['file', 'symlink']),
  size: z.number().int().optional().describe('Bytes now (absent when deleted)'),
  previous_size: z.number().int().optional().describe('Bytes at the start (absent when added)'),
});
export const diffResponse = z.object({
  job_id: z.string(),
  status: z.string().describe('The job\'s status when the diff was made: while it runs, the workspace may still change'),
  base: z.object({
    recorded_at: z.string().describe("When the workspace's start was recorded (the job's first start)"),
    files: z.number().int().describe('Files and symlinks the workspace started with'),
    git: z.object({ url: z.string(), ref: z.string().optional(), commit: z.string() }).optional().describe('The git input the workspace started from'),
  }),
  files: z.array(fileChange).describe('Sorted by path; .git directories, and files .gitignore ignores that were not there at the start, are left out'),
  summary: z.object({ added: z.number().int(), changed: z.number().int(), deleted: z.number().int() }),
  skipped: z.array(z.object({ path: z.string(), reason: z.string() })).describe('What could not be compared (FIFOs, sockets, devices), the first 100'),
  truncated: z.boolean().describe('The workspace was larger than a diff walks (200000 entries): changes may be missing'),
  patch_url: z.string().describe('The same diff as a patch'),
}).meta({ id: 'Diff', description: 'What the job changed since its workspace\'s start' });
const patchBody = z.unknown().describe('text/x-diff: a unified diff as git writes it, binary files as git binary patches (`git apply` takes it)');

/** How many diffs may run at once; the rest wait their turn. */
const maxConcurrentDiffs = 2;

function wantsPatch(format: 'json' | 'patch' | undefined, accept: string | undefined): boolean {
  if (format !== undefined) return format === 'patch';
  return accept !== undefined && /(^|,)\s*text\/(x-diff|x-patch)\b/i.test(accept);
}

export function registerDiffRoutes(app: ZodApp, context: ApiContext): void {
  let running = 0;
  const waiting: Array<() => void> = [];
  const turn = async (): Promise<() => void> => {
    if (running >= maxConcurrentDiffs) await new Promise<void>((resolve) => waiting.push(resolve));
    running++;
    return () => {
      running--;
      waiting.shift()?.();
    };
  };

  function sourceFor(job: Job): WorkspaceSource {
    if (job.status === 'running') {
      const channel = context.jobs.sandboxChannel(job);
      if (channel === undefined) throw new WorkcellError('conflict', `job ${job.id} is running but its sandbox is not up (starting or stopping): try again in a moment`);
      return { get: (path, options) => getSandboxFile(channel, path, options) };
    }
    const files = new WorkspaceRawFiles(context.jobs.paths(job.id).workspace);
    return { get: (path, options) => files.get(path, options) };
  }

  app.get(
    '/jobs/:id/diff',
    {
      schema: {
        operationId: 'getDiff',
        tags: ['results'],
        summary: 'What the job changed: the files, or the unified diff',
        description:
          "Compares the job's workspace with what it held when the job first started (uploaded files, a git input's checkout, or nothing). JSON (the default): the files added, changed " +
          '(content, link target, type or executable bit) and deleted. `Accept: text/x-diff` or `?format=patch`: the unified diff as git writes it (renames found, binary files as ' +
          "git binary patches), which `git apply` applies to the starting tree; for a git input it is against the input commit (its blob ids are the repository's: `git apply --3way` works). .git directories are never compared; " +
          ".gitignore is honoured as `git add -A` would (files there at the start are always compared). While the job runs its sandbox's workspace is compared: what the agent did so far. " +
          "The zip of a job that started from inputs has the same patch as changes.patch. 409 before the job has started.",
        params: jobIdParams,
        querystring: diffQuery,
        response: {
          200: {
            description: 'The files added, changed and deleted (JSON), or the unified diff (text/x-diff: `?format=patch` or `Accept: text/x-diff`)',
            content: { 'application/json': { schema: diffResponse }, 'text/x-diff': { schema: patchBody } },
          },
          ...problemResponses({
            400: 'format is not json or patch',
            404: "No job with this id (or not one of this key's), or no record of its workspace's start (a job from before workcell kept one)",
            409: 'The job has not started yet, or it is running and its sandbox is starting or stopping',
          }),
        },
      },
    },
    async (request, reply) => {
      const job = await requireJob(context, request);
      if (job.status === 'pending') throw new WorkcellError('conflict', `job ${job.id} has not started: nothing has changed yet (its workspace's start is recorded when it starts)`);
      const jobRoot = context.jobs.paths(job.id).root;
      const baseline = await readWorkspaceBaseline(jobRoot);
      if (baseline === undefined) throw new WorkcellError('not_found', `job ${job.id} has no record of its workspace's start (it started before workcell kept one, or recording it failed: see the server log), so what it changed is unknown`);
      const source = sourceFor(job);
      const abort = new AbortController();
      request.raw.once('close', () => abort.abort(new Error('the client went away')));
      const done = await turn();
      const patch = wantsPatch(request.query.format, request.headers.accept);
      try {
        const changes = await workspaceChanges(source, baseline, abort.signal);
        if (!patch) {
          const count = (change: string) => changes.files.filter((file) => file.change === change).length;
          return reply.header('cache-control', 'no-store').send({
            job_id: job.id,
            status: job.status,
            base: { recorded_at: baseline.recorded_at, files: baseline.entries.length, ...(baseline.git === undefined ? {} : { git: baseline.git }) },
            files: changes.files,
            summary: { added: count('added'), changed: count('changed'), deleted: count('deleted') },
            skipped: changes.skipped,
            truncated: changes.truncated,
            patch_url: `/jobs/${job.id}/diff?format=patch`,
          });
        }
        // Made whole (in a file of the job's directory) before the first byte goes out: a failure midway is still a
        // clear error, not half a patch.
        const file = join(jobRoot, `.patch-${randomBytes(6).toString('hex')}`);
        const output = createWriteStream(file, { flags: 'wx', mode: 0o600 });
        try {
          try {
            await writeWorkspacePatch({ jobRoot, baseline, changes, source, output, config: context.config, logger: request.log, signal: abort.signal });
          } finally {
            output.end();
            await finished(output);
          }
        } catch (error) {
          await rm(file, { force: true });
          throw error;
        }
        const body = createReadStream(file);
        body.once('close', () => void rm(file, { force: true }));
        return reply
          .header('cache-control', 'no-store')
          .header('content-disposition', `inline; filename="${job.id}.patch"`)
          .type('text/x-diff; charset=utf-8')
          .send(body);
      } finally {
        done();
      }
    },
  );
}
