// GET /jobs/:id/artifacts.zip: the zipped workspace, streamed, with single-range `Range` support.
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { conflict, notFound, WorkcellError } from '../../errors.ts';
import { artifactsSettled } from '../../jobs/job-artifacts.ts';
import { finishedStatuses } from '../../store/types.ts';
import type { ApiContext, ZodApp } from '../server.ts';
import { z } from 'zod';
import { problemResponses, response } from '../openapi.ts';
import { jobIdParams } from '../schemas.ts';
import { requireJob } from './jobs.ts';

/** Parses one `bytes=a-b` range against a size; undefined when absent or not a single byte range. */
export function parseRange(header: string | undefined, size: number): { start: number; end: number } | 'unsatisfiable' | undefined {
  if (!header) return undefined;
  const match = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!match || (match[1] === '' && match[2] === '')) return undefined;
  let start: number;
  let end: number;
  if (match[1] === '') {
    const suffix = Number(match[2]);
    if (suffix === 0) return 'unsatisfiable';
    start = Math.max(0, size - suffix);
    end = size - 1;
  } else {
    start = Number(match[1]);
    end = match[2] === '' ? size - 1 : Math.min(Number(match[2]), size - 1);
  }
  if (start >= size || start > end) return 'unsatisfiable';
  return { start, end };
}

const zipBody = z.unknown().describe('The zip: the workspace as the job left it (and changes.patch, for a job that started from inputs)');

export function registerArtifactRoutes(app: ZodApp, context: ApiContext): void {
  app.get(
    '/jobs/:id/artifacts.zip',
    {
      schema: {
        operationId: 'downloadArtifacts',
        tags: ['results'],
        summary: 'Download the zipped workspace',
        description: 'The workspace as the job left it, zipped when it ended (rebuilt when the file routes change it after). A single `Range` gives 206 with that part.',
        params: jobIdParams,
        headerParams: z.object({ range: z.string().optional().describe('One byte range, bytes=<start>-<end> (either may be left out): to resume a download') }),
        response: {
          200: response('The zip', zipBody, { mediaType: 'application/zip', headers: { 'content-length': { type: 'integer', description: 'Its size in bytes' } } }),
          206: response('The part of the zip that Range asked for', zipBody, { mediaType: 'application/zip', headers: { 'content-range': { type: 'string', description: 'bytes <start>-<end>/<size>' } } }),
          ...problemResponses({
            404: "No job with this id (or not one of this key's), or zipping its workspace failed",
            409: 'The job has not ended: its workspace is zipped when it ends',
            416: 'The Range is outside the file (Content-Range says its size)',
          }, { 416: { 'content-range': { type: 'string', description: 'bytes */<size>' } } }),
        },
      },
    },
    async (request, reply) => {
      const job = await requireJob(context, request);
      if (!finishedStatuses.includes(job.status)) throw conflict(`job ${job.id} is ${job.status}: the workspace is zipped when the job ends`);
      // A change to the finished workspace through the file routes rebuilds the zip: serve the rebuilt one.
      await artifactsSettled(job.id);
      const file = context.jobs.paths(job.id).outputZip;
      const info = await stat(file).catch(() => undefined);
      if (!info) throw notFound(`job ${job.id} has no artifacts (zipping its workspace failed: see the server log)`);
      const range = parseRange(request.headers.range, info.size);
      reply.header('accept-ranges', 'bytes').header('content-type', 'application/zip').header('content-disposition', `attachment; filename="${job.id}.zip"`);
      if (range === 'unsatisfiable') {
        reply.header('content-range', `bytes */${info.size}`);
        throw new WorkcellError('range_not_satisfiable', `range not satisfiable: the file has ${info.size} bytes`);
      }
      if (range) {
        return reply
          .code(206)
          .header('content-range', `bytes ${range.start}-${range.end}/${info.size}`)
          .header('content-length', range.end - range.start + 1)
          .send(createReadStream(file, { start: range.start, end: range.end }));
      }
      return reply.header('content-length', info.size).send(createReadStream(file));
    },
  );
}
