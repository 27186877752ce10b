// API keys and server secrets in the Postgres store. A key's secret is never stored, only its SHA-256 (secrets are
// 256 random bits, so no slow hash is needed); a token is `wc_<key id>_<secret>`.
import { randomBytes } from 'node:crypto';
import type { Pool } from 'pg';
import { hashSecret, parseToken, secretMatches } from '../api-keys.ts';
import type { ApiKeyInfo, KeyStore } from '../types.ts';

export class PostgresKeyStore implements KeyStore {
  readonly #pool: Pool;

  constructor(pool: Pool) {
    this.#pool = pool;
  }

  async create(name: string, now = new Date()): Promise<{ id: string; token: string }> {
    const id = `key_${randomBytes(8).toString('hex')}`;
    const secret = randomBytes(32).toString('base64url');
    await this.#pool.query('INSERT INTO api_keys (id, name, secret_sha256, created_at) VALUES ($1, $2, $3, $4)', [id, name, hashSecret(secret), now.toISOString()]);
    return { id, token: `wc_${id}_${secret}` };
  }

  async verify(token: string): Promise<string | undefined> {
    const parsed = parseToken(token);
    if (parsed === undefined) return undefined;
    const { rows } = await this.#pool.query<{ secret_sha256: string }>('SELECT secret_sha256 FROM api_keys WHERE id = $1 AND revoked_at IS NULL', [parsed.id]);
    return secretMatches(rows[0]?.secret_sha256, parsed.secret) ? parsed.id : undefined;
  }

  async list(): Promise<ApiKeyInfo[]> {
    return (await this.#pool.query<ApiKeyInfo>('SELECT id, name, created_at, revoked_at FROM api_keys ORDER BY created_at')).rows;
  }

  async revoke(id: string, now = new Date()): Promise<boolean> {
    return (await this.#pool.query('UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL', [now.toISOString(), id])).rowCount === 1;
  }

  async isLive(id: string): Promise<boolean> {
    return (await this.#pool.query('SELECT 1 FROM api_keys WHERE id = $1 AND revoked_at IS NULL', [id])).rows.length === 1;
  }

  async hasKeys(): Promise<boolean> {
    return (await this.#pool.query('SELECT 1 FROM api_keys LIMIT 1')).rows.length === 1;
  }

  /** The first process to ask makes the secret; every other one, at once or later, reads that one. */
  async serverSecret(name: string, offer: Buffer = randomBytes(32)): Promise<Buffer> {
    await this.#pool.query('INSERT INTO server_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING', [name, offer]);
    const { rows } = await this.#pool.query<{ value: Buffer }>('SELECT value FROM server_secrets WHERE name = $1', [name]);
    return rows[0]!.value;
  }
}
