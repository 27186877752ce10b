// POST /schedule, GET /status/:id, GET /jobs, GET /jobs/:id, POST /jobs/:id/cancel, POST /jobs/:id/messages.
import type { FastifyRequest } from 'fastify';
import { z } from 'zod';
import { costUsd, effectiveContextWindow, modelInfo, splitModelSpec } from '../../agent/context/model-info.ts';
import { invalidRequest, notFound } from '../../errors.ts';
import type { Job } from '../../store/types.ts';
import { mergeAllowLists } from '../../runtimes/network/allow-list.ts';
import { isJobId } from '../../util/ids.ts';
import type { ApiContext, ZodApp } from '../server.ts';
import { discardUpload, holdUpload, receiveScheduleUpload, releaseUpload, takeUpload } from '../schedule-upload.ts';
import { problemResponses, response } from '../openapi.ts';
import { cancelResponse, jobDetail, jobIdParams, listQuery, listResponse, messageRequest, messageResponse, scheduleMultipart, scheduleRequest, scheduleResponse, jobStatusResponse } from '../schemas.ts';

const noSuchJob = 'No job with this id (or not one of this key\'s)';
const location = { location: { type: 'string', description: 'The job: /jobs/<id>' } } as const;

/** Unknown and malformed ids are both "no such job". */
export async function requireJob(context: ApiContext, request: FastifyRequest<{ Params: { id: string } }>): Promise<Job> {
  const { id } = request.params;
  if (!isJobId(id)) throw notFound(`no job with id ${JSON.stringify(id)}: job ids look like job_01h...`);
  return await context.jobs.get(id, request.owner);
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

export async function detailView(context: ApiContext, job: Job, base: string) {
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
    run: job.run,
    runs: await runsView(context, job),
    callback_url: job.callback_url,
    from_job: job.forked_from,
    ...(ended && context.jobs.hasArtifacts(job.id) ? { artifacts_url: `${base}/jobs/${job.id}/artifacts.zip` } : {}),
    events_url: `${base}/jobs/${job.id}/events`,
    network: { allow: mergeAllowLists(context.config.networkAllow, job.network.allow) },
    audit_url: `${base}/jobs/${job.id}/audit`,
    inputs: job.inputs,
  };
}

/** The job's runs; the current one's steps live (the row counts them as the model turns come). */
async function runsView(context: ApiContext, job: Job) {
  return (await context.jobs.store.runs(job.id)).map((run) => ({
    run: run.run,
    status: run.status,
    message: run.message,
    message_event_id: run.message_seq,
    created_at: run.created_at,
    started_at: run.started_at,
    finished_at: run.finished_at,
    error: run.error,
    summary: run.summary,
    steps: run.run === job.run ? job.steps - run.steps_before : run.steps,
  }));
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
        operationId: 'scheduleJob',
        tags: ['jobs'],
        summary: 'Schedule a job',
        description:
          'Send the task as text/plain, or as JSON with options, or as multipart/form-data with files for the workspace: a `task` field, an optional `job` field ' +
          '(this JSON body\'s options, with or without task), any number of `files` parts (each placed at its filename, a relative path, in /workspace) and at most one ' +
          '`archive` part (tar, tar.gz or zip, unpacked into /workspace; symlinks only when they point inside; no hard links, devices or set-id bits; ' +
          'WORKCELL_UPLOAD_MAX_BYTES, _FILES and _FILE_BYTES and the job\'s disk_mb bound it). A refused upload creates no job. ' +
          'Answers 202 with the job id; Idempotency-Key is honoured.',
        consumes: ['application/json', 'text/plain', 'multipart/form-data'],
        body: scheduleRequest,
        headerParams: z.object({
          'idempotency-key': z.string().min(1).max(200).optional().describe('Schedule once per key: a repeat with the same key (from the same API key) answers 200 with the job the first made'),
        }),
        bodyContent: {
          'application/json': scheduleRequest,
          'text/plain': z.string().describe('The task alone, in plain language (the server\'s defaults for everything else)'),
          'multipart/form-data': scheduleMultipart,
        },
        response: {
          200: response('The job this Idempotency-Key made before: nothing new was scheduled', scheduleResponse, { headers: location }),
          202: response('Scheduled: the new job, pending', scheduleResponse, { headers: location }),
          ...problemResponses({
            400: 'The request is invalid (each field\'s problem in `errors`), or an upload was refused (the bad entry named); nothing was created',
            409: 'from_job names a job that has not ended',
            413: 'The body, a field or an upload is larger than the server allows (WORKCELL_MAX_BODY_BYTES, WORKCELL_UPLOAD_*, the job\'s disk_mb)',
            415: 'A Content-Type other than application/json, text/plain or multipart/form-data',
          }),
        },
      },
      preValidation: async (request, reply) => {
        if (request.isMultipart()) {
          const { body, upload } = await receiveScheduleUpload(request, context.config);
          request.body = body as typeof request.body;
          if (upload !== undefined) holdUpload(request, reply, upload);
        } else if (typeof request.body === 'string') request.body = { task: request.body };
        else if (request.body === undefined || request.body === null) throw invalidRequest('the body is empty: send the task as text/plain or JSON {"task": "..."}');
      },
      onSend: async (request, _reply, payload) => {
        await releaseUpload(request);
        return payload;
      },
    },
    async (request, reply) => {
      const upload = takeUpload(request);
      const key = request.headers['idempotency-key'];
      let scheduled;
      try {
        if (Array.isArray(key) || (key !== undefined && (key.length === 0 || key.length > 200))) throw invalidRequest('Idempotency-Key must be one value of 1 to 200 characters');
        scheduled = await context.jobs.schedule(request.body, key, request.owner, upload);
      } finally {
        await discardUpload(upload);
      }
      const { job, created } = scheduled;
      return reply
        .code(created ? 202 : 200)
        .header('location', `/jobs/${job.id}`)
        .send({ job_id: job.id });
    },
  );

  app.get(
    '/status/:id',
    {
      schema: {
        operationId: 'getJobStatus',
        tags: ['jobs'],
        summary: 'Job status',
        description: "The job's status, times, error and the runtime and isolation it got: less than GET /jobs/{id}, for polling.",
        params: jobIdParams,
        response: { 200: response("The job's status", jobStatusResponse), ...problemResponses({ 404: noSuchJob }) },
      },
    },
    async (request) => withRuntime(await requireJob(context, request), baseUrl(context, request)),
  );

  app.get(
    '/jobs',
    {
      schema: {
        operationId: 'listJobs',
        tags: ['jobs'],
        summary: 'List jobs, newest first',
        description: 'A page of jobs (this key\'s own, when the server has keys), each in detail; `next_cursor` gets the next page.',
        querystring: listQuery,
        response: { 200: response('A page of jobs', listResponse), ...problemResponses({ 400: 'A query parameter is invalid' }) },
      },
    },
    async (request) => {
    const { status, limit, cursor } = request.query;
    if (cursor !== undefined && !isJobId(cursor)) throw invalidRequest('cursor must be the next_cursor of a previous page');
    const { jobs, nextCursor } = await context.jobs.store.list({ status, limit, cursor, owner: request.owner });
    const base = baseUrl(context, request);
    return { jobs: await Promise.all(jobs.map((job) => detailView(context, job, base))), next_cursor: nextCursor };
  });

  app.get(
    '/jobs/:id',
    {
      schema: {
        operationId: 'getJob',
        tags: ['jobs'],
        summary: 'Job detail',
        description: 'Everything about the job: task, model, runtime and isolation in effect, limits, usage (tokens, cost), each run, what its workspace started from, and where its events, audit log and zip are.',
        params: jobIdParams,
        response: { 200: response('The job', jobDetail), ...problemResponses({ 404: noSuchJob }) },
      },
    },
    async (request) => detailView(context, await requireJob(context, request), baseUrl(context, request)),
  );

  app.post(
    '/jobs/:id/cancel',
    {
      schema: {
        operationId: 'cancelJob',
        tags: ['jobs'],
        summary: 'Cancel a job',
        description: 'Stops the agent and the sandbox; the workspace so far is still zipped. A running job ends within moments: its final job-status event says so.',
        params: jobIdParams,
        response: { 202: response('Cancelled, or stopping', cancelResponse), ...problemResponses({ 404: noSuchJob, 409: 'The job has already ended' }) },
      },
    },
    async (request, reply) => {
      const job = await requireJob(context, request);
      const after = await context.jobs.cancel(job.id, request.owner);
      return reply.code(202).send({ job_id: after.id, status: after.status });
    },
  );

  app.post(
    '/jobs/:id/messages',
    {
      schema: {
        operationId: 'sendMessage',
        tags: ['jobs'],
        summary: 'Send the agent a follow-up instruction',
        description:
          'JSON {text} or the text alone as text/plain. Recorded as a user-message event; the agent reads it, verbatim, at its next step (a pending job, when it starts). ' +
          'To a finished job (complete, error, cancelled) it continues the job: the job is pending again in a new run, with the same workspace and its whole history, ' +
          'and the agent reads the message at the run\'s first step (`reopened: true`; of several at once, one reopens the job and the others join that run).',
        consumes: ['application/json', 'text/plain'],
        params: jobIdParams,
        body: messageRequest,
        bodyContent: { 'application/json': messageRequest, 'text/plain': z.string().describe('The instruction alone, in plain language') },
        response: {
          202: response('Recorded: the agent reads it at its next step (or the first of the new run)', messageResponse),
          ...problemResponses({
            400: 'The text is empty or the body invalid',
            404: noSuchJob,
            413: 'The body is larger than WORKCELL_MAX_BODY_BYTES',
            415: 'A Content-Type other than application/json or text/plain',
          }),
        },
      },
      preValidation: async (request) => {
        if (typeof request.body === 'string') request.body = { text: request.body };
        else if (request.body === undefined || request.body === null) throw invalidRequest('the body is empty: send the instruction as text/plain or JSON {"text": "..."}');
      },
    },
    async (request, reply) => {
      const job = await requireJob(context, request);
      const { seq, run, reopened } = await context.jobs.postMessage(job.id, request.body.text, request.owner);
      return reply.code(202).send({ job_id: job.id, event_id: seq, run, reopened });
    },
  );

  app.delete(
    '/jobs/:id',
    {
      schema: {
        operationId: 'deleteJob',
        tags: ['jobs'],
        summary: 'Delete a finished job',
        description: "Removes the job's row and its directory: workspace, history, logs and zip. 409 while the job is pending or running (cancel it first).",
        params: jobIdParams,
        response: { 204: z.null().describe('Deleted'), ...problemResponses({ 404: noSuchJob, 409: 'The job is pending or running: cancel it first' }) },
      },
    },
    async (request, reply) => {
      const job = await requireJob(context, request);
      await context.jobs.delete(job.id, request.owner);
      return reply.code(204).send(null);
    },
  );
}
