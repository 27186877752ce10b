// Runs one claimed job: resolve its model and runtime, start its sandbox, run the agent loop in it, and end the
// job whatever happens (the sandbox is destroyed first, then the workspace is zipped and the final status
// recorded). Stops early on cancel, wall-time limit, shutdown or a lost lease (the AbortSignal's JobStop reason).
import type { Logger } from 'pino';
import { runAgent } from '../agent/loop.ts';
import { resolveModel } from '../agent/models/resolve-model.ts';
import type { Config } from '../config.ts';
import { errorMessage, WorkcellError } from '../errors.ts';
import { resolveRuntime, type Runtimes } from '../runtimes/index.ts';
import type { Sandbox } from '../runtimes/types.ts';
import { fileLogger } from '../util/logger.ts';
import { EventLog, type EventSink } from './event-log.ts';
import type { JobOutcome, JobService } from './job-service.ts';
import type { Job } from './job-store.ts';
import { JobStop, type JobRunner } from './scheduler.ts';

export interface RunJobDeps {
  config: Config;
  jobs: JobService;
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
  const paths = jobs.paths(job.id);
  const log = fileLogger(config.logLevel, `${paths.logs}/orchestrator.log`, { jobId: job.id, workerId });
  const events = new EventLog(job.id, paths.contextDb);
  const wallTime = new AbortController();
  const wallTimer = setTimeout(
    () => wallTime.abort(new JobStop('wall-time', `wall time limit (${job.limits.wall_time_s} s) exceeded`)),
    job.limits.wall_time_s * 1000,
  );
  const stop = AbortSignal.any([signal, wallTime.signal]);
  let sandbox: Sandbox | undefined;
  let outcome: JobOutcome | undefined;
  let step = 0;
  // Keep the job row's progress (steps, tokens) in step with the model turns as they are recorded.
  const sink: EventSink = {
    append(type, eventStep, data) {
      step = Math.max(step, eventStep);
      const event = events.append(type, eventStep, data);
      if (type === 'model-turn') {
        const usage = (data.usage ?? {}) as { input_tokens?: number; output_tokens?: number };
        const current = jobs.store.get(job.id);
        jobs.store.update(job.id, {
          steps: eventStep,
          input_tokens: (current?.input_tokens ?? 0) + (usage.input_tokens ?? 0),
          output_tokens: (current?.output_tokens ?? 0) + (usage.output_tokens ?? 0),
        });
      }
      return event;
    },
  };

  try {
    sink.append('job-status', 0, { status: 'running', attempt: job.attempts, worker: workerId });
    const model = resolveModel(job.model ?? config.model, config, { fromJob: job.model !== null });
    jobs.store.update(job.id, { model_used: `${model.provider}:${model.modelId}` });
    const runtime = resolveRuntime(job.runtime, deps.runtimes);
    const started = performance.now();
    const created = await runtime.create({ jobId: job.id, workspaceDir: paths.workspace, logDir: paths.logs }, stop);
    sandbox = created;
    const readyMs = Math.round(performance.now() - started);
    jobs.store.update(job.id, { runtime_used: created.runtime, isolation: created.isolation });
    sink.append('sandbox-ready', 0, { runtime: created.runtime, sandbox_id: created.id, isolation: created.isolation, ready_ms: readyMs });
    log.logger.info({ sandboxId: created.id, readyMs }, 'sandbox ready');

    const result = await runAgent({
      jobId: job.id,
      task: job.task,
      model: model.model,
      client: created.client,
      events: sink,
      maxSteps: job.limits.max_steps,
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
      await sandbox.destroy().catch((error: unknown) => log.logger.error({ err: error }, 'destroying the sandbox failed'));
      sandbox.client.close();
    }
    events.close();
    if (outcome) await jobs.endJob(jobs.store.get(job.id) ?? job, workerId, outcome, step);
    log.logger.info({ status: outcome?.status ?? 'abandoned', error: outcome?.error }, 'job ended');
    log.close();
  }
}
