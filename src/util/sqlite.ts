// Schema migrations of the SQLite databases (the job store's workcell.db, each job's context.db), and the job store's
// statement cache.
import type Database from 'better-sqlite3';

/** Applies numbered migrations once each, tracked by PRAGMA user_version. */
export function migrate(db: Database.Database, steps: readonly string[]): void {
  const current = db.pragma('user_version', { simple: true }) as number;
  if (current > steps.length) throw new Error(`database schema version ${current} is newer than this workcell (${steps.length}): upgrade workcell`);
  const apply = db.transaction(() => {
    for (let version = current; version < steps.length; version++) db.exec(steps[version]!);
    db.pragma(`user_version = ${steps.length}`);
  });
  apply();
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
