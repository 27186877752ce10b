// Server configuration: one zod schema, parsed once at start-up from the environment (and CLI flags, which win).
// Each field says its environment variable and default. Nothing else in the code reads process.env for settings.
import { availableParallelism, homedir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { errorMessage } from './errors.ts';
import { webhookSecretPattern } from './jobs/webhooks/signature.ts';
import { mergeAllowLists } from './runtimes/network/allow-list.ts';

const isRoot = process.getuid?.() === 0;
const defaultDataDir = isRoot ? '/var/lib/workcell' : join(process.env.XDG_DATA_HOME || join(homedir(), '.local/share'), 'workcell');
const defaultImageDir = isRoot ? '/var/lib/workcell/images' : join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'workcell/images');
const defaultRunDir = isRoot ? '/run/workcell' : join(process.env.XDG_RUNTIME_DIR || `/tmp/workcell-${process.getuid?.() ?? 0}`, 'workcell');

const integer = (min: number, max: number) => z.coerce.number().int().min(min).max(max);
const boolean = z.union([z.boolean(), z.enum(['1', '0', 'true', 'false', 'yes', 'no']).transform((v) => ['1', 'true', 'yes'].includes(v))]);

export const runtimeNames = ['bwrap', 'docker', 'gvisor', 'microvm'] as const;
export type RuntimeName = (typeof runtimeNames)[number];

/** A comma-separated allow-list (or an array), normalized and checked as allow-list.ts reads it; default empty. */
function allowList(entriesAre: string) {
  return z
    .union([z.array(z.string()), z.string().transform((list) => list.split(','))])
    .transform((list, context) => {
      const entries = list.map((entry) => entry.trim()).filter((entry) => entry !== '');
      try {
        return mergeAllowLists(entries);
      } catch (error) {
        context.addIssue({ code: 'custom', message: `${errorMessage(error)} (a comma-separated list of ${entriesAre})` });
        return z.NEVER;
      }
    })
    .default([]);
}

export const configSchema = z.object({
  dataDir: z.string().min(1).default(defaultDataDir).describe('WORKCELL_DATA_DIR: workcell.db and jobs/<id>/ live here'),
  databaseUrl: z
    .string()
    .regex(/^postgres(ql)?:\/\/./, 'a postgres:// or postgresql:// URL, e.g. postgresql://workcell:<password>@db.example.com:5432/workcell')
    .optional()
    .describe('WORKCELL_DATABASE_URL: keep jobs, API keys and the webhook outbox in this Postgres database, shared by every API replica and worker (default: none, SQLite in the data dir)'),
  host: z.string().min(1).default('127.0.0.1').describe('WORKCELL_HOST: address the API listens on (loopback by default)'),
  port: integer(0, 65535).default(8080).describe('WORKCELL_PORT: API port'),
  internalHost: z
    .string()
    .min(1)
    .default('127.0.0.1')
    .describe("WORKCELL_INTERNAL_HOST: address a worker's internal route listens on, for API replicas to reach the sandboxes it holds (only with WORKCELL_DATABASE_URL; loopback by default: replicas on the same host only)"),
  internalPort: integer(0, 65535).default(0).describe("WORKCELL_INTERNAL_PORT: the internal route's port (default 0: any free one)"),
  internalUrl: z
    .url({ protocol: /^https?$/ })
    .optional()
    .describe("WORKCELL_INTERNAL_URL: the URL API replicas use to reach this worker's internal route (default: http://<WORKCELL_INTERNAL_HOST>:<port>; set it when that address is not the one others reach, such as 0.0.0.0)"),
  publicUrl: z.url().optional().describe('WORKCELL_PUBLIC_URL: the URL clients use to reach the API (download links, and the Host and Origin the API accepts besides loopback names); default: from the request'),
  allowedHosts: z
    .union([z.array(z.string()), z.string().transform((list) => list.split(','))])
    .transform((list) => list.map((entry) => entry.trim().toLowerCase()).filter((entry) => entry !== ''))
    .pipe(z.array(z.string().regex(/^(\[[0-9a-f:.]+\]|[a-z0-9]([a-z0-9.-]*[a-z0-9])?)$/, 'a host name or IP, without scheme or port')))
    .default([])
    .describe("WORKCELL_ALLOWED_HOSTS: more host names the API answers to, comma-separated (besides loopback names and WORKCELL_PUBLIC_URL's host); any other Host header is refused (DNS rebinding)"),
  sandboxUrl: z
    .string()
    .regex(/^https?:\/\/\{job\}\.[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:\d{1,5})?\/?$/, 'a URL whose host starts with the label {job}, e.g. https://{job}.sandbox.example.com')
    .optional()
    .describe("WORKCELL_SANDBOX_URL: where people's browsers reach a job's desktop and Jupyter, each job on its own origin ({job} becomes job-<id>), e.g. https://{job}.sandbox.example.com with a wildcard DNS name and certificate; pages from a sandbox never run on the API's origin (default: http://{job}.localhost:<the API's port>, which browsers resolve to loopback)"),
  concurrency: integer(1, 1024).default(availableParallelism()).describe('WORKCELL_CONCURRENCY: jobs run at once (default: cores)'),
  poolSize: integer(0, 1024)
    .default(0)
    .describe(
      "WORKCELL_POOL_SIZE: bwrap sandboxes each worker keeps started ahead of jobs (the warm pool; needs a root server), for jobs with the default limits and no network; each idle one costs about 30 MB of memory (docs/BENCHMARKS.md). 0: none",
    ),
  model: z.string().min(1).optional().describe('WORKCELL_MODEL: provider:model, e.g. anthropic:claude-sonnet-4-5, openai:gpt-5, openai-compatible:llama3, script:/path.json'),
  openaiCompatibleBaseUrl: z.url().optional().describe('WORKCELL_OPENAI_COMPATIBLE_BASE_URL: e.g. http://127.0.0.1:11434/v1'),
  openaiCompatibleApiKey: z.string().optional().describe('WORKCELL_OPENAI_COMPATIBLE_API_KEY: optional key for that server'),
  modelStream: boolean.default(true).describe('WORKCELL_MODEL_STREAM: stream model responses (true) or not'),
  modelMaxRetries: integer(0, 20).default(4).describe('WORKCELL_MODEL_MAX_RETRIES: retries on 429/5xx/network errors'),
  modelRetryBaseMs: integer(1, 600_000).default(1000).describe('WORKCELL_MODEL_RETRY_BASE_MS: first backoff delay, doubled each retry'),
  modelVision: boolean.optional().describe('WORKCELL_MODEL_VISION: send tool images (gui screenshots) to the model as images (true) or describe them in text (false); default: known per model (Anthropic and OpenAI vision models yes, others no)'),
  contextWindow: integer(2048, 10_000_000).optional().describe("WORKCELL_CONTEXT_WINDOW: the model's context window in tokens, for every job that does not set context_window (default: known per model, 32768 for unknown models)"),
  embeddingModel: z.string().min(1).optional().describe('WORKCELL_EMBEDDING_MODEL: provider:model for recall embeddings, e.g. openai:text-embedding-3-small or openai-compatible:nomic-embed-text (default: none, recall uses BM25 alone)'),
  maxAttempts: integer(1, 100).default(3).describe('WORKCELL_MAX_ATTEMPTS: times a job is started before a dead worker ends it with error instead of resuming it'),
  scriptDir: z.string().optional().describe('WORKCELL_SCRIPT_DIR: folder from which jobs may pick script: models (unset: jobs may not)'),
  runtime: z.enum(['auto', ...runtimeNames]).default('auto').describe('WORKCELL_RUNTIME: default sandbox runtime'),
  runtimeOrder: z
    .union([z.array(z.enum(runtimeNames)), z.string().transform((list) => list.split(',').map((name) => name.trim()).filter(Boolean))])
    .pipe(z.array(z.enum(runtimeNames)).min(1))
    .default(['microvm', 'gvisor', 'docker', 'bwrap'])
    .describe("WORKCELL_RUNTIME_ORDER: the runtimes `auto` tries, strongest first, comma-separated (default microvm,gvisor,docker,bwrap; auto takes microvm only where KVM works)"),
  dockerImage: z.string().min(1).optional().describe('WORKCELL_DOCKER_IMAGE: the sandbox image for docker and gvisor (built with image/build-docker-image.ts); default: the rootfs imported as workcell-sandbox:rootfs-<hash>'),
  gvisorRuntime: z.string().regex(/^[\w.-]+$/).default('runsc-nonet').describe("WORKCELL_GVISOR_RUNTIME: Docker's name for runsc (registered by scripts/setup.sh: runsc install --runtime runsc-nonet -- --network=none)"),
  microvmVmm: z.enum(['auto', 'firecracker', 'qemu']).default('auto').describe('WORKCELL_MICROVM_VMM: auto (Firecracker when its binary and KVM are there, else QEMU), firecracker or qemu'),
  microvmAccel: z.enum(['auto', 'kvm', 'tcg']).default('auto').describe('WORKCELL_MICROVM_ACCEL: QEMU acceleration; auto: KVM when usable (hardware virtualization exposed), else TCG (emulation, about 14x slower)'),
  microvmKernelDir: z.string().min(1).optional().describe("WORKCELL_MICROVM_KERNEL_DIR: an unpacked Debian linux-image-*-cloud-amd64 (boot/vmlinuz-*, lib/modules/*); default: <image dir>/kernel (scripts/setup.sh puts it there)"),
  imageDir: z.string().min(1).default(defaultImageDir).describe('WORKCELL_IMAGE_DIR: built rootfs images and the sandboxd bundle'),
  runDir: z.string().min(1).default(defaultRunDir).describe("WORKCELL_RUN_DIR: sandbox sockets (short path: unix sockets allow 107 bytes); must be the server user's own and writable by no one else, nor may any directory above it be (sandboxes are refused otherwise; runtimes/run-dir.ts); default /run/workcell as root, else $XDG_RUNTIME_DIR/workcell or /tmp/workcell-<uid>/workcell"),
  sandboxUser: z.string().min(1).default('workcell-sandbox').describe('WORKCELL_SANDBOX_USER: unprivileged host user sandboxes run as when the server runs as root'),
  debianMirror: z.url().default('http://deb.debian.org/debian').describe('WORKCELL_DEBIAN_MIRROR: mirror for building the rootfs'),
  wallTimeS: integer(1, 7 * 24 * 3600).default(3600).describe('WORKCELL_WALL_TIME_S: default wall-clock limit per job'),
  maxSteps: integer(1, 100_000).default(200).describe('WORKCELL_MAX_STEPS: default model turns per job'),
  cpus: z.coerce.number().min(0.01).max(1024).default(1).describe('WORKCELL_CPUS: default CPUs per sandbox (CFS quota; may be fractional, e.g. 0.5)'),
  memoryMb: integer(32, 1 << 22).default(2048).describe('WORKCELL_MEMORY_MB: default memory per sandbox, MB (no swap; /tmp counts against it)'),
  pids: integer(32, 1 << 22).default(512).describe('WORKCELL_PIDS: default processes and threads per sandbox'),
  diskMb: integer(16, 1 << 24).default(4096).describe('WORKCELL_DISK_MB: default size of a job\'s workspace disk and of its /tmp, MB'),
  idleTimeS: integer(1, 7 * 24 * 3600).default(600).describe('WORKCELL_IDLE_TIME_S: default time a job may go without an event before it is ended'),
  wallTimeMaxS: integer(1, 7 * 24 * 3600).default(24 * 3600).describe('WORKCELL_WALL_TIME_MAX_S: the most wall time a job may ask for, seconds (default 86400)'),
  stepsMax: integer(1, 100_000).default(2000).describe('WORKCELL_STEPS_MAX: the most model turns a job may ask for (default 2000)'),
  idleTimeMaxS: integer(1, 7 * 24 * 3600).default(3600).describe('WORKCELL_IDLE_TIME_MAX_S: the most idle time a job may ask for, seconds (default 3600)'),
  sandboxLogMb: integer(1, 1 << 20).default(64).describe("WORKCELL_SANDBOX_LOG_MB: most a job's logs/sandbox.log may hold (what its sandbox's daemon, VM or container prints), MB; beyond it output is dropped, with a marker; default 64; also the most a job may ask for"),
  auditLogMb: integer(1, 1 << 20).default(64).describe("WORKCELL_AUDIT_LOG_MB: most a job's audit.jsonl may hold, MB; beyond it entries are dropped, with a last entry saying so; default 64; also the most a job may ask for"),
  contextMb: integer(8, 1 << 20).default(1024).describe("WORKCELL_CONTEXT_MB: most a job's history may take on disk (context.db and its images), MB; one tool output keeps at most 1/16 of it (head and tail), and a job whose history is full ends with an error; default 1024; also the most a job may ask for"),
  unsafeNoLimits: boolean.default(false).describe('WORKCELL_UNSAFE_NO_LIMITS: run sandboxes without CPU, memory, pids and disk limits where the host cannot enforce them (not safe)'),
  diskLimit: z
    .enum(['loop', 'tmpfs'])
    .default('loop')
    .describe("WORKCELL_DISK_LIMIT: how each job's workspace is held to its disk_mb: loop (an ext4 image on a loop device; the server refuses to start where loop devices do not work) or tmpfs (a size-limited tmpfs, for hosts without loop devices such as containers: its content is in memory, counted against the sandbox's memory limit and the host's RAM, and lost if the host restarts while a job runs)"),
  cgroupParent: z.string().regex(/^(\/[\w.@:-]+)+$/, 'an absolute path inside the cgroup hierarchy, e.g. /workcell').refine((path) => !path.split('/').includes('..'), 'no .. in the path').optional().describe('WORKCELL_CGROUP_PARENT: cgroup under which sandboxes get theirs (default: workcell in the server\'s own cgroup on v1, /workcell on v2)'),
  networkAllow: allowList('host, host:port, *.domain or IP entries')
    .describe('WORKCELL_NETWORK_ALLOW: destinations every job may reach through the egress proxy, comma-separated (host, host:port, *.domain, IP); added to each job\'s own network.allow (default: none)'),
  networkJobPrivate: boolean
    .optional()
    .describe("WORKCELL_NETWORK_JOB_PRIVATE: may a job's own allow-list open private and loopback addresses it lists exactly (default: yes for jobs scheduled without an API key, no for API-key clients)"),
  callbackUrl: z
    .url({ protocol: /^https?$/, error: 'an http:// or https:// URL' })
    .optional()
    .describe("WORKCELL_CALLBACK_URL: where every job that gives no callback_url of its own sends its lifecycle hooks (a signed POST on each status change); may be a private address (default: none)"),
  callbackSecret: z
    .string()
    .regex(webhookSecretPattern, 'whsec_ followed by base64 of at least 16 random bytes, e.g. whsec_$(openssl rand -base64 32)')
    .optional()
    .describe('WORKCELL_CALLBACK_SECRET: the key that signs lifecycle hooks (Standard Webhooks: "whsec_" + base64); hooks need it, and jobs may give a callback_url only when it is set (default: none)'),
  callbackAllowPrivate: allowList('IP:port or host:port entries')
    .describe("WORKCELL_CALLBACK_ALLOW_PRIVATE: private, loopback or link-local destinations a job's callback_url may reach, each listed exactly as in WORKCELL_NETWORK_ALLOW (the IP with its port, or the name with its port); any other non-public address is refused (default: none)"),
  callbackMaxAttempts: integer(1, 100).default(12).describe('WORKCELL_CALLBACK_MAX_ATTEMPTS: attempts to deliver one hook before giving up (network errors, timeouts, 5xx and 429 are retried), default 12'),
  callbackRetryBaseMs: integer(1, 3_600_000).default(2000).describe('WORKCELL_CALLBACK_RETRY_BASE_MS: delay before the second attempt, doubled for each next one (with jitter, at most 1 h), default 2000'),
  callbackTimeoutMs: integer(100, 120_000).default(10_000).describe('WORKCELL_CALLBACK_TIMEOUT_MS: longest one delivery attempt may take, default 10000'),
  retentionDays: z.coerce.number().positive().max(36_500).optional().describe('WORKCELL_RETENTION_DAYS: finished jobs (row, directory, zip) are deleted this many days after they ended, checked every hour; running and pending jobs never (default: kept)'),
  maxBodyBytes: integer(1024, 1 << 30).default(1 << 20).describe('WORKCELL_MAX_BODY_BYTES: largest request body'),
  filesMaxBytes: integer(1, 2 ** 50).default(256 << 20).describe("WORKCELL_FILES_MAX_BYTES: largest body of PUT /jobs/:id/files/<path> (streamed to the workspace, never held in memory; the job's disk_mb bounds it too), default 256 MiB"),
  uploadMaxBytes: integer(1, 2 ** 40).default(1 << 30).describe("WORKCELL_UPLOAD_MAX_BYTES: most bytes a multipart POST /schedule may place in the workspace (files and unpacked archive together; the job's disk_mb bounds it too), default 1 GiB"),
  uploadMaxFiles: integer(1, 10_000_000).default(100_000).describe('WORKCELL_UPLOAD_MAX_FILES: most entries (files, directories, symlinks) an upload may place in the workspace, default 100000'),
  uploadMaxFileBytes: integer(1, 2 ** 40).default(256 << 20).describe('WORKCELL_UPLOAD_MAX_FILE_BYTES: largest single file an upload may place in the workspace, default 256 MiB'),
  gitAllow: allowList('host, host:port, *.domain or IP entries')
    .describe("WORKCELL_GIT_ALLOW: hosts the server may clone git inputs from (inputs.git), comma-separated, as WORKCELL_NETWORK_ALLOW; the clone may also reach the job's network.allow and WORKCELL_NETWORK_ALLOW, and the sandbox never gets this list (default: none)"),
  gitCredentials: z.string().min(1).optional().describe('WORKCELL_GIT_CREDENTIALS: a JSON file of credentials for private git remotes, {"hosts": {"<host[:port]>": {"username", "token"}}, "keys": {"<API key id>": {"<host[:port]>": {...}}}}; read at each clone, used by the host only, never put in a sandbox (default: none)'),
  gitTimeoutS: integer(1, 24 * 3600).default(600).describe("WORKCELL_GIT_TIMEOUT_S: longest a git input's clone may take, seconds, default 600"),
  leaseMs: integer(1000, 3_600_000).default(30_000).describe('WORKCELL_LEASE_MS: a worker that misses heartbeats this long loses its job'),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info').describe('WORKCELL_LOG_LEVEL: how much the server logs (JSON lines on stderr): fatal, error, warn, info (default), debug, trace or silent'),
});

export type Config = z.infer<typeof configSchema>;

const envNames: Record<keyof Config, string> = {
  dataDir: 'WORKCELL_DATA_DIR',
  databaseUrl: 'WORKCELL_DATABASE_URL',
  host: 'WORKCELL_HOST',
  port: 'WORKCELL_PORT',
  internalHost: 'WORKCELL_INTERNAL_HOST',
  internalPort: 'WORKCELL_INTERNAL_PORT',
  internalUrl: 'WORKCELL_INTERNAL_URL',
  publicUrl: 'WORKCELL_PUBLIC_URL',
  allowedHosts: 'WORKCELL_ALLOWED_HOSTS',
  sandboxUrl: 'WORKCELL_SANDBOX_URL',
  concurrency: 'WORKCELL_CONCURRENCY',
  poolSize: 'WORKCELL_POOL_SIZE',
  model: 'WORKCELL_MODEL',
  openaiCompatibleBaseUrl: 'WORKCELL_OPENAI_COMPATIBLE_BASE_URL',
  openaiCompatibleApiKey: 'WORKCELL_OPENAI_COMPATIBLE_API_KEY',
  modelStream: 'WORKCELL_MODEL_STREAM',
  modelMaxRetries: 'WORKCELL_MODEL_MAX_RETRIES',
  modelRetryBaseMs: 'WORKCELL_MODEL_RETRY_BASE_MS',
  modelVision: 'WORKCELL_MODEL_VISION',
  contextWindow: 'WORKCELL_CONTEXT_WINDOW',
  embeddingModel: 'WORKCELL_EMBEDDING_MODEL',
  maxAttempts: 'WORKCELL_MAX_ATTEMPTS',
  scriptDir: 'WORKCELL_SCRIPT_DIR',
  runtime: 'WORKCELL_RUNTIME',
  runtimeOrder: 'WORKCELL_RUNTIME_ORDER',
  dockerImage: 'WORKCELL_DOCKER_IMAGE',
  gvisorRuntime: 'WORKCELL_GVISOR_RUNTIME',
  microvmVmm: 'WORKCELL_MICROVM_VMM',
  microvmAccel: 'WORKCELL_MICROVM_ACCEL',
  microvmKernelDir: 'WORKCELL_MICROVM_KERNEL_DIR',
  imageDir: 'WORKCELL_IMAGE_DIR',
  runDir: 'WORKCELL_RUN_DIR',
  sandboxUser: 'WORKCELL_SANDBOX_USER',
  debianMirror: 'WORKCELL_DEBIAN_MIRROR',
  wallTimeS: 'WORKCELL_WALL_TIME_S',
  maxSteps: 'WORKCELL_MAX_STEPS',
  cpus: 'WORKCELL_CPUS',
  memoryMb: 'WORKCELL_MEMORY_MB',
  pids: 'WORKCELL_PIDS',
  diskMb: 'WORKCELL_DISK_MB',
  idleTimeS: 'WORKCELL_IDLE_TIME_S',
  wallTimeMaxS: 'WORKCELL_WALL_TIME_MAX_S',
  stepsMax: 'WORKCELL_STEPS_MAX',
  idleTimeMaxS: 'WORKCELL_IDLE_TIME_MAX_S',
  sandboxLogMb: 'WORKCELL_SANDBOX_LOG_MB',
  auditLogMb: 'WORKCELL_AUDIT_LOG_MB',
  contextMb: 'WORKCELL_CONTEXT_MB',
  unsafeNoLimits: 'WORKCELL_UNSAFE_NO_LIMITS',
  diskLimit: 'WORKCELL_DISK_LIMIT',
  cgroupParent: 'WORKCELL_CGROUP_PARENT',
  networkAllow: 'WORKCELL_NETWORK_ALLOW',
  networkJobPrivate: 'WORKCELL_NETWORK_JOB_PRIVATE',
  callbackUrl: 'WORKCELL_CALLBACK_URL',
  callbackSecret: 'WORKCELL_CALLBACK_SECRET',
  callbackAllowPrivate: 'WORKCELL_CALLBACK_ALLOW_PRIVATE',
  callbackMaxAttempts: 'WORKCELL_CALLBACK_MAX_ATTEMPTS',
  callbackRetryBaseMs: 'WORKCELL_CALLBACK_RETRY_BASE_MS',
  callbackTimeoutMs: 'WORKCELL_CALLBACK_TIMEOUT_MS',
  retentionDays: 'WORKCELL_RETENTION_DAYS',
  maxBodyBytes: 'WORKCELL_MAX_BODY_BYTES',
  filesMaxBytes: 'WORKCELL_FILES_MAX_BYTES',
  uploadMaxBytes: 'WORKCELL_UPLOAD_MAX_BYTES',
  uploadMaxFiles: 'WORKCELL_UPLOAD_MAX_FILES',
  uploadMaxFileBytes: 'WORKCELL_UPLOAD_MAX_FILE_BYTES',
  gitAllow: 'WORKCELL_GIT_ALLOW',
  gitCredentials: 'WORKCELL_GIT_CREDENTIALS',
  gitTimeoutS: 'WORKCELL_GIT_TIMEOUT_S',
  leaseMs: 'WORKCELL_LEASE_MS',
  logLevel: 'WORKCELL_LOG_LEVEL',
};

/** Parses the configuration from an environment and explicit overrides (CLI flags). Throws with every bad field. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env, overrides: Partial<Config> = {}): Config {
  const raw: Record<string, unknown> = {};
  for (const [key, name] of Object.entries(envNames)) {
    const value = env[name];
    if (value !== undefined && value !== '') raw[key] = value;
  }
  for (const [key, value] of Object.entries(overrides)) if (value !== undefined) raw[key] = value;
  const parsed = configSchema
    .superRefine((config, context) => {
      // A default above its maximum would make every job that takes the default invalid.
      for (const [value, max] of [['wallTimeS', 'wallTimeMaxS'], ['maxSteps', 'stepsMax'], ['idleTimeS', 'idleTimeMaxS']] as const) {
        if (config[value] > config[max]) context.addIssue({ code: 'custom', path: [value], message: `${config[value]} is above ${envNames[max]} (${config[max]}): raise that, or lower this` });
      }
      // Hooks are never sent unsigned.
      if (config.callbackUrl !== undefined && config.callbackSecret === undefined) context.addIssue({ code: 'custom', path: ['callbackUrl'], message: 'needs WORKCELL_CALLBACK_SECRET to sign the hooks: set it to whsec_$(openssl rand -base64 32)' });
    })
    .safeParse(raw);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => {
      const key = issue.path[0] as keyof Config | undefined;
      return `${key === undefined ? '' : `${envNames[key]}: `}${issue.message}`;
    });
    throw new Error(`invalid configuration: ${problems.join('; ')}`);
  }
  return parsed.data;
}

export function describeConfig(): Array<{ env: string; description: string }> {
  return Object.entries(configSchema.shape).map(([key, schema]) => ({
    env: envNames[key as keyof Config],
    description: (schema.description ?? '').replace(/^[A-Z_]+: /, ''),
  }));
}
