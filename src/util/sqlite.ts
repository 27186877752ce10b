// Schema migrations of the SQLite databases (the job store's workcell.db, each job's context.db), and the job store's
// statement cache.
import type Database from 'better-sqlite3';

/**
 * Puts a database in WAL mode, waiting (up to `busy_timeout`) while another process does the same: SQLite answers the
 * switch with SQLITE_BUSY at once, without its busy handler, when another connection has the new file open (seen: an
 * API replica and a worker opening a job's new context.db together).
 */
export function useWal(db: Database.Database, timeoutMs = 5000): void {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      if (db.pragma('journal_mode', { simple: true }) !== 'wal') db.pragma('journal_mode = WAL');
      return;
    } catch (error) {
      if ((error as { code?: string }).code !== 'SQLITE_BUSY' || Date.now() > deadline) throw error;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 5);
    }
  }
}

/** Applies numbered migrations once each, tracked by PRAGMA user_version. */
export function migrate(db: Database.Database, steps: readonly string[]): void {
  // Read and applied in one write transaction: processes opening a new database at once (an API replica following a
  // job and the worker claiming it) would otherwise each see version 0 and the second fail on "already exists".
  db.transaction(() => {
    const current = db.pragma('user_version', { simple: true }) as number;
    if (current > steps.length) throw new Error(`database schema version ${current} is newer than this workcell (${steps.length}): upgrade workcell`);
    for (let version = current; version < steps.length; version++) db.exec(steps[version]!);
    if (current < steps.length) db.pragma(`user_version = ${steps.length}`);
  }).immediate();
}

/**
 * Makes `db.prepare(sql)` compile each SQL text once and hand back the same statement after. better-sqlite3 compiles
 * on every call, and the job store runs the same few dozen statements on every request: compiling was most of the
 * time of POST /schedule. Only for code that uses a statement whole (get, all, run): a statement's modes (pluck, raw,
 * expand) would stick to every later user of its text, and one being iterated cannot run again until it is done.
 */
export function cacheStatements(db: Database.Database): Database.Database {
  const compiled = new Map<string, Database.Statement>();
  const prepare = db.prepare.bind(db);
  db.prepare = ((sql: string) => {
    let statement = compiled.get(sql);
    if (statement === undefined) {
      statement = prepare(sql);
      compiled.set(sql, statement);
    }
    return statement;
  }) as Database.Database['prepare'];
  return db;
}
