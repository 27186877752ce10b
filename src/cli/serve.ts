// `workcell serve` (the API with an in-process worker), `serve --no-worker` (the API alone) and `workcell worker` (a
// worker alone): src/app.ts with a role, until SIGINT or SIGTERM.
import { startApp, type Role } from '../app.ts';
import { loadConfig, type Config } from '../config.ts';
import { createLogger } from '../util/logger.ts';

export async function serve(flags: Partial<Pick<Config, 'port' | 'host' | 'dataDir' | 'concurrency' | 'internalHost' | 'internalPort'>>, role: Role = 'all'): Promise<void> {
  const config = loadConfig(process.env, flags);
  const logger = createLogger(config.logLevel);
  const app = await startApp(config, logger, { role });
  logger.info({ role, url: app.url || null, internalUrl: app.internalUrl ?? null, workerId: app.workerId ?? null, dataDir: config.dataDir, store: app.store.kind, concurrency: config.concurrency, model: config.model ?? null }, 'workcell is up');
  process.stderr.write(role === 'worker' ? `workcell worker ${app.workerId ?? ''} running\n` : `workcell listening on ${app.url}${role === 'api' ? ' (API only: no worker)' : ''}\n`);
  // The server's own process gets the signals (`workcell` execs node; see scripts/install-command.sh): the first one
  // stops the workers (running jobs are put back for the next start) and the API, then exits; a second one exits at once.
  let stopping = false;
  const shutdown = (signal: NodeJS.Signals) => {
    if (stopping) {
      process.stderr.write(`workcell: ${signal} again: exiting without waiting for the shutdown to finish\n`);
      process.exit(1);
    }
    stopping = true;
    logger.info({ signal }, 'shutting down');
    process.stderr.write(`workcell: ${signal}: shutting down\n`);
    app.close().then(
      () => process.exit(0),
      (error: unknown) => {
        logger.error({ err: error }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', shutdown);
  process.on('SIGTERM', shutdown);
}
