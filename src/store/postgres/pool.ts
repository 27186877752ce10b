// The connection pool the Postgres store's parts share, and its transactions. A store never retries a statement
// itself: a statement whose connection broke (the server restarted, the network dropped) may or may not have been
// committed, and running a claim or a create again blindly could claim a second job or fail on the first's id. It
// rejects instead; the pool drops the broken connection and the next statement opens a fresh one. Every caller
// already copes with a rejected store call: the scheduler, the watchdog, the webhook sender and retention try again
// on their next tick (a claim whose answer was lost leaves a job whose lease runs out and is resumed), and an API
// request answers with an error the client may retry.
import pg, { type Pool, type PoolClient } from 'pg';

/** BIGINT columns (Unix-ms times, counts, outbox ids) as numbers, as the SQLite store gives them; all fit in 2^53. */
const types: pg.CustomTypesConfig = {
  getTypeParser: (oid, format): unknown => (oid === pg.types.builtins.INT8 && format !== 'binary' ? Number : pg.types.getTypeParser(oid, format)),
};

export function createPool(url: string): Pool {
  const pool = new pg.Pool({ connectionString: url, types, keepAlive: true, connectionTimeoutMillis: 30_000 });
  // An idle connection the server closed (a restart, an idle timeout) is reported here and dropped from the pool;
  // without a listener the error would end the process. Statements in flight reject on their own.
  pool.on('error', () => undefined);
  return pool;
}

/** Runs `body` in a transaction on one connection: COMMIT when it resolves, ROLLBACK when it throws. */
export async function transaction<T>(pool: Pool, body: (client: PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  // A connection cut while it is checked out and between statements is reported as an event, which nobody would
  // hear (the process would end): it is kept, so that the connection is dropped rather than given back.
  let broken: Error | undefined;
  const onError = (error: Error) => (broken = error);
  client.on('error', onError);
  try {
    await client.query('BEGIN');
    try {
      const result = await body(client);
      await client.query('COMMIT');
      return result;
    } catch (error) {
      await client.query('ROLLBACK').catch((rollbackError: unknown) => {
        broken ??= rollbackError instanceof Error ? rollbackError : new Error(String(rollbackError));
      });
      throw error;
    }
  } finally {
    client.removeListener('error', onError);
    client.release(broken);
  }
}
