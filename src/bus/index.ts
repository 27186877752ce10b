// Opens the event bus the configuration names: Postgres LISTEN/NOTIFY when WORKCELL_DATABASE_URL is set (every API
// replica hears every worker), else the in-process bus (one host, one process).
import type { Logger } from 'pino';
import type { Config } from '../config.ts';
import { LocalEventBus } from './local/local-bus.ts';
import { PostgresEventBus } from './postgres/postgres-bus.ts';
import type { EventBus } from './types.ts';

export async function openEventBus(config: Pick<Config, 'databaseUrl'>, logger: Logger): Promise<EventBus> {
  if (config.databaseUrl === undefined) return new LocalEventBus();
  return PostgresEventBus.open(config.databaseUrl, { onError: (error) => logger.warn({ err: error }, 'event bus: Postgres connection trouble (retrying)') });
}
