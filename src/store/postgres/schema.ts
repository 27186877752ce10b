// The Postgres store's schema: the same tables, columns and triggers as the SQLite store's (sqlite/schema.ts), as
// numbered migrations recorded in workcell_schema. Every API replica and worker opens the store at start-up, often
// at once: migrations run in one transaction under an advisory lock, so exactly one process applies each and the
// others wait for it, then find nothing to do. A migration is never edited once released: add the next one.
//
// Types are chosen so that rows read back as the SQLite store's do: times are TEXT ISO 8601 strings (compared and
// ordered as text, as in SQLite; ids and times use the "C" collation so that order is byte order whatever the
// database's locale), Unix-ms times and counts are BIGINT (read as numbers: see index.ts), flags are BOOLEAN, and the
// JSON columns the client gives are `json` (kept as written, keys in the client's order) but resource_usage, which
// is merged in SQL, is `jsonb`.
import type { Pool } from 'pg';
import { transaction } from './pool.ts';

const migrations: readonly string[] = [
  `CREATE TABLE jobs (
     id TEXT COLLATE "C" PRIMARY KEY,
     status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'complete', 'error', 'cancelled')),
     task TEXT NOT NULL,
     model TEXT,
     runtime TEXT NOT NULL,
     limits JSON NOT NULL,
     metadata JSON NOT NULL DEFAULT '{}',
     idempotency_key TEXT UNIQUE,
     created_at TEXT COLLATE "C" NOT NULL,
     started_at TEXT COLLATE "C",
     finished_at TEXT COLLATE "C",
     error TEXT,
     summary TEXT,
     runtime_used TEXT,
     isolation TEXT,
     model_used TEXT,
     steps BIGINT NOT NULL DEFAULT 0,
     input_tokens BIGINT NOT NULL DEFAULT 0,
     output_tokens BIGINT NOT NULL DEFAULT 0,
     attempts BIGINT NOT NULL DEFAULT 0,
     cancel_requested BOOLEAN NOT NULL DEFAULT false,
     locked_by TEXT,
     lease_expires_at BIGINT,
     owner TEXT,
     resource_usage JSONB,
     network JSON,
     context_window BIGINT,
     inputs JSON,
     run BIGINT NOT NULL DEFAULT 1,
     forked_from TEXT,
     callback_url TEXT,
     callback_default BOOLEAN NOT NULL DEFAULT false
   );
   CREATE INDEX jobs_by_status ON jobs (status, id);
   CREATE TABLE api_keys (
     id TEXT PRIMARY KEY,
     name TEXT NOT NULL,
     secret_sha256 TEXT NOT NULL,
     created_at TEXT COLLATE "C" NOT NULL,
     revoked_at TEXT
   );
   CREATE TABLE server_secrets (name TEXT PRIMARY KEY, value BYTEA NOT NULL);

   -- Runs: the triggers keep the current run's row in step with every status change of the job, whichever
   -- statement makes it (claim, finish, cancel, requeue), in the same transaction.
   CREATE TABLE job_runs (
     job_id TEXT NOT NULL,
     run BIGINT NOT NULL,
     status TEXT NOT NULL,
     message TEXT,
     message_seq BIGINT,
     start_seq BIGINT NOT NULL DEFAULT 0,
     steps_before BIGINT NOT NULL DEFAULT 0,
     created_at TEXT COLLATE "C" NOT NULL,
     started_at TEXT,
     finished_at TEXT,
     error TEXT,
     summary TEXT,
     steps BIGINT NOT NULL DEFAULT 0,
     PRIMARY KEY (job_id, run)
   );
   CREATE FUNCTION job_runs_first() RETURNS trigger LANGUAGE plpgsql AS $$
   BEGIN
     INSERT INTO job_runs (job_id, run, status, created_at) VALUES (NEW.id, NEW.run, NEW.status, NEW.created_at);
     RETURN NULL;
   END $$;
   CREATE TRIGGER job_runs_first AFTER INSERT ON jobs FOR EACH ROW EXECUTE FUNCTION job_runs_first();
   CREATE FUNCTION job_runs_status() RETURNS trigger LANGUAGE plpgsql AS $$
   BEGIN
     UPDATE job_runs SET status = NEW.status, started_at = COALESCE(started_at, NEW.started_at), finished_at = NEW.finished_at,
       error = NEW.error, summary = NEW.summary, steps = NEW.steps - steps_before
     WHERE job_id = NEW.id AND run = NEW.run;
     RETURN NULL;
   END $$;
   CREATE TRIGGER job_runs_status AFTER UPDATE OF status ON jobs
     FOR EACH ROW WHEN (NEW.status IS DISTINCT FROM OLD.status) EXECUTE FUNCTION job_runs_status();
   CREATE FUNCTION job_runs_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
   BEGIN
     DELETE FROM job_runs WHERE job_id = OLD.id;
     RETURN NULL;
   END $$;
   CREATE TRIGGER job_runs_deleted AFTER DELETE ON jobs FOR EACH ROW EXECUTE FUNCTION job_runs_deleted();

   -- Lifecycle hooks: the triggers put a row in the outbox for the hook being set and for every status change of a
   -- job with a hook, in the transaction that makes the change. A row outlives its job.
   CREATE TABLE webhook_outbox (
     id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
     event_id TEXT NOT NULL UNIQUE,
     job_id TEXT NOT NULL,
     url TEXT,
     status TEXT NOT NULL,
     previous_status TEXT,
     run BIGINT NOT NULL,
     error TEXT,
     summary TEXT,
     time TEXT NOT NULL,
     state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
     attempts BIGINT NOT NULL DEFAULT 0,
     next_attempt_at BIGINT NOT NULL DEFAULT 0,
     last_error TEXT,
     done_at TEXT COLLATE "C",
     locked_by TEXT,
     lease_expires_at BIGINT
   );
   CREATE INDEX webhook_outbox_by_state ON webhook_outbox (state, job_id, id);
   -- SQLite's 'evt_' || lower(hex(randomblob(16))) and strftime('%Y-%m-%dT%H:%M:%fZ', 'now').
   CREATE FUNCTION workcell_event_id() RETURNS text LANGUAGE sql VOLATILE AS
     $$ SELECT 'evt_' || replace(gen_random_uuid()::text, '-', '') $$;
   CREATE FUNCTION workcell_now() RETURNS text LANGUAGE sql VOLATILE AS
     $$ SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') $$;
   CREATE FUNCTION webhook_hook_set() RETURNS trigger LANGUAGE plpgsql AS $$
   BEGIN
     INSERT INTO webhook_outbox (event_id, job_id, url, status, run, error, summary, time)
     VALUES (workcell_event_id(), NEW.id, NEW.callback_url, NEW.status, NEW.run, NEW.error, NEW.summary, workcell_now());
     RETURN NULL;
   END $$;
   CREATE TRIGGER webhook_hook_set AFTER UPDATE OF callback_url, callback_default ON jobs
     FOR EACH ROW WHEN (OLD.callback_url IS NULL AND NOT OLD.callback_default AND (NEW.callback_url IS NOT NULL OR NEW.callback_default))
     EXECUTE FUNCTION webhook_hook_set();
   CREATE FUNCTION webhook_status() RETURNS trigger LANGUAGE plpgsql AS $$
   BEGIN
     INSERT INTO webhook_outbox (event_id, job_id, url, status, previous_status, run, error, summary, time)
     VALUES (workcell_event_id(), NEW.id, NEW.callback_url, NEW.status, OLD.status, NEW.run, NEW.error, NEW.summary, workcell_now());
     RETURN NULL;
   END $$;
   CREATE TRIGGER webhook_status AFTER UPDATE OF status ON jobs
     FOR EACH ROW WHEN (NEW.status IS DISTINCT FROM OLD.status AND (NEW.callback_url IS NOT NULL OR NEW.callback_default))
     EXECUTE FUNCTION webhook_status();`,
];

/** Any constant, the same in every workcell: the key of the advisory lock migrations hold ("workcell" in hex). */
const migrationLockKey = 0x776f726b63656c6cn;

/** Applies the migrations this database lacks, once each, however many processes start at once. */
export async function migrate(pool: Pool): Promise<void> {
  await transaction(pool, async (client) => {
    // The lock comes first: two processes creating workcell_schema at once would otherwise collide.
    await client.query('SELECT pg_advisory_xact_lock($1)', [migrationLockKey.toString()]);
    await client.query('CREATE TABLE IF NOT EXISTS workcell_schema (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)');
    const { rows } = await client.query<{ current: number }>('SELECT COALESCE(max(version), 0) AS current FROM workcell_schema');
    const current = rows[0]?.current ?? 0;
    if (current > migrations.length) {
      throw new Error(`database schema version ${current} is newer than this workcell (${migrations.length}): upgrade workcell`);
    }
    for (let version = current; version < migrations.length; version++) {
      await client.query(migrations[version]!);
      await client.query('INSERT INTO workcell_schema (version, applied_at) VALUES ($1, $2)', [version + 1, new Date().toISOString()]);
    }
  });
}
