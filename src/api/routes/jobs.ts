// POST /schedule, GET /status/:id, GET /jobs, GET /jobs/:id, POST /jobs/:id/cancel, POST /jobs/:id/messages.
import type { FastifyRequest } from 'fastify';
import { costUsd, effectiveContextWindow, modelInfo, splitModelSpec } from '../../agent/context/model-info.ts';
import { invalidRequest, notFound } from '../../errors.ts';
import type { Job } from '../../jobs/job-store.ts';
import { mergeAllowLists } from '../../runtimes/network/allow-list.ts';
import { isJobId } from '../../util/ids.ts';
import type { ApiContext, ZodApp } from '../server.ts';
import { cancelResponse, jobDetail, jobIdParams, listQuery, listResponse, messageRequest, messageResponse, problem, scheduleRequest, scheduleResponse, jobStatusResponse } from '../schemas.ts';

const problems = { 400: problem, 404: problem, 409: problem, 413: problem, 415: problem };

/** Unknown and malformed ids are both "no such job". */
export function requireJob(context: ApiContext, request: FastifyRequest<{ Params: { id: string } }>): Job {
  const { id } = request.params;
  if (!isJobId(id)) throw notFound(`no job with id ${JSON.stringify(id)}: job ids look like job_01h...`);
  return context.jobs.get(id, request.owner);
}

export function baseUrl(context: ApiContext, request: FastifyRequest): string {
  return (context.config.publicUrl ?? `${request.protocol}://${request.host}`).replace(/\/$/, '');
}

function statusView(job: Job, base: string) {
  return {
    job_id: job.id,
    status: job.status,
    created_at: job.created_at,
    ...(job.started_at ? { started_at: job.started_at } : {}),
    ...(job.finished_at ? { finished_at: job.finished_at } : {}),
    ...(job.error ? { error: job.error } : {}),
    ...(job.status === 'complete' ? { download_url: `${base}/jobs/${job.id}/artifacts.zip` } : {}),
  };
}

/** The status with the runtime and isolation the job actually got (null until its sandbox has started). */
function withRuntime(job: Job, base: string) {
  return { ...statusView(job, base), runtime: job.runtime_used ?? null, isolation: job.isolation ?? null };
}

export function detailView(context: ApiContext, job: Job, base: string) {
  const ended = job.status === 'complete' || job.status === 'error' || job.status === 'cancelled';
  return {
    ...statusView(job, base),
    task: job.task,
    model: job.model_used ?? job.model ?? context.config.model ?? null,
    runtime: job.runtime,
    runtime_used: job.runtime_used,
    isolation: job.isolation,
    limits: job.limits,
    metadata: job.metadata,
    summary: job.summary,
    usage: { steps: job.steps, input_tokens: job.input_tokens, output_tokens: job.output_tokens, ...(job.resource_usage ?? {}), ...modelUsage(context, job) },
    attempts: job.attempts,
    ...(ended && context.jobs.hasArtifacts(job.id) ? { artifacts_url: `${base}/jobs/${job.id}/artifacts.zip` } : {}),
    events_url: `${base}/jobs/${job.id}/events`,
    network: { allow: mergeAllowLists(context.config.networkAllow, job.network.allow) },
    audit_url: `${base}/jobs/${job.id}/audit`,
  };
}

/** Cost at the model's list price (null when unknown) and the context window the job works with. */
function modelUsage(context: ApiContext, job: Job): { cost_usd: number | null; context_window: number | null } {
  const spec = splitModelSpec(job.model_used ?? job.model ?? context.config.model);
  if (spec === undefined) return { cost_usd: null, context_window: job.context_window ?? context.config.contextWindow ?? null };
  const info = modelInfo(spec.provider, spec.modelId);
  return { cost_usd: costUsd(info, job.input_tokens, job.output_tokens), context_window: effectiveContextWindow(info, job.context_window, context.config.contextWindow) };
}

export function registerJobRoutes(app: ZodApp, context: ApiContext): void {
  // The task may arrive as text/plain; turn it into the JSON shape before validation so one schema covers both.
  app.post(
    '/schedule',
    {
      schema: {
        summary: 'Schedule a job',
        description: 'Send the task as text/plain, or as JSON with options. Answers 202 with the job id; Idempotency-Key is honoured.',
        consumes: ['application/json', 'text/plain'],
        body: scheduleRequest,
        response: { 200: scheduleResponse, 202: scheduleResponse, ...problems },
      },
      preValidation: async (request) => {
        if (typeof request.body === 'string') request.body = { task: request.body };
        else if (request.body === undefined || request.body === null) throw invalidRequest('the body is empty: send the task as text/plain or JSON {"task": "..."}');
      },
    },
    async (request, reply) => {
      const key = request.headers['idempotency-key'];
      if (Array.isArray(key) || (key !== undefined && (key.length === 0 || key.length > 200))) throw invalidRequest('Idempotency-Key must be one value of 1 to 200 characters');
      const { job, created } = await context.jobs.schedule(request.body, key, request.owner);
      return reply
        .code(created ? 202 : 200)
        .header('location', `/jobs/${job.id}`)
        .send({ job_id: job.id });
    },
  );

  app.get('/status/:id', { schema: { summary: 'Job status', params: jobIdParams, response: { 200: jobStatusResponse, 404: problem } } }, async (request) =>
    withRuntime(requireJob(context, request), baseUrl(context, request)),
  );

  app.get('/jobs', { schema: { summary: 'List jobs, newest first', querystring: listQuery, response: { 200: listResponse, 400: problem } } }, async (request) => {
    const { status, limit, cursor } = request.query;
    if (cursor !== undefined && !isJobId(cursor)) throw invalidRequest('cursor must be the next_cursor of a previous page');
    const { jobs, nextCursor } = context.jobs.store.list({ status, limit, cursor, owner: request.owner });
    const base = baseUrl(context, request);
    return { jobs: jobs.map((job) => detailView(context, job, base)), next_cursor: nextCursor };
  });

  app.get('/jobs/:id', { schema: { summary: 'Job detail', params: jobIdParams, response: { 200: jobDetail, 404: problem } } }, async (request) =>
    detailView(context, requireJob(context, request), baseUrl(context, request)),
  );

  app.post(
    '/jobs/:id/cancel',
    { schema: { summary: 'Cancel a job', description: 'Stops the agent and the sandbox; the workspace so far is still zipped.', params: jobIdParams, response: { 202: cancelResponse, 404: problem, 409: problem } } },
    async (request, reply) => {
      const job = requireJob(context, request);
      const after = await context.jobs.cancel(job.id, request.owner);
      return reply.code(202).send({ job_id: after.id, status: after.status });
    },
  );

  app.post(
    '/jobs/:id/messages',
    {
      schema: {
        summary: 'Send the agent a follow-up instruction',
        description:
          'JSON {text} or the text alone as text/plain. Recorded as a user-message event; the agent reads it, verbatim, at its next step (a pending job, when it starts). ' +
          '409 once the job has ended.',
        consumes: ['application/json', 'text/plain'],
        params: jobIdParams,
        body: messageRequest,
        response: { 202: messageResponse, ...problems },
      },
      preValidation: async (request) => {
        if (typeof request.body === 'string') request.body = { text: request.body };
        else if (request.body === undefined || request.body === null) throw invalidRequest('the body is empty: send the instruction as text/plain or JSON {"text": "..."}');
      },
    },
    async (request, reply) => {
      const job = requireJob(context, request);
      const { seq } = await context.jobs.postMessage(job.id, request.body.text, request.owner);
      return reply.code(202).send({ job_id: job.id, event_id: seq });
    },
  );
}
