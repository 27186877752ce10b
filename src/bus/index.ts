// Opens the event bus the configuration names: Postgres LISTEN/NOTIFY when WORKCELL_DATABASE_URL is set (every API
// replica hears every worker), else the in-process bus (one host, one process).
import type { Logger } from 'pino';
import type { Config } from '../config.ts';
import { LocalEventBus } from './local/local-bus.ts';
import { PostgresEventBus } from './postgres/postgres-bus.ts';
import type { EventBus } from './types.ts';

export async function openEventBus(config: Pick<Config, 'databaseUrl'>, logger: Logger): Promise<EventBus> {
  if (config.databaseUrl === undefined) return new LocalEventBus();
  // While Postgres is away every publish fails: one warning per 10 s says so.
  const onError = quietWarning(logger, 'event bus: Postgres connection trouble (retrying; followers read their logs again once it is back)', 10_000);
  return PostgresEventBus.open(config.databaseUrl, { onError });
}

/** Logs the first error at once, then at most one per `intervalMs`, with how many were left out meanwhile. */
export function quietWarning(logger: Pick<Logger, 'warn'>, message: string, intervalMs: number, now = Date.now): (error: Error) => void {
  let quietUntil = 0;
  let unlogged = 0;
  return (error) => {
    if (now() < quietUntil) return void unlogged++;
    logger.warn({ err: error, unlogged }, message);
    quietUntil = now() + intervalMs;
    unlogged = 0;
  };
}
