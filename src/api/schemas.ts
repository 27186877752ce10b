// The API's request and response shapes: these zod schemas validate requests, type the handlers and generate
// /openapi.json. Field names are snake_case on the wire.
import { z } from 'zod';
import { runtimeNames } from '../config.ts';
import { jobStatuses } from '../jobs/job-store.ts';

export const runtimeRequest = z.enum(['auto', ...runtimeNames]).describe('Sandbox runtime: `auto` picks the strongest this host supports');

export const limitsRequest = z
  .strictObject({
    wall_time_s: z.number().int().min(1).max(7 * 24 * 3600).optional().describe('Wall-clock limit from start, seconds'),
    max_steps: z.number().int().min(1).max(100_000).optional().describe('Most model turns the agent may take'),
  })
  .describe('Per-job limits; unset fields take the server defaults');

export const scheduleRequest = z
  .strictObject({
    task: z
      .string()
      .max(500_000)
      .refine((task) => task.trim().length > 0, 'task is empty: say what the agent should do')
      .describe('What the agent should do, in plain language'),
    model: z
      .string()
      .regex(/^[a-z][a-z-]*:\S.*$/, 'model must look like provider:model, e.g. anthropic:claude-sonnet-4-5')
      .max(500)
      .optional()
      .describe('provider:model; default: the server\'s WORKCELL_MODEL'),
    runtime: runtimeRequest.optional(),
    limits: limitsRequest.optional(),
    metadata: z
      .record(z.string().min(1).max(64), z.string().max(1024))
      .refine((m) => Object.keys(m).length <= 32, 'metadata holds at most 32 keys')
      .optional()
      .describe('Free-form string labels kept with the job'),
  })
  .describe('A job: the task as JSON (or send the task alone as text/plain)');

export const scheduleResponse = z.object({ job_id: z.string() });

export const jobStatus = z.enum(jobStatuses);

export const jobIdParams = z.object({ id: z.string().max(100) });

export const statusResponse = z.object({
  job_id: z.string(),
  status: jobStatus,
  created_at: z.string(),
  started_at: z.string().optional(),
  finished_at: z.string().optional(),
  error: z.string().optional(),
  download_url: z.string().optional().describe('Present once the job is complete'),
});

export const jobDetail = statusResponse.extend({
  task: z.string(),
  model: z.string().nullable().describe('The model in use (or asked for, before the job starts)'),
  runtime: z.string().describe('The runtime asked for'),
  runtime_used: z.string().nullable().describe('The runtime the job actually got'),
  isolation: z.string().nullable().describe('The isolation in effect, in words'),
  limits: z.object({ wall_time_s: z.number(), max_steps: z.number() }),
  metadata: z.record(z.string(), z.string()),
  summary: z.string().nullable().describe("The agent's summary when it finished"),
  usage: z.object({ steps: z.number(), input_tokens: z.number(), output_tokens: z.number() }),
  attempts: z.number(),
  artifacts_url: z.string().optional().describe('The zipped workspace, once the job has ended'),
  events_url: z.string(),
});

export const listQuery = z.strictObject({
  status: jobStatus.optional(),
  limit: z.coerce.number().int().min(1).max(200).default(50),
  cursor: z.string().max(100).optional().describe('next_cursor from the previous page'),
});

export const listResponse = z.object({ jobs: z.array(jobDetail), next_cursor: z.string().nullable() });

export const cancelResponse = z.object({ job_id: z.string(), status: jobStatus });

export const eventsQuery = z.strictObject({
  after: z.coerce.number().int().min(0).optional().describe('Only events after this id (same as Last-Event-ID)'),
  follow: z.enum(['true', 'false']).default('true').describe('Keep the stream open until the job ends'),
});

export const problem = z
  .object({
    type: z.string(),
    title: z.string(),
    status: z.number(),
    detail: z.string(),
    instance: z.string().optional(),
    errors: z.array(z.object({ path: z.string(), message: z.string() })).optional(),
  })
  .describe('RFC 9457 problem details');

export const healthResponse = z.object({ ok: z.boolean(), version: z.string() });
