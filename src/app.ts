// The application, wired in one place: the job store, the event bus, the API, the worker (scheduler, job runner,
// watchdog, internal route), lifecycle hooks and retention, from one Config and a role. `workcell serve` and
// `workcell worker` start it (cli/serve.ts); tests and benchmarks start it too.
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { buildServer } from './api/server.ts';
import { isLoopbackName } from './api/origins.ts';
import { loadConfig, type Config } from './config.ts';
import { createLogger } from './util/logger.ts';
import { JobService } from './jobs/job-service.ts';
import { openEventBus } from './bus/index.ts';
import { queueTopic, type EventBus } from './bus/types.ts';
import { openStore } from './store/index.ts';
import type { Store } from './store/types.ts';
import { workspaceDiskCheck } from './jobs/workspace-disk.ts';
import { createJobRunner } from './jobs/run-job.ts';
import { Scheduler } from './jobs/scheduler.ts';
import { Watchdog } from './jobs/watchdog.ts';
import { RetentionSweeper } from './jobs/retention.ts';
import { CallbackPolicy } from './jobs/webhooks/callback-url.ts';
import { WebhookSender } from './jobs/webhooks/webhook-sender.ts';
import { createRuntimes, startWarmPool } from './runtimes/index.ts';
import type { WarmPool } from './runtimes/pool/warm-pool.ts';
import { internalSecretName, workerIdWithAddress } from './jobs/remote/internal-auth.ts';
import { startInternalServer } from './jobs/remote/internal-server.ts';
import { resolveModel } from './agent/models/resolve-model.ts';
import { openWorkspaceTransfer } from './transfer/index.ts';
import { mkdtemp, rm } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';

export interface App {
  config: Config;
  store: Store;
  server: FastifyInstance;
  jobs: JobService;
  scheduler: Scheduler;
  /** The API's base URL once listening ('' when it does not: a worker, or listen: false). */
  url: string;
  /** This process's worker (undefined for an API without one). */
  workerId: string | undefined;
  /** Where the worker's internal route listens (with a Postgres store only). */
  internalUrl: string | undefined;
  /** The worker's warm pool (WORKCELL_POOL_SIZE), if it has one. */
  pool: WarmPool | undefined;
  close(): Promise<void>;
}

/**
 * Without API keys the server is for local use and must not be reachable from other machines. On another address
 * it must also know the names clients reach it by (WORKCELL_PUBLIC_URL or WORKCELL_ALLOWED_HOSTS): it answers no
 * other Host (origins.ts), and without those it would refuse every request from elsewhere.
 */
export function assertListenAllowed(config: Pick<Config, 'host' | 'publicUrl' | 'allowedHosts'>, hasApiKeys: boolean): void {
  if (isLoopbackName(config.host)) return;
  if (!hasApiKeys) {
    throw new Error(`refusing to listen on ${config.host}: without API keys the server only listens on loopback (127.0.0.1 or ::1); create one first with \`workcell keys create --name <who>\``);
  }
  if (config.publicUrl === undefined && config.allowedHosts.length === 0) {
    throw new Error(`refusing to listen on ${config.host} without knowing the names clients use: set WORKCELL_PUBLIC_URL (e.g. https://workcell.example.com) or WORKCELL_ALLOWED_HOSTS; requests for any other Host are refused`);
  }
}

/**
 * What a process does: `all` (the API and a worker: `workcell serve`), `api` (`serve --no-worker`: answers clients,
 * runs no job) or `worker` (`workcell worker`: claims and runs jobs, with no public API). Several processes share one
 * Postgres store (WORKCELL_DATABASE_URL) and one data dir; a worker then opens its internal route, through which the
 * API processes reach the sandboxes it holds.
 */
export type Role = 'all' | 'api' | 'worker';

/** Builds and starts everything; `listen: false` builds the API without opening a port (tests use inject()). */
export async function startApp(config: Config, logger: Logger, options: { listen?: boolean; role?: Role } = {}): Promise<App> {
  const role = options.role ?? 'all';
  const api = role !== 'worker';
  const worker = role !== 'api';
  if (role !== 'all' && config.databaseUrl === undefined) {
    throw new Error(`refusing to start ${role === 'api' ? 'an API without a worker' : 'a worker without an API'}: the two find each other through a shared Postgres store, set WORKCELL_DATABASE_URL (SQLite serves one process: run \`workcell serve\`)`);
  }
  // Every job's workspace is held to its disk_mb (a secure default): a host that cannot do it is refused here, with
  // what to do, rather than failing each job at its start (a container without loop devices looks like that). Only
  // where jobs run: an API replica mounts no workspace, and its container need not be allowed to mount.
  if (worker) {
    const disk = await workspaceDiskCheck(config, config.dataDir);
    if (!disk.ok) throw new Error(`refusing to start: ${disk.detail}`);
    logger.info({ diskLimit: config.diskLimit }, `workspace disk limits: ${disk.detail}`);
  }
  const store = await openStore(config);
  let bus: EventBus;
  const transfer = openWorkspaceTransfer(config, store.keys);
  try {
    if (api) assertListenAllowed(config, await store.keys.hasKeys());
    await transfer.verify();
    bus = await openEventBus(config, logger.child({ component: 'bus' }));
  } catch (error) {
    await store.close();
    throw error;
  }
  const callbackPolicy = new CallbackPolicy({ allowPrivate: config.callbackAllowPrivate });
  const jobs = new JobService({ config, store: store.jobs, bus, logger, callbackPolicy, validateModel: (spec) => void resolveModel(spec, config, { fromJob: true }) });
  // Processes on one Postgres reach each other's sandboxes through workers' internal routes (src/jobs/remote).
  const internalSecret = config.databaseUrl === undefined ? undefined : await store.keys.serverSecret(internalSecretName);
  const internal =
    worker && internalSecret !== undefined
      ? await startInternalServer({ host: config.internalHost, port: config.internalPort, secret: internalSecret, liveSandbox: (jobId) => jobs.liveSandbox(jobId), logger: logger.child({ component: 'internal-route' }) })
      : undefined;
  const workerId = workerIdWithAddress(`${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`, internal && (config.internalUrl ?? internal.url));
  if (internalSecret !== undefined) jobs.attachInternalRoute({ secret: internalSecret, workerId: worker ? workerId : undefined });
  const runtimes = createRuntimes(config, logger);
  // Started after the orphans of dead servers are reaped (below), so that those never race the pool's new sandboxes.
  let pool: WarmPool | undefined;
  const scheduler = new Scheduler({
    store: store.jobs,
    workerId,
    concurrency: config.concurrency,
    leaseMs: config.leaseMs,
    logger: logger.child({ workerId }),
    run: createJobRunner({ config, jobs, transfer, runtimes, logger, workerId }),
    onExpired: (job) => jobs.recoverExpired(job),
  });
  // New jobs are claimed at once and cancels stop jobs at once, whichever process took the request.
  const unsubscribeQueue = worker ? bus.subscribe(queueTopic, (notice) => (notice.type === 'cancel' ? scheduler.checkNow() : scheduler.wake())) : () => {};
  const watchdog = new Watchdog({
    getJob: (jobId) => store.jobs.get(jobId),
    bus: jobs.bus,
    runningJobIds: () => scheduler.runningJobIds,
    stopJob: (jobId, reason) => scheduler.stopJob(jobId, reason),
    liveSandboxes: () => jobs.liveSandboxes(),
    forgetSandbox: (jobId) => jobs.setLiveSandbox(jobId, undefined),
    runtimes: [...runtimes.values()],
    defaultIdleTimeS: config.idleTimeS,
    logger: logger.child({ workerId, component: 'watchdog' }),
  });
  // What sandboxes of servers that died left behind goes before this server starts its own.
  if (worker) await watchdog.reapOrphans();
  const server = await buildServer({ config, jobs, keys: store.keys, logger });
  let url = '';
  if (api && (options.listen ?? true)) {
    url = await server.listen({ host: config.host, port: config.port });
  } else {
    await server.ready();
  }
  // Lifecycle hooks: the store's triggers fill the outbox in the transaction of each status change; this sends it
  // (from every process: deliveries are leased, each is sent by one).
  const webhooks = new WebhookSender({
    outbox: store.outbox,
    policy: callbackPolicy,
    serverUrl: config.callbackUrl,
    secret: config.callbackSecret,
    maxAttempts: config.callbackMaxAttempts,
    retryBaseMs: config.callbackRetryBaseMs,
    timeoutMs: config.callbackTimeoutMs,
    baseUrl: () => (config.publicUrl ?? url).replace(/\/$/, ''),
    workerId,
    logger: logger.child({ component: 'webhooks' }),
  });
  const retention =
    config.retentionDays === undefined
      ? undefined
      : new RetentionSweeper({
          retentionDays: config.retentionDays,
          finishedBefore: (cutoff, limit) => store.jobs.finishedBefore(cutoff, limit),
          deleteJob: (job) => jobs.deleteFinished(job),
          logger: logger.child({ component: 'retention' }),
        });
  if (worker) {
    pool = startWarmPool(runtimes, config, logger);
    scheduler.start();
    watchdog.start();
  }
  webhooks.start();
  retention?.start();
  return {
    config,
    store,
    server,
    jobs,
    scheduler,
    url,
    workerId: worker ? workerId : undefined,
    internalUrl: internal?.url,
    pool,
    async close() {
      // Workers first (running jobs are put back for another server to resume), then the API, whose open event
      // streams are cut (forceCloseConnections) rather than waited for.
      unsubscribeQueue();
      watchdog.stop();
      await retention?.stop();
      await scheduler.stop();
      await pool?.close();
      await internal?.close();
      await server.close();
      await webhooks.stop();
      callbackPolicy.close();
      await bus.close();
      await store.close();
    },
  };
}

/** The OpenAPI document, generated from the route schemas without starting anything. */
export async function openApiDocument(): Promise<unknown> {
  const dataDir = await mkdtemp(join(tmpdir(), 'workcell-openapi-'));
  const config = loadConfig({}, { dataDir });
  const logger = createLogger('silent');
  const store = await openStore(config);
  try {
    const server = await buildServer({ config, jobs: new JobService({ config, store: store.jobs, logger }), keys: store.keys, logger });
    await server.ready();
    const document = server.swagger();
    await server.close();
    return document;
  } finally {
    await store.close();
    await rm(dataDir, { recursive: true, force: true });
  }
}
