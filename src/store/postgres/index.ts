// The shared store: one Postgres database (WORKCELL_DATABASE_URL) for every API replica and worker on every host.
// Opening it applies the schema's migrations (schema.ts); the parts share one connection pool (pool.ts).
import { createPool } from './pool.ts';
import { migrate } from './schema.ts';
import { PostgresJobStore } from './job-store.ts';
import { PostgresKeyStore } from './key-store.ts';
import { PostgresWebhookOutbox } from './outbox.ts';
import type { Store } from '../types.ts';

export async function openPostgresStore(url: string): Promise<Store> {
  const pool = createPool(url);
  try {
    await migrate(pool);
  } catch (error) {
    await pool.end();
    throw error;
  }
  return {
    kind: 'postgres',
    jobs: new PostgresJobStore(pool),
    keys: new PostgresKeyStore(pool),
    outbox: new PostgresWebhookOutbox(pool),
    async close() {
      await pool.end();
    },
  };
}
