// The parts of API keys every store shares: the token format (`wc_<key id>_<secret>`) and the constant-time check
// of a secret against the SHA-256 a store keeps.
import { createHash, timingSafeEqual } from 'node:crypto';

export const hashSecret = (secret: string): string => createHash('sha256').update(secret).digest('hex');

/** The key id and secret of a well-formed token; undefined for anything else. */
export function parseToken(token: string): { id: string; secret: string } | undefined {
  const match = /^wc_(key_[0-9a-f]{16})_([A-Za-z0-9_-]{43})$/.exec(token);
  return match === null ? undefined : { id: match[1]!, secret: match[2]! };
}

/** Whether `secret` hashes to `storedSha256` (undefined: no such live key); as long whether or not the key exists. */
export function secretMatches(storedSha256: string | undefined, secret: string): boolean {
  const expected = Buffer.from(storedSha256 ?? '0'.repeat(64), 'hex');
  return timingSafeEqual(expected, Buffer.from(hashSecret(secret), 'hex')) && storedSha256 !== undefined;
}
