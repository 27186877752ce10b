// Opens the store the configuration names: Postgres when WORKCELL_DATABASE_URL is set (shared by every API replica
// and worker), else SQLite in the data dir (the default, for one host).
import type { Config } from '../config.ts';
import { openPostgresStore } from './postgres/index.ts';
import { openSqliteStore } from './sqlite/index.ts';
import type { Store } from './types.ts';

export async function openStore(config: Pick<Config, 'dataDir' | 'databaseUrl'>): Promise<Store> {
  if (config.databaseUrl !== undefined) return openPostgresStore(config.databaseUrl);
  return openSqliteStore(config.dataDir);
}
