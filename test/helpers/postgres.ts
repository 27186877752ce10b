// A real, throwaway Postgres server for tests of the Postgres store: a fresh cluster (initdb) in a temp dir, run on
// 127.0.0.1 and a free port with its socket in that dir and fsync off, and removed by stop(). As root it runs as an
// unprivileged user (postgres refuses root): the `postgres` system user, else `nobody`. Nothing it starts may
// outlive the tests: stop() waits for the server to exit, and a test process that ends first kills it.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { accessSync, appendFileSync, chownSync, constants, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { findExecutable, lookupUser, runCommand, type HostUser } from '../../src/runtimes/probe.ts';

// A busy CI machine can take long to start a server; a server that exits is reported at once instead.
const readyTimeoutMs = 60_000;
const stopTimeoutMs = 30_000;
const user = 'workcell';

export interface PostgresCluster {
  /** The cluster's `postgres` database (for administration; tests take their own from createDatabase()). */
  url: string;
  port: number;
  /** A new, empty database in this cluster; its URL. */
  createDatabase(): Promise<string>;
  /** Stops the server and deletes the cluster. */
  stop(): Promise<void>;
  /** Stops the server (fast shutdown: open connections are cut) and starts it again on the same port. */
  restart(): Promise<void>;
}

interface Binaries {
  initdb: string;
  postgres: string;
}

/** initdb and postgres from the newest /usr/lib/postgresql/<version>/bin (Debian's layout), else from PATH. */
function findBinaries(): Binaries {
  const root = '/usr/lib/postgresql';
  let versions: string[] = [];
  try {
    versions = readdirSync(root).filter((name) => /^\d+(\.\d+)?$/.test(name)).sort((a, b) => Number(b) - Number(a));
  } catch {
    // not Debian's layout
  }
  const executable = (path: string) => {
    try {
      accessSync(path, constants.X_OK);
      return true;
    } catch {
      return false;
    }
  };
  for (const version of versions) {
    const bin = join(root, version, 'bin');
    if (executable(join(bin, 'initdb')) && executable(join(bin, 'postgres'))) return { initdb: join(bin, 'initdb'), postgres: join(bin, 'postgres') };
  }
  const initdb = findExecutable('initdb');
  const postgres = findExecutable('postgres');
  if (initdb !== undefined && postgres !== undefined) return { initdb, postgres };
  throw new Error(`the Postgres store's tests start their own Postgres server, and its programs (initdb, postgres) are not installed under ${root}/*/bin or on PATH: run scripts/setup.sh (it installs the package postgresql)`);
}

/** Who runs the server: as root, an unprivileged user and setpriv to become it; otherwise this process's user. */
async function serverUser(): Promise<{ user: HostUser; setpriv: string } | undefined> {
  if (process.getuid?.() !== 0) return undefined;
  const account = (await lookupUser('postgres')) ?? (await lookupUser('nobody'));
  if (account === undefined) throw new Error('running as root, and there is neither a postgres nor a nobody user to run the test Postgres server as');
  const setpriv = findExecutable('setpriv');
  if (setpriv === undefined) throw new Error('running as root, and setpriv (util-linux) is not installed to run the test Postgres server as an unprivileged user');
  return { user: account, setpriv };
}

async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  server.close();
  await once(server, 'close');
  if (address === null || typeof address === 'string') throw new Error('no port');
  return address.port;
}

/** Whether the server answers a query; false while it starts (connection refused, "the database system is starting up"). */
async function answers(port: number): Promise<boolean> {
  const client = new pg.Client({ host: '127.0.0.1', port, user, database: 'postgres', connectionTimeoutMillis: 5000 });
  client.on('error', () => undefined);
  try {
    await client.connect();
    await client.query('SELECT 1');
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => undefined);
  }
}

/**
 * Starts a new cluster; stop() it (in afterAll) when done. `network`: also listen on this address (one the test
 * made, such as a test network's bridge) and let the hosts of this subnet in.
 */
export async function startPostgres(options: { network?: { address: string; subnet: string } } = {}): Promise<PostgresCluster> {
  const binaries = findBinaries();
  const runAs = await serverUser();
  const dir = mkdtempSync(join(tmpdir(), 'workcell-pg-'));
  const dataDir = join(dir, 'data');
  if (runAs !== undefined) chownSync(dir, runAs.user.uid, runAs.user.gid);
  const command = (file: string, args: string[]): [string, string[]] =>
    runAs === undefined ? [file, args] : [runAs.setpriv, [`--reuid=${runAs.user.uid}`, `--regid=${runAs.user.gid}`, '--clear-groups', file, ...args]];

  try {
    const initdb = await runCommand(...command(binaries.initdb, ['-D', dataDir, '-U', user, '--auth=trust', '--encoding=UTF8', '--locale=C', '--no-sync']), { timeoutMs: 120_000 });
    if (!initdb.ok) throw new Error(`initdb failed (${initdb.code}): ${initdb.stderr.trim()}`);
    if (options.network !== undefined) appendFileSync(join(dataDir, 'pg_hba.conf'), `host all all ${options.network.subnet} trust\n`);
  } catch (error) {
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }

  let child: ChildProcess | undefined;
  let log = '';
  const killOnExit = () => {
    child?.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  };
  process.once('exit', killOnExit);

  /** Runs the server on `port`; resolves when it answers, rejects (with its log) when it exits or takes too long. */
  const startServer = async (port: number) => {
    log = '';
    const [file, args] = command(binaries.postgres, [
      '-D', dataDir, '-p', String(port), '-k', dir,
      '-c', `listen_addresses=${['127.0.0.1', ...(options.network === undefined ? [] : [options.network.address])].join(',')}`, '-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off',
      '-c', 'shared_buffers=32MB', '-c', 'max_connections=200',
    ]);
    const server = spawn(file, args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    const keep = (chunk: Buffer) => (log = (log + chunk.toString()).slice(-16_384));
    server.stdout?.on('data', keep);
    server.stderr?.on('data', keep);
    child = server;
    const deadline = Date.now() + readyTimeoutMs;
    while (!(await answers(port))) {
      if (server.exitCode !== null || server.signalCode !== null) throw new Error(`postgres exited (${server.exitCode ?? server.signalCode}) before it was ready:\n${log}`);
      if (Date.now() > deadline) {
        await stopServer();
        throw new Error(`postgres did not answer within ${readyTimeoutMs / 1000} s:\n${log}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  };

  const stopServer = async () => {
    const server = child;
    if (server === undefined || server.exitCode !== null || server.signalCode !== null) return;
    const exited = once(server, 'exit');
    server.kill('SIGINT'); // fast shutdown: roll back open transactions, cut connections, checkpoint
    const timer = setTimeout(() => server.kill('SIGKILL'), stopTimeoutMs);
    await exited;
    clearTimeout(timer);
  };

  const cleanup = async () => {
    await stopServer();
    process.removeListener('exit', killOnExit);
    rmSync(dir, { recursive: true, force: true });
  };

  // Another process may take the free port between the check and the server's bind: try another one.
  let port = 0;
  for (let attempt = 1; ; attempt++) {
    port = await freePort();
    try {
      await startServer(port);
      break;
    } catch (error) {
      if (attempt < 5 && /could not (bind|create listen socket)/i.test(log)) continue;
      await cleanup();
      throw error;
    }
  }

  const url = `postgresql://${user}@127.0.0.1:${port}/postgres`;
  let databases = 0;
  let fileCopy: boolean | undefined;
  return {
    url,
    port,
    async createDatabase() {
      const name = `test_${process.pid}_${++databases}`;
      const admin = new pg.Client({ connectionString: url });
      admin.on('error', () => undefined);
      await admin.connect();
      try {
        // Copying the template's files (Postgres 15 and later) takes a third of the time of the default, which
        // writes it all to the WAL; the checkpoints it costs instead are cheap without fsync.
        fileCopy ??= Number((await admin.query<{ server_version_num: string }>('SHOW server_version_num')).rows[0]?.server_version_num) >= 150_000;
        await admin.query(`CREATE DATABASE ${name}${fileCopy ? ' STRATEGY FILE_COPY' : ''}`);
      } finally {
        await admin.end();
      }
      return `postgresql://${user}@127.0.0.1:${port}/${name}`;
    },
    stop: cleanup,
    async restart() {
      await stopServer();
      await startServer(port);
    },
  };
}
