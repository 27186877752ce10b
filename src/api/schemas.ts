// The API's request and response shapes: these zod schemas validate requests, type the handlers and generate
// /openapi.json. Field names are snake_case on the wire.
import { z } from 'zod';
import { runtimeNames } from '../config.ts';
import { errorMessage } from '../errors.ts';
import { parseAllowPattern } from '../runtimes/network/allow-list.ts';
import { hostFileLimits } from '../jobs/job-limits.ts';
import { eventTypes } from '../jobs/event-log.ts';
import { jobStatuses } from '../store/types.ts';
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

export const gitInputRequest = z
  .strictObject({
    url: z
      .string()
      .max(2000)
      .superRefine((url, context) => {
        const problem = gitUrlProblem(url);
        if (problem !== undefined) context.addIssue({ code: 'custom', message: problem });
      })
      .describe(
        'The repository, http:// or https:// (e.g. https://git.example.com/team/app.git), without user or password: credentials for private remotes ' +
          "come from the server's WORKCELL_GIT_CREDENTIALS. Its host must be allowed by network.allow, WORKCELL_NETWORK_ALLOW or WORKCELL_GIT_ALLOW",
      ),
    ref: z
      .string()
      .max(255)
      .regex(/^(?!-)(?!.*\.\.)(?!.*@\{)(?!.*\/\/)[A-Za-z0-9._/+@-]+(?<!\.lock)(?<![./])$/, 'ref must be a branch, a tag or a full commit id (letters, digits, ".", "_", "/", "+", "@", "-"; not starting with "-")')
      .optional()
      .describe("A branch, a tag or a full commit id to check out; default: the remote's default branch"),
    depth: z.number().int().min(1).max(1_000_000).optional().describe('Fetch only this many commits of history (a shallow clone); default: all'),
  })
  .describe('A git repository the server clones into /workspace when the job starts, before the sandbox does (through the egress proxy, in the audit log)');

/** Why a git input URL is not accepted, or undefined. */
function gitUrlProblem(text: string): string | undefined {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return 'url is not a URL: give the repository as https://host/path (or http://)';
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') return `url must be https:// or http:// (not ${url.protocol}): the server clones over HTTP(S) only`;
  if (url.username !== '' || url.password !== '') return 'url must not hold a user or password: the server keeps credentials for private remotes (WORKCELL_GIT_CREDENTIALS), so they never reach the sandbox';
  if (url.hostname === '') return 'url has no host';
  // git and curl parse URLs on their own: the text must mean the same to them as to this check (no backslash, blank,
  // control or non-ASCII character anywhere, no "@" or "%" in the host part, "//" right after the scheme).
  if (!/^[\x21-\x7e]+$/.test(text) || text.includes('\\')) return 'url must be plain ASCII without blanks, control characters or backslashes (percent-encode the path; give an international host name in its xn-- form)';
  if (!/^https?:\/\/[A-Za-z0-9.\-_~:[\]]+(?:[/?]|$)/i.test(text)) return 'url must be https://host[:port]/path (no user, "@" or "%" in the host part)';
  if (url.hash !== '') return 'url must not have a #fragment';
  return undefined;
}

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
    callback_url: z
      .string()
      .max(2048)
      .optional()
      .describe(
        'Lifecycle hooks: a POST on every status change of the job (pending, running, complete, error, cancelled, reopened), JSON, signed the Standard Webhooks way ' +
          "(webhook-id, webhook-timestamp, webhook-signature: HMAC-SHA256 with the server's WORKCELL_CALLBACK_SECRET), retried with backoff. http(s), no user or password; " +
          "public addresses only unless the server's WORKCELL_CALLBACK_ALLOW_PRIVATE lists it. Default: the server's WORKCELL_CALLBACK_URL, if any",
      ),
    from_job: z
      .string()
      .max(100)
      .optional()
      .describe("Fork: start from this finished job's final workspace (one of your own jobs), copied without following symlinks; the new job has its own history, starting with this task"),
    metadata: z
      .record(z.string().min(1).max(64), z.string().max(1024))
      .refine((m) => Object.keys(m).length <= 32, 'metadata holds at most 32 keys')
      .optional()
      .describe('Free-form string labels kept with the job'),
    inputs: z
      .strictObject({ git: gitInputRequest.optional() })
      .optional()
      .describe('What /workspace starts from besides uploaded files: a git clone (not together with uploaded files)'),
  })
  .describe('A job: the task as JSON (or send the task alone as text/plain)');

export const scheduleResponse = z.object({ job_id: z.string().describe('The job\'s id: job_ and 26 characters') }).meta({ id: 'ScheduledJob', description: 'The scheduled job' });

/** POST /schedule as multipart/form-data, for the document (schedule-upload.ts reads it as it streams). */
export const scheduleMultipart = z
  .object({
    task: z.string().optional().describe('What the agent should do (or give it in the job field)'),
    job: z.string().optional().describe('The JSON options, the same object as a JSON body (task may be in it instead of the task field)'),
    files: z.array(z.unknown().describe('A file: its filename is its relative path in /workspace, e.g. src/app.py')).optional().describe('Files for the workspace'),
    archive: z.unknown().optional().describe('At most one tar, tar.gz or zip, unpacked into /workspace'),
  })
  .describe('The task, the options and files for the workspace');

export const jobStatus = z.enum(jobStatuses);

export const jobIdParams = z.object({ id: z.string().max(100).describe('The job id (job_ and 26 characters), as POST /schedule answered it') });

export const statusResponse = z.object({
  job_id: z.string(),
  status: jobStatus,
  created_at: z.string(),
  started_at: z.string().optional(),
  finished_at: z.string().optional(),
  error: z.string().optional(),
  download_url: z.string().optional().describe('Present once the job is complete'),
});

export const jobStatusResponse = statusResponse
  .extend({
    runtime: z.string().nullable().describe('The sandbox runtime the job got (bwrap, docker, gvisor, microvm); null until its sandbox has started'),
    isolation: z.string().nullable().describe('The isolation in effect, in words; null until its sandbox has started'),
  })
  .meta({ id: 'JobStatus', description: "A job's status" });

export const jobRun = z.object({
  run: z.number(),
  status: jobStatus,
  message: z.string().nullable().describe('The message that started this run, verbatim; null for the first run, which the task started'),
  message_event_id: z.number().nullable().describe('The user-message event that holds it'),
  created_at: z.string(),
  started_at: z.string().nullable(),
  finished_at: z.string().nullable(),
  error: z.string().nullable(),
  summary: z.string().nullable(),
  steps: z.number().describe('Model turns this run took'),
}).meta({ id: 'JobRun', description: 'One run of a job: the first, or one a message started after the job had ended' });

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
  attempts: z.number().describe("Starts of the current run (a worker that dies mid-run resumes it, up to WORKCELL_MAX_ATTEMPTS)"),
  run: z.number().describe('The current run: 1, then one more each time a message continued the job after it had ended'),
  runs: z.array(jobRun).describe("Every run of the job, first to last; the job's started_at, finished_at, error and summary are the current run's"),
  callback_url: z.string().nullable().describe("The job's own lifecycle hook URL (null: none, or the server's)"),
  from_job: z.string().nullable().describe('The job this one was forked from (its final workspace was copied in)'),
  artifacts_url: z.string().optional().describe('The zipped workspace, once the job has ended'),
  events_url: z.string(),
  network: z.object({ allow: z.array(z.string()) }).describe("The destinations the sandbox may reach: the server's WORKCELL_NETWORK_ALLOW and the job's own (empty: no network)"),
  audit_url: z.string().describe("The job's audit log: file operations and network connections, as JSON lines"),
  inputs: z
    .object({
      git: z.object({ url: z.string(), ref: z.string().optional(), depth: z.number().optional() }).optional().describe('The repository cloned into /workspace when the job started'),
      upload: z.object({ entries: z.number(), bytes: z.number() }).optional().describe('Files uploaded with the job (multipart POST /schedule): entries (files, directories, links) and bytes'),
    })
    .describe('What the workspace started from ({}: an empty workspace)'),
}).meta({ id: 'Job', description: 'A job in detail' });

export const listQuery = z.strictObject({
  status: jobStatus.optional(),
  limit: z.coerce.number().int().min(1).max(200).default(50),
  cursor: z.string().max(100).optional().describe('next_cursor from the previous page'),
});

export const listResponse = z
  .object({ jobs: z.array(jobDetail), next_cursor: z.string().nullable().describe('Pass as ?cursor= for the next page; null on the last') })
  .meta({ id: 'JobList', description: 'A page of jobs, newest first' });

export const cancelResponse = z
  .object({ job_id: z.string(), status: jobStatus.describe('running while it stops (the final status follows in its events), else the status it ended with') })
  .meta({ id: 'CancelResult', description: 'The cancelled job' });

export const messageRequest = z
  .strictObject({
    text: z
      .string()
      .max(100_000)
      .refine((text) => text.trim().length > 0, 'text is empty: say what the agent should do')
      .describe('The instruction, in plain language'),
  })
  .describe('A follow-up instruction for the agent, or for a finished job the message that continues it (or send the text alone as text/plain)');

export const messageResponse = z.object({
  job_id: z.string(),
  event_id: z.number().describe('The user-message event that records it (its SSE id)'),
  run: z.number().describe('The run that reads it'),
  reopened: z.boolean().describe('This message continued the finished job: it is pending again, in a new run that starts with the message'),
}).meta({ id: 'MessageResult', description: 'The message, recorded' });

export const auditQuery = z.strictObject({
  after: z.coerce.number().int().min(0).optional().describe('Only the entries after this many lines (the number of lines already read)'),
});

export const jobEvent = z
  .object({
    seq: z.number().int().describe("The event's place in the job's log, 1, 2, 3, ...: the SSE id, for Last-Event-ID and ?after="),
    job_id: z.string(),
    type: z.enum(eventTypes).describe('What happened (also the SSE event name)'),
    step: z.number().int().describe('The model turn it belongs to (0 before the first)'),
    time: z.string().describe('When, ISO 8601'),
    data: z
      .record(z.string(), z.unknown())
      .describe(
        'What it says, by type: job-status {status, run, error?, summary?, reopened?}; sandbox-ready {runtime, sandbox_id, isolation, ready_ms, pooled (started ahead in the warm pool)}; user-message {text, source: task | client | nudge}; ' +
          'model-turn {text, tool_calls, usage}; tool-call {call_id, name, args}; tool-result {call_id, name, output, is_error, duration_ms}; model-retry, context-summary, log',
      ),
  })
  .meta({ id: 'JobEvent', description: "One event of a job's log" });

export const eventsQuery = z.strictObject({
  after: z.coerce.number().int().min(0).optional().describe('Only events after this id (same as Last-Event-ID)'),
  follow: z.enum(['true', 'false']).default('true').describe("Keep the stream open until the job's current run ends"),
});

export const problem = z
  .object({
    type: z.string().describe('urn:workcell:problem:<code>: the kind of error, stable (not_found, conflict, invalid_request, ...)'),
    title: z.string().describe("The HTTP status's name"),
    status: z.number().int().describe('The HTTP status'),
    detail: z.string().describe('What went wrong and what to do about it'),
    instance: z.string().optional().describe('The request path'),
    errors: z.array(z.object({ path: z.string(), message: z.string() })).optional().describe('Each invalid field of the request (400): where and what'),
  })
  .meta({ id: 'Problem', description: 'RFC 9457 problem details: `type` is urn:workcell:problem:<code> (not_found, conflict, precondition_failed, ...), `detail` says what to do' });

export const linkRequest = z
  .strictObject({
    service: z.enum(browserServices).describe('What the link opens: the noVNC desktop, Jupyter, or the terminal websocket'),
  })
  .describe('A browser link to one of the job\'s services');

export const linkResponse = z.object({
  url: z.string().describe("Open it in a browser (desktop, jupyter: on the job's own origin) or connect a websocket to it (terminal). It works once, within two minutes; the page then holds a session cookie for that job"),
  expires_at: z.string().describe('When the link stops working, if unused'),
}).meta({ id: 'Link', description: 'A one-time link' });

export const healthResponse = z.object({ ok: z.boolean(), version: z.string().describe("The server's version") }).meta({ id: 'Health', description: 'The server is up' });
