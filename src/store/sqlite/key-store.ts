// API keys and server secrets in workcell.db. A key's secret is never stored, only its SHA-256 (secrets are 256
// random bits, so no slow hash is needed); a token is `wc_<key id>_<secret>`.
import { randomBytes } from 'node:crypto';
import type Database from 'better-sqlite3';
import { hashSecret, parseToken, secretMatches } from '../api-keys.ts';
import type { ApiKeyInfo, KeyStore } from '../types.ts';

export class SqliteKeyStore implements KeyStore {
  readonly #db: Database.Database;

  constructor(db: Database.Database) {
    this.#db = db;
  }

  async create(name: string, now = new Date()): Promise<{ id: string; token: string }> {
    const id = `key_${randomBytes(8).toString('hex')}`;
    const secret = randomBytes(32).toString('base64url');
    this.#db.prepare('INSERT INTO api_keys (id, name, secret_sha256, created_at) VALUES (?, ?, ?, ?)').run(id, name, hashSecret(secret), now.toISOString());
    return { id, token: `wc_${id}_${secret}` };
  }

  async verify(token: string): Promise<string | undefined> {
    const parsed = parseToken(token);
    if (parsed === undefined) return undefined;
    const row = this.#db.prepare('SELECT secret_sha256 FROM api_keys WHERE id = ? AND revoked_at IS NULL').get(parsed.id) as { secret_sha256: string } | undefined;
    return secretMatches(row?.secret_sha256, parsed.secret) ? parsed.id : undefined;
  }

  async list(): Promise<ApiKeyInfo[]> {
    return this.#db.prepare('SELECT id, name, created_at, revoked_at FROM api_keys ORDER BY created_at').all() as ApiKeyInfo[];
  }

  async revoke(id: string, now = new Date()): Promise<boolean> {
    return this.#db.prepare('UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL').run(now.toISOString(), id).changes === 1;
  }

  async isLive(id: string): Promise<boolean> {
    return this.#db.prepare('SELECT 1 FROM api_keys WHERE id = ? AND revoked_at IS NULL').get(id) !== undefined;
  }

  async hasKeys(): Promise<boolean> {
    return this.#db.prepare('SELECT 1 FROM api_keys LIMIT 1').get() !== undefined;
  }

  async serverSecret(name: string, offer: Buffer = randomBytes(32)): Promise<Buffer> {
    this.#db.prepare('INSERT OR IGNORE INTO server_secrets (name, value) VALUES (?, ?)').run(name, offer);
    return (this.#db.prepare('SELECT value FROM server_secrets WHERE name = ?').get(name) as { value: Buffer }).value;
  }
}
