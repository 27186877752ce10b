// GET /jobs/:id/audit: the job's audit log (jobs/<id>/audit.jsonl, written by the worker: audit-log.ts) as JSON
// lines, streamed; `?after=N` skips the first N lines, so a client that has read N lines asks for the rest.
import { z } from 'zod';
import { readAuditLog } from '../../jobs/audit-log.ts';
import type { ApiContext, ZodApp } from '../server.ts';
import { problemResponses, response } from '../openapi.ts';
import { auditQuery, jobIdParams } from '../schemas.ts';
import { requireJob } from './jobs.ts';

const auditBody = z.unknown().describe('One JSON object per line');

const description = [
  'One JSON object per line (application/x-ndjson), oldest first; an empty body when there is nothing yet. Every entry has',
  '`time`, `step` (the model turn it belongs to; 0 before the first) and `type`:',
  '`file`: `op` (read, write, edit, list, delete, search), `path` (as the agent gave it), `ok`, `error` (the code, when it failed);',
  '`network`: a connection attempt through the egress proxy, written when it ends: `method` (CONNECT for a tunnel, else the HTTP',
  'method), `url` (plain http), `host`, `port`, `ip` (the address connected to or refused), `allowed`, `reason` (why it was refused),',
  '`error` (why an allowed connection failed), `status`, `bytes_in` (from the destination), `bytes_out`, `duration_ms`.',
  "Shell commands are in the job's events. `?after=N` returns the lines after the first N.",
].join(' ');

export function registerAuditRoutes(app: ZodApp, context: ApiContext): void {
  app.get(
    '/jobs/:id/audit',
    {
      schema: {
        operationId: 'getAudit',
        tags: ['results'],
        summary: "The job's audit log: file operations and network connections (JSON lines)",
        description,
        params: jobIdParams,
        querystring: auditQuery,
        response: {
          200: response('The entries after the first `after` lines, oldest first (empty when there are none)', auditBody, { mediaType: 'application/x-ndjson' }),
          ...problemResponses({ 400: 'after is not a non-negative integer', 404: "No job with this id (or not one of this key's)" }),
        },
      },
    },
    async (request, reply) => {
      const job = await requireJob(context, request);
      const stream = await readAuditLog(context.jobs.paths(job.id).audit, request.query.after ?? 0);
      return reply.header('content-type', 'application/x-ndjson; charset=utf-8').header('cache-control', 'no-store').send(stream);
    },
  );
}
