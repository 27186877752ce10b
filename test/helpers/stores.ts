// Every store implementation, for tests that must hold for each (describe.each(storeBackends())): SQLite in a temp
// dir, and Postgres in a fresh database of a real throwaway server (one per test file, started in setup()).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openPostgresStore } from '../../src/store/postgres/index.ts';
import { openSqliteStore } from '../../src/store/sqlite/index.ts';
import { afterAll, afterEach, beforeAll, beforeEach } from 'vitest';
import type { Store } from '../../src/store/types.ts';
import { startPostgres, type PostgresCluster } from './postgres.ts';

/** Long enough to start a Postgres server on a busy machine (a hook's timeout). */
export const storeSetupTimeoutMs = 120_000;

/** One empty place for a store: open() opens it, and opens it again after a close (the data stays). */
export interface StoreLocation {
  open(): Promise<Store>;
  remove(): Promise<void>;
}

export interface StoreBackend {
  /** Once per file, before fresh() (beforeAll). */
  setup(): Promise<void>;
  teardown(): Promise<void>;
  fresh(): Promise<StoreLocation>;
}

function sqliteBackend(): StoreBackend {
  return {
    async setup() {},
    async teardown() {},
    async fresh() {
      const dir = mkdtempSync(join(tmpdir(), 'workcell-store-'));
      return {
        open: async () => openSqliteStore(dir),
        remove: async () => rmSync(dir, { recursive: true, force: true }),
      };
    },
  };
}

function postgresBackend(): StoreBackend {
  let cluster: PostgresCluster | undefined;
  return {
    async setup() {
      cluster = await startPostgres();
    },
    async teardown() {
      await cluster?.stop();
    },
    async fresh() {
      if (cluster === undefined) throw new Error('call setup() first (beforeAll)');
      const url = await cluster.createDatabase();
      // The cluster, and every database in it, is deleted by teardown().
      return { open: () => openPostgresStore(url), remove: async () => {} };
    },
  };
}

/** [name, backend] for describe.each: new backends for each call (each test file its own Postgres server). */
export function storeBackends(): Array<[name: string, backend: StoreBackend]> {
  return [
    ['sqlite', sqliteBackend()],
    ['postgres', postgresBackend()],
  ];
}

/** A fresh, open store of one backend for each test: `store` is it; `reopen()` closes it and opens the same place. */
export interface StoreFixture {
  readonly store: Store;
  reopen(): Promise<Store>;
  /** Another store opened on the same place (the caller closes it), as a second process would. */
  openAnother(): Promise<Store>;
}

/** Registers the hooks (in the calling describe) that give every test its own empty store of `backend`. */
export function useStore(backend: StoreBackend): StoreFixture {
  let location: StoreLocation | undefined;
  let opened: Store | undefined;
  const here = () => {
    if (location === undefined || opened === undefined) throw new Error('the store is open only inside a test');
    return { location, opened };
  };
  beforeAll(() => backend.setup(), storeSetupTimeoutMs);
  afterAll(() => backend.teardown(), storeSetupTimeoutMs);
  beforeEach(async () => {
    location = await backend.fresh();
    opened = await location.open();
  }, 60_000);
  afterEach(async () => {
    await opened?.close();
    await location?.remove();
    location = opened = undefined;
  });
  return {
    get store() {
      return here().opened;
    },
    async reopen() {
      const current = here();
      await current.opened.close();
      opened = await current.location.open();
      return opened;
    },
    openAnother: () => here().location.open(),
  };
}
