// The API's request and response shapes: these zod schemas validate requests, type the handlers and generate
// /openapi.json. Field names are snake_case on the wire.
import { z } from 'zod';
import { runtimeNames } from '../config.ts';
import { errorMessage } from '../errors.ts';
import { parseAllowPattern } from '../runtimes/network/allow-list.ts';
import { hostFileLimits } from '../jobs/job-limits.ts';
import { jobStatuses } from '../jobs/job-store.ts';
import { browserServices } from './browser-tokens.ts';

export const runtimeRequest = z.enum(['auto', ...runtimeNames]).describe('Sandbox runtime: `auto` picks the strongest this host supports');

export const limitsRequest = z
  .strictObject({
    wall_time_s: z.number().int().min(1).max(7 * 24 * 3600).optional().describe('Wall-clock limit from start, seconds'),
    max_steps: z.number().int().min(1).max(100_000).optional().describe('Most model turns the agent may take'),
    cpus: z.number().min(0.01).max(1024).optional().describe("CPUs' worth of time for the sandbox (may be fractional); at most the server's WORKCELL_CPUS"),
    memory_mb: z.number().int().min(32).max(1 << 22).optional().describe("Memory for the sandbox, MB, /tmp included, no swap; at most the server's WORKCELL_MEMORY_MB"),
    pids: z.number().int().min(32).max(1 << 22).optional().describe("Processes and threads the sandbox may have at once; at most the server's WORKCELL_PIDS"),
    disk_mb: z.number().int().min(16).max(1 << 24).optional().describe("Size of the workspace's disk, MB (and of /tmp); at most the server's WORKCELL_DISK_MB"),
    idle_time_s: z.number().int().min(1).max(7 * 24 * 3600).optional().describe('The job ends when nothing happens (no event) for this long, seconds'),
    sandbox_log_mb: z.number().int().min(1).max(1 << 20).optional().describe("Most the sandbox's log (logs/sandbox.log) may hold on the host, MB; what comes after is dropped; at most the server's WORKCELL_SANDBOX_LOG_MB"),
    audit_log_mb: z.number().int().min(1).max(1 << 20).optional().describe("Most the job's audit log may hold, MB; later entries are dropped; at most the server's WORKCELL_AUDIT_LOG_MB"),
    context_mb: z
      .number()
      .int()
      .min(8)
      .max(1 << 20)
      .optional()
      .describe("Most the job's history may take on the host (context.db and its images), MB: one tool output keeps at most 1/16 of it (beginning and end), and the job ends with an error when it is full; at most the server's WORKCELL_CONTEXT_MB"),
  })
  .describe('Per-job limits; unset fields take the server defaults');

export const networkRequest = z
  .strictObject({
    allow: z
      .array(z.string().max(300))
      .max(256)
      .superRefine((entries, context) => {
        entries.forEach((entry, index) => {
          try {
            parseAllowPattern(entry);
          } catch (error) {
            context.addIssue({ code: 'custom', path: [index], message: errorMessage(error) });
          }
        });
      })
      .describe(
        'Destinations the sandbox may reach through the egress proxy: "host" (ports 80 and 443 only), "host:port", ' +
          '"*.domain" (its subdomains, not the domain itself), "*" (any host), an IP ("203.0.113.7", "[2001:db8::1]:443"). ' +
          'Private, loopback and link-local addresses are reached only when listed exactly (the IP, or the name with its port). ' +
          "Added to the server's WORKCELL_NETWORK_ALLOW.",
      ),
  })
  .describe('Egress: the sandbox has no network unless this (or the server) allows destinations');

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
    network: networkRequest.optional(),
    context_window: z
      .number()
      .int()
      .min(2048)
      .max(10_000_000)
      .optional()
      .describe("The model's context window in tokens; every prompt is assembled to fit 75 % of it. Default: the server's WORKCELL_CONTEXT_WINDOW, else the model's known window (32768 for unknown models)"),
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

export const jobStatusResponse = statusResponse.extend({
  runtime: z.string().nullable().describe('The sandbox runtime the job got (bwrap, docker, gvisor, microvm); null until its sandbox has started'),
  isolation: z.string().nullable().describe('The isolation in effect, in words; null until its sandbox has started'),
});

export const jobDetail = statusResponse.extend({
  task: z.string(),
  model: z.string().nullable().describe('The model in use (or asked for, before the job starts)'),
  runtime: z.string().describe('The runtime asked for'),
  runtime_used: z.string().nullable().describe('The runtime the job actually got'),
  isolation: z.string().nullable().describe('The isolation in effect, in words'),
  limits: z
    .object({
      wall_time_s: z.number(),
      max_steps: z.number(),
      cpus: z.number().optional(),
      memory_mb: z.number().optional(),
      pids: z.number().optional(),
      disk_mb: z.number().optional(),
      idle_time_s: z.number().optional(),
      sandbox_log_mb: z.number().optional(),
      audit_log_mb: z.number().optional(),
      context_mb: z.number().optional(),
    })
    .describe('The limits in effect (jobs scheduled before resource limits existed lack those fields)'),
  metadata: z.record(z.string(), z.string()),
  summary: z.string().nullable().describe("The agent's summary when it finished"),
  usage: z.object({
    steps: z.number(),
    input_tokens: z.number(),
    output_tokens: z.number(),
    cpu_seconds: z.number().optional().describe('CPU time the sandbox used, once the job has ended'),
    peak_memory_mb: z.number().optional().describe("The sandbox's peak memory, once the job has ended"),
    limits_reached: z
      .array(z.enum(hostFileLimits))
      .optional()
      .describe('The caps on host files the job ran into (sandbox_log_mb, audit_log_mb, context_mb), each also told in a `log` event with the limit and what was dropped'),
    cost_usd: z.number().nullable().describe("The model's cost for the tokens so far, in US dollars at list prices; null when the model's price is not known (self-hosted, unknown or script models)"),
    context_window: z.number().nullable().describe('The context window the job works with, in tokens (null until the model is known)'),
  }),
  attempts: z.number(),
  artifacts_url: z.string().optional().describe('The zipped workspace, once the job has ended'),
  events_url: z.string(),
  network: z.object({ allow: z.array(z.string()) }).describe("The destinations the sandbox may reach: the server's WORKCELL_NETWORK_ALLOW and the job's own (empty: no network)"),
  audit_url: z.string().describe("The job's audit log: file operations and network connections, as JSON lines"),
});

export const listQuery = z.strictObject({
  status: jobStatus.optional(),
  limit: z.coerce.number().int().min(1).max(200).default(50),
  cursor: z.string().max(100).optional().describe('next_cursor from the previous page'),
});

export const listResponse = z.object({ jobs: z.array(jobDetail), next_cursor: z.string().nullable() });

export const cancelResponse = z.object({ job_id: z.string(), status: jobStatus });

export const messageRequest = z
  .strictObject({
    text: z
      .string()
      .max(100_000)
      .refine((text) => text.trim().length > 0, 'text is empty: say what the agent should do')
      .describe('The instruction, in plain language'),
  })
  .describe('A follow-up instruction for the running agent (or send the text alone as text/plain)');

export const messageResponse = z.object({ job_id: z.string(), event_id: z.number().describe('The user-message event that records it (its SSE id)') });

export const auditQuery = z.strictObject({
  after: z.coerce.number().int().min(0).optional().describe('Only the entries after this many lines (the number of lines already read)'),
});

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

export const linkRequest = z
  .strictObject({
    service: z.enum(browserServices).describe('What the link opens: the noVNC desktop, Jupyter, or the terminal websocket'),
  })
  .describe('A browser link to one of the job\'s services');

export const linkResponse = z.object({
  url: z.string().describe("Open it in a browser (desktop, jupyter: on the job's own origin) or connect a websocket to it (terminal). It works once, within two minutes; the page then holds a session cookie for that job"),
  expires_at: z.string().describe('When the link stops working, if unused'),
});

export const healthResponse = z.object({ ok: z.boolean(), version: z.string() });
