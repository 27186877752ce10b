// Runs one claimed job: resolve its model and runtime, start its sandbox, run the agent loop in it, and end the
// job whatever happens (the sandbox is destroyed first, then the workspace is zipped and the final status
// recorded). Stops early on cancel, wall-time limit, a full context store, shutdown or a lost lease (the
// AbortSignal's JobStop reason).
import type { Logger } from 'pino';
import type { ContextLimitReached } from '../agent/context/context-budget.ts';
import { ContextStore } from '../agent/context/context-store.ts';
import { resolveEmbedder } from '../agent/context/embeddings.ts';
import { jobImageStore } from '../agent/context/images.ts';
import { effectiveContextWindow, modelInfo } from '../agent/context/model-info.ts';
import { estimateCounter, tiktokenCounter } from '../agent/context/tokens.ts';
import { runAgent } from '../agent/loop.ts';
import type { LimitWatch } from '../agent/tools/run-tool.ts';
import { resolveModel } from '../agent/models/resolve-model.ts';
import { ScriptModel } from '../agent/models/script-model.ts';
import type { Config } from '../config.ts';
import { errorMessage, WorkcellError } from '../errors.ts';
import { resolveRuntime, type Runtimes } from '../runtimes/index.ts';
import type { Sandbox } from '../runtimes/types.ts';
import { formatBytes } from '../util/bytes.ts';
import { fileLogger } from '../util/logger.ts';
import { AuditLog } from './audit-log.ts';
import type { EventSink } from './event-log.ts';
import { cloneGitInput, gitCloneAllowRules } from './inputs/git-clone.ts';
import type { JobOutcome, JobService } from './job-service.ts';
import { hostFileCaps, sandboxLimits, type HostFileLimit } from './job-limits.ts';
import { sandboxAllowRules } from './job-network.ts';
import type { JobPaths } from './job-paths.ts';
import type { Job } from '../store/types.ts';
import { hasWorkspaceBaseline, recordWorkspaceBaseline } from './workspace-baseline.ts';
import { attachWorkspaceDisk, describeWorkspaceDisk, noDiskLimitHint, releaseWorkspaceDisk, workspaceDiskUnavailable } from './workspace-disk.ts';
import { JobStop, type JobRunner } from './scheduler.ts';
import type { WorkspaceTransfer } from '../transfer/types.ts';

export interface RunJobDeps {
  config: Config;
  jobs: JobService;
  /** Brings a claimed job's files to this worker and back (src/transfer). */
  transfer: WorkspaceTransfer;
  runtimes: Runtimes;
  logger: Logger;
  workerId: string;
}

export function createJobRunner(deps: RunJobDeps): JobRunner {
  return (job, signal) => runJob(deps, job, signal);
}

/** Maps why a job stopped to how it ends; undefined when this worker must not touch it (lease lost). */
function outcomeOfStop(reason: unknown): JobOutcome | undefined {
  if (!(reason instanceof JobStop)) return { status: 'error', error: `stopped: ${errorMessage(reason)}` };
  switch (reason.kind) {
    case 'cancel':
      return { status: 'cancelled', error: reason.message };
    case 'lease-lost':
      return undefined;
    default:
      return { status: 'error', error: reason.message };
  }
}

export async function runJob(deps: RunJobDeps, job: Job, signal: AbortSignal): Promise<void> {
  const { config, jobs, workerId } = deps;
  let paths: JobPaths;
  try {
    paths = await deps.transfer.checkout(job);
  } catch (error) {
    // Without its files the job can neither run nor be resumed anywhere: it ends, in the store only.
    deps.logger.error({ jobId: job.id, workerId, err: error }, `the job's files cannot be had: ${errorMessage(error)}`);
    await jobs.store.finish(job.id, workerId, { status: 'error', error: errorMessage(error) });
    return;
  }
  const log = fileLogger(config.logLevel, `${paths.logs}/orchestrator.log`, { jobId: job.id, workerId });
  const events = jobs.openEvents(job);
  const wallTime = new AbortController();
  // Wall time counts from the run's first start (started_at is the current run's): a resumed run has only what is left
  // of it, a job continued by a message gets it whole again.
  const elapsedMs = job.started_at === null ? 0 : Math.max(0, Date.now() - Date.parse(job.started_at));
  const wallTimer = setTimeout(
    () => wallTime.abort(new JobStop('wall-time', `wall time limit (${job.limits.wall_time_s} s) exceeded`)),
    Math.max(0, job.limits.wall_time_s * 1000 - elapsedMs),
  );
  // A full context store ends the job, as its wall time does.
  const limitStop = new AbortController();
  const stop = AbortSignal.any([signal, wallTime.signal, limitStop.signal]);
  let sandbox: Sandbox | undefined;
  let outcome: JobOutcome | undefined;
  let step = 0;
  // The context store over the same database, once the model (and so its tokenizer) is known.
  let context: ContextStore | undefined;
  // The job row's progress (steps, tokens) follows the model turns (and summary calls) as they are recorded. This
  // worker holds the job, so the totals are counted here and written in order (`recording`), each write whole.
  const tokens = { input_tokens: job.input_tokens, output_tokens: job.output_tokens };
  let recording: Promise<void> = Promise.resolve();
  const record = (write: () => Promise<void>) => {
    recording = recording.then(write).catch((error: unknown) => log.logger.error({ err: error }, 'recording the job\'s progress failed'));
  };
  const sink: EventSink = {
    append(type, eventStep, data) {
      step = Math.max(step, eventStep);
      const event = (context ?? events).append(type, eventStep, data);
      if (type === 'model-turn' || (type === 'context-summary' && data.usage !== undefined)) {
        const usage = (data.usage ?? {}) as { input_tokens?: number; output_tokens?: number };
        tokens.input_tokens += usage.input_tokens ?? 0;
        tokens.output_tokens += usage.output_tokens ?? 0;
        const fields = { ...(type === 'model-turn' ? { steps: eventStep } : {}), ...tokens };
        record(() => jobs.store.update(job.id, fields));
      }
      return event;
    },
  };
  // The caps on the files the sandbox can grow on the host: each one reached is said in an event and the job's usage.
  const caps = hostFileCaps(config, job.limits);
  const reportLimit = (limit: HostFileLimit, message: string) => {
    log.logger.warn({ limit }, message);
    record(() => jobs.store.recordLimitReached(job.id, limit));
    try {
      sink.append('log', step, { level: 'warn', limit, message });
    } catch (error) {
      log.logger.error({ err: error, limit }, 'recording a limit the job reached failed');
    }
  };
  // File operations and proxied connections, each with the step it belongs to (the step the sink last saw).
  const audit = new AuditLog(paths.audit, { currentStep: () => step, logger: log.logger, maxBytes: caps.audit_log_mb, onLimit: (message) => reportLimit('audit_log_mb', message) });
  const sandboxLog = {
    maxBytes: caps.sandbox_log_mb,
    onLimit: () => reportLimit('sandbox_log_mb', `logs/sandbox.log reached its limit of ${formatBytes(caps.sandbox_log_mb)} (limits.sandbox_log_mb): what the sandbox prints from here on is dropped`),
  };

  try {
    sink.append('job-status', 0, { status: 'running', attempt: job.attempts, worker: workerId, run: job.run, ...(job.attempts > 1 ? { resumed: true } : {}) });
    const model = resolveModel(job.model ?? config.model, config, { fromJob: job.model !== null });
    record(() => jobs.store.update(job.id, { model_used: `${model.provider}:${model.modelId}` }));
    const info = modelInfo(model.provider, model.modelId);
    const window = effectiveContextWindow(info, job.context_window, config.contextWindow);
    const counter = info.encoding === undefined ? estimateCounter() : await tiktokenCounter(info.encoding);
    const contextLimit = {
      maxBytes: caps.context_mb,
      onLimit: ({ kind, message }: ContextLimitReached) => {
        reportLimit('context_mb', message);
        if (kind === 'full') limitStop.abort(new JobStop('limit', message));
      },
    };
    context = new ContextStore(events, { counter, embedder: resolveEmbedder(config), logger: log.logger, limit: contextLimit });
    // A script replays its trajectory from where the job stands (a resumed or continued job goes on from its next turn).
    if (model.model instanceof ScriptModel) model.model.startAt(context.lastStep());
    // A job continued by a message: its run starts after the ended one (jobs/job-runs.ts).
    const run = job.run > 1 ? await jobs.store.getRun(job.id, job.run) : undefined;
    const runtime = await resolveRuntime(job.runtime, deps.runtimes);
    const limits = sandboxLimits(config, job.limits);
    // A git input is cloned on the job's first start, onto the job's disk (so it counts against disk_mb), and recorded
    // as its baseline with the commit.
    const clonedOnDisk = await cloneGitInputOnce({ config, job, paths, diskMb: limits.diskMb, sink, audit, logger: log.logger, signal: stop });
    // What the workspace holds before any sandbox touches it, for GET /jobs/:id/diff; once recorded (by the inputs, or
    // an earlier start) this does nothing. The job runs without it if it fails: only its diff is lost.
    await recordWorkspaceBaseline(paths, { config, logger: log.logger, signal: stop }).catch((error: unknown) => {
      if (stop.aborted) throw error;
      log.logger.error({ err: error }, `recording the workspace's start failed (the job's diff will be unavailable): ${errorMessage(error)}`);
    });
    const started = performance.now();
    const workspaceDisk = clonedOnDisk === null ? await limitWorkspaceDisk(config, paths, limits.diskMb) : clonedOnDisk.disk;
    const workspaceDiskMb = workspaceDisk?.sizeMb;
    const network = { allow: sandboxAllowRules(config, job), onConnection: audit.network.bind(audit), currentStep: () => step };
    const created = await runtime.create({ jobId: job.id, workspaceDir: paths.workspace, logDir: paths.logs, log: sandboxLog, limits, network }, stop);
    sandbox = created;
    jobs.setLiveSandbox(job.id, created);
    const readyMs = Math.round(performance.now() - started);
    const isolation = `${created.isolation}, ${workspaceDisk === undefined ? 'workspace disk NOT limited' : workspaceDisk.description}`;
    record(() => jobs.store.update(job.id, { runtime_used: created.runtime, isolation }));
    sink.append('sandbox-ready', 0, { runtime: created.runtime, sandbox_id: created.id, isolation, ready_ms: readyMs, pooled: created.pooled === true });
    log.logger.info({ sandboxId: created.id, readyMs }, 'sandbox ready');

    const result = await runAgent({
      jobId: job.id,
      task: job.task,
      model: model.model,
      client: created.client,
      limits: limitWatch(created, workspaceDiskMb),
      onFileOperation: audit.file.bind(audit),
      networkAllow: network.allow.map((rule) => rule.pattern),
      events: sink,
      context,
      images: context.limitImages(jobImageStore(paths.root)),
      modelInfo: { ...info, contextWindow: window, vision: config.modelVision ?? info.vision ?? false },
      summarize: model.provider !== 'script',
      maxSteps: job.limits.max_steps,
      runStart: run === undefined ? undefined : { seq: run.start_seq, step: run.steps_before },
      stream: config.modelStream,
      retry: { maxRetries: config.modelMaxRetries, baseMs: config.modelRetryBaseMs },
      signal: stop,
      logger: log.logger,
    });
    outcome = result.status === 'complete' ? { status: 'complete', summary: result.summary } : { status: 'error', error: result.error };
  } catch (error) {
    if (stop.aborted) outcome = outcomeOfStop(stop.reason);
    else if (error instanceof WorkcellError) outcome = { status: 'error', error: error.message };
    else {
      log.logger.error({ err: error }, 'job failed');
      outcome = { status: 'error', error: `internal error: ${errorMessage(error)}` };
    }
  } finally {
    clearTimeout(wallTimer);
    if (sandbox) {
      jobs.setLiveSandbox(job.id, undefined);
      await sandbox.destroy().catch((error: unknown) => log.logger.error({ err: error }, 'destroying the sandbox failed'));
      sandbox.client.close();
      const usage = await sandbox.usage?.().catch(() => undefined);
      if (usage !== undefined) {
        const resources = {
          ...(usage.cpuSeconds === undefined ? {} : { cpu_seconds: Math.round(usage.cpuSeconds * 1000) / 1000 }),
          ...(usage.peakMemoryBytes === undefined ? {} : { peak_memory_mb: Math.round((usage.peakMemoryBytes / (1024 * 1024)) * 10) / 10 }),
        };
        record(() => jobs.store.recordResourceUsage(job.id, resources));
      }
    }
    // After the sandbox (and its egress proxy, which reports its last connections) is gone.
    audit.close();
    await context?.drain();
    events.close();
    await recording;
    await deps.transfer.checkin(job.id, paths).catch((error: unknown) => log.logger.error({ err: error }, `handing the job's files back failed: ${errorMessage(error)}`));
    // A server shutting down leaves its jobs to resume on the next start (while attempts remain), not ended.
    const shutdown = stop.aborted && stop.reason instanceof JobStop && stop.reason.kind === 'shutdown';
    if (outcome && shutdown && (await jobs.requeue((await jobs.store.get(job.id)) ?? job, workerId, 'the server shut down while the job was running'))) {
      outcome = undefined;
      // No mount outlives the server: the next start puts the workspace back on a disk of its own.
      await releaseWorkspaceDisk(paths).catch((error: unknown) => log.logger.error({ err: error }, 'releasing the workspace disk failed'));
    }
    if (outcome) await jobs.endJob(job, workerId, outcome, step);
    log.logger.info({ status: outcome?.status ?? 'abandoned', error: outcome?.error }, 'job ended');
    log.close();
  }
}

/**
 * The clone of the job's git input (jobs/inputs/git-clone.ts), on its first start only: a job with a baseline has been
 * cloned (a resumed or continued job keeps its workspace; it is never cloned again). The workspace goes on its disk
 * first, so the clone counts against disk_mb and the host's disk never holds more; then git clones into it, through an
 * egress proxy whose connections go to the job's audit log (`by: "git-clone"`), and the checkout is recorded as the
 * baseline with its commit. A sandbox never starts on a clone without its baseline: so a workspace with no baseline
 * holds nothing but what an interrupted clone left, and the clone may empty it. Returns the workspace's disk, or null
 * when there was nothing to clone. Throws (ending the job) with a message that says what failed.
 */
async function cloneGitInputOnce(context: {
  config: Config;
  job: Job;
  paths: JobPaths;
  diskMb: number;
  sink: EventSink;
  audit: AuditLog;
  logger: Logger;
  signal: AbortSignal;
}): Promise<{ disk: Awaited<ReturnType<typeof limitWorkspaceDisk>> } | null> {
  const { config, job, paths, sink, logger, signal } = context;
  const input = job.inputs.git;
  if (input === undefined || (await hasWorkspaceBaseline(paths.root))) return null;
  const disk = await limitWorkspaceDisk(config, paths, context.diskMb);
  const what = `${input.url}${input.ref === undefined ? '' : ` (${input.ref})`}${input.depth === undefined ? '' : `, depth ${input.depth}`}`;
  sink.append('log', 0, { level: 'info', input: 'git', message: `cloning ${what}` });
  logger.info({ url: input.url, ref: input.ref, depth: input.depth }, 'cloning the git input');
  const started = performance.now();
  const cloned = await cloneGitInput({
    input,
    workspace: paths.workspace,
    owner: job.owner,
    config,
    allow: gitCloneAllowRules(config, job),
    onConnection: (record) => context.audit.network(record, 'git-clone'),
    logger,
    signal,
  });
  const durationMs = Math.round(performance.now() - started);
  const origin = { url: cloned.url, ...(cloned.ref === undefined ? {} : { ref: cloned.ref }), commit: cloned.commit };
  logger.info({ ...origin, credential: cloned.credential, durationMs }, 'cloned the git input');
  try {
    await recordWorkspaceBaseline(paths, { config, git: origin, logger, signal });
  } catch (error) {
    if (signal.aborted) throw error;
    throw new WorkcellError('internal', `inputs.git: ${input.url} was cloned, but recording it as the workspace's start failed: ${errorMessage(error)}`);
  }
  sink.append('log', 0, { level: 'info', input: 'git', message: `cloned ${what} at ${cloned.commit} in ${durationMs} ms`, git: origin });
  return { disk };
}

/**
 * Puts the workspace on a disk of its own, of the job's disk limit, of the kind WORKCELL_DISK_LIMIT says (an ext4 image
 * on a loop device, or a tmpfs; jobs/workspace-disk.ts); endJob unmounts it after the zip. Returns its size and how
 * the isolation report says it, or undefined when the host cannot do it and the operator opted out of limits.
 */
async function limitWorkspaceDisk(config: Config, paths: JobPaths, diskMb: number): Promise<{ sizeMb: number; description: string } | undefined> {
  const problem = workspaceDiskUnavailable();
  if (problem === undefined) {
    await attachWorkspaceDisk(paths, diskMb, config.diskLimit);
    return { sizeMb: diskMb, description: describeWorkspaceDisk(config.diskLimit, diskMb) };
  }
  if (config.unsafeNoLimits) return undefined;
  throw new WorkcellError('runtime_unavailable', `cannot limit the workspace's disk: ${problem}; or ${noDiskLimitHint}`);
}

/** What the tool plumbing needs to tell the agent about limits it ran into; undefined when the sandbox has none. */
export function limitWatch(sandbox: Sandbox, workspaceDiskMb: number | undefined): LimitWatch | undefined {
  if (sandbox.limits === undefined || sandbox.limitCounters === undefined) return undefined;
  return {
    limits: { ...sandbox.limits, workspaceDiskMb },
    counters: () => sandbox.limitCounters!(),
    ...(sandbox.stopProcesses === undefined ? {} : { stopProcesses: () => sandbox.stopProcesses!() }),
  };
}
