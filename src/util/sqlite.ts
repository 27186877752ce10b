// Schema migrations of the SQLite databases (the job store's workcell.db, each job's context.db).
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
