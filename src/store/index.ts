// Opens the store the configuration names: SQLite in the data dir (the default).
import type { Config } from '../config.ts';
import { openSqliteStore } from './sqlite/index.ts';
import type { Store } from './types.ts';

export function openStore(config: Pick<Config, 'dataDir'>): Store {
  return openSqliteStore(config.dataDir);
}
