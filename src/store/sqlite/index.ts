// The embedded store: one SQLite database in the data dir, shared by every process on this host.
import { openDatabase } from './schema.ts';
import { SqliteJobStore } from './job-store.ts';
import { SqliteKeyStore } from './key-store.ts';
import { SqliteWebhookOutbox } from './outbox.ts';
import type { Store } from '../types.ts';

export function openSqliteStore(dataDir: string): Store {
  const db = openDatabase(dataDir);
  return {
    kind: 'sqlite',
    jobs: new SqliteJobStore(db),
    keys: new SqliteKeyStore(db),
    outbox: new SqliteWebhookOutbox(db),
    async close() {
      db.close();
    },
  };
}
