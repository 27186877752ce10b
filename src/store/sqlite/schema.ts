// The SQLite store's schema (<data-dir>/workcell.db): numbered migrations, applied once each (PRAGMA user_version).
// Every process on the data dir shares it: WAL, a busy timeout, and claims and leases done in single statements.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { cacheStatements, migrate, useWal } from '../../util/sqlite.ts';

const migrations = [
  `CREATE TABLE jobs (
     id TEXT PRIMARY KEY,
     status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'complete', 'error', 'cancelled')),
     task TEXT NOT NULL,
     model TEXT,
     runtime TEXT NOT NULL,
     limits TEXT NOT NULL,
     metadata TEXT NOT NULL DEFAULT '{}',
     idempotency_key TEXT UNIQUE,
     created_at TEXT NOT NULL,
     started_at TEXT,
     finished_at TEXT,
     error TEXT,
     summary TEXT,
     runtime_used TEXT,
     isolation TEXT,
     model_used TEXT,
     steps INTEGER NOT NULL DEFAULT 0,
     input_tokens INTEGER NOT NULL DEFAULT 0,
     output_tokens INTEGER NOT NULL DEFAULT 0,
     attempts INTEGER NOT NULL DEFAULT 0,
     cancel_requested INTEGER NOT NULL DEFAULT 0,
     locked_by TEXT,
     lease_expires_at INTEGER
   )`,
  `CREATE INDEX jobs_by_status ON jobs (status, id)`,
  // API keys: `owner` is the key that created the job (NULL when the server ran without keys).
  `ALTER TABLE jobs ADD COLUMN owner TEXT`,
  `CREATE TABLE api_keys (
     id TEXT PRIMARY KEY,
     name TEXT NOT NULL,
     secret_sha256 TEXT NOT NULL,
     created_at TEXT NOT NULL,
     revoked_at TEXT
   )`,
  // What the sandbox used (JSON ResourceUsage), recorded when the job ends.
  `ALTER TABLE jobs ADD COLUMN resource_usage TEXT`,
  // The job's own egress allow-list (JSON JobNetwork); NULL: none.
  `ALTER TABLE jobs ADD COLUMN network TEXT`,
  // The context window the client set for the job's model (tokens); NULL: the server's or the model's own.
  `ALTER TABLE jobs ADD COLUMN context_window INTEGER`,
  // Secrets the server makes for itself (the key that signs browser tokens), shared by every process on this store.
  `CREATE TABLE server_secrets (name TEXT PRIMARY KEY, value BLOB NOT NULL)`,
  // What the workspace starts from (JSON JobInputs: a git input, a summary of uploaded files); NULL: nothing.
  `ALTER TABLE jobs ADD COLUMN inputs TEXT`,
  // Runs. A message to a finished job continues it: the job runs again (`run` is its current run) and job_runs keeps
  // each run's start, end and outcome. The triggers keep the current run's row in step with every status change of
  // the job, whichever statement makes it (claim, finish, cancel, requeue), in the same transaction.
  `ALTER TABLE jobs ADD COLUMN run INTEGER NOT NULL DEFAULT 1;
   CREATE TABLE job_runs (
     job_id TEXT NOT NULL,
     run INTEGER NOT NULL,
     status TEXT NOT NULL,
     message TEXT,
     message_seq INTEGER,
     start_seq INTEGER NOT NULL DEFAULT 0,
     steps_before INTEGER NOT NULL DEFAULT 0,
     created_at TEXT NOT NULL,
     started_at TEXT,
     finished_at TEXT,
     error TEXT,
     summary TEXT,
     steps INTEGER NOT NULL DEFAULT 0,
     PRIMARY KEY (job_id, run)
   ) WITHOUT ROWID;
   INSERT INTO job_runs (job_id, run, status, created_at, started_at, finished_at, error, summary, steps)
     SELECT id, 1, status, created_at, started_at, finished_at, error, summary, steps FROM jobs;
   CREATE TRIGGER job_runs_first AFTER INSERT ON jobs BEGIN
     INSERT INTO job_runs (job_id, run, status, created_at) VALUES (NEW.id, NEW.run, NEW.status, NEW.created_at);
   END;
   CREATE TRIGGER job_runs_status AFTER UPDATE OF status ON jobs WHEN NEW.status IS NOT OLD.status BEGIN
     UPDATE job_runs SET status = NEW.status, started_at = COALESCE(started_at, NEW.started_at), finished_at = NEW.finished_at,
       error = NEW.error, summary = NEW.summary, steps = NEW.steps - steps_before
     WHERE job_id = NEW.id AND run = NEW.run;
   END;
   CREATE TRIGGER job_runs_deleted AFTER DELETE ON jobs BEGIN
     DELETE FROM job_runs WHERE job_id = OLD.id;
   END`,
  // The job a fork started from (POST /schedule {from_job}).
  `ALTER TABLE jobs ADD COLUMN forked_from TEXT`,
  // Lifecycle hooks. A job with a hook (its own callback_url, or the server's WORKCELL_CALLBACK_URL: callback_default)
  // gets a signed POST for its status when the hook is set and for every change after. The triggers put each into the
  // outbox in the transaction that makes the change, so a crash loses none; jobs/webhooks/ delivers them, in order
  // per job, retried with backoff. A row outlives its job (the receiver still hears how a deleted job ended).
  `ALTER TABLE jobs ADD COLUMN callback_url TEXT;
   ALTER TABLE jobs ADD COLUMN callback_default INTEGER NOT NULL DEFAULT 0;
   CREATE TABLE webhook_outbox (
     id INTEGER PRIMARY KEY AUTOINCREMENT,
     event_id TEXT NOT NULL UNIQUE,
     job_id TEXT NOT NULL,
     url TEXT,
     status TEXT NOT NULL,
     previous_status TEXT,
     run INTEGER NOT NULL,
     error TEXT,
     summary TEXT,
     time TEXT NOT NULL,
     state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
     attempts INTEGER NOT NULL DEFAULT 0,
     next_attempt_at INTEGER NOT NULL DEFAULT 0,
     last_error TEXT,
     done_at TEXT,
     locked_by TEXT,
     lease_expires_at INTEGER
   );
   CREATE INDEX webhook_outbox_by_state ON webhook_outbox (state, job_id, id);
   CREATE TRIGGER webhook_hook_set AFTER UPDATE OF callback_url, callback_default ON jobs
   WHEN OLD.callback_url IS NULL AND OLD.callback_default = 0 AND (NEW.callback_url IS NOT NULL OR NEW.callback_default = 1) BEGIN
     INSERT INTO webhook_outbox (event_id, job_id, url, status, run, error, summary, time)
     VALUES ('evt_' || lower(hex(randomblob(16))), NEW.id, NEW.callback_url, NEW.status, NEW.run, NEW.error, NEW.summary, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));
   END;
   CREATE TRIGGER webhook_status AFTER UPDATE OF status ON jobs
   WHEN NEW.status IS NOT OLD.status AND (NEW.callback_url IS NOT NULL OR NEW.callback_default = 1) BEGIN
     INSERT INTO webhook_outbox (event_id, job_id, url, status, previous_status, run, error, summary, time)
     VALUES ('evt_' || lower(hex(randomblob(16))), NEW.id, NEW.callback_url, NEW.status, OLD.status, NEW.run, NEW.error, NEW.summary, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));
   END`,
];

export function openDatabase(dataDir: string): Database.Database {
  mkdirSync(dataDir, { recursive: true, mode: 0o711 });
  const db = new Database(join(dataDir, 'workcell.db'));
  try {
    db.pragma('busy_timeout = 5000');
    useWal(db);
    db.pragma('synchronous = NORMAL');
    migrate(db, migrations);
  } catch (error) {
    db.close();
    throw error;
  }
  return cacheStatements(db);
}
