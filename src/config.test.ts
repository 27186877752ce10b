import { describe, expect, it } from 'vitest';
import { loadConfig } from './config.ts';

describe('WORKCELL_DATABASE_URL', () => {
  it('is unset by default: SQLite in the data dir', () => {
    expect(loadConfig({}).databaseUrl).toBeUndefined();
  });

  it('takes postgres:// and postgresql:// URLs', () => {
    for (const url of ['postgres://workcell@db:5432/workcell', 'postgresql://workcell:secret@10.0.0.5/workcell?sslmode=require']) {
      expect(loadConfig({ WORKCELL_DATABASE_URL: url }).databaseUrl).toBe(url);
    }
  });

  it('refuses anything else, naming the variable and never echoing the value (it may hold a password)', () => {
    for (const url of ['mysql://root:hunter2@db/workcell', 'hunter2', 'postgres://', 'file:///var/lib/workcell.db']) {
      let message = '';
      try {
        loadConfig({ WORKCELL_DATABASE_URL: url });
      } catch (error) {
        message = (error as Error).message;
      }
      expect(message).toMatch(/^invalid configuration: WORKCELL_DATABASE_URL: a postgres:\/\/ or postgresql:\/\/ URL/);
      expect(message).not.toContain('hunter2');
    }
  });
});
