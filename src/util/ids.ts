// Identifiers. Job ids sort by creation time (a ULID-like 26-character base32 string after the `job_` prefix), so
// listing by id is listing by age and a cursor is just the last id seen.
import { randomBytes } from 'node:crypto';

const alphabet = '0123456789abcdefghjkmnpqrstvwxyz'; // Crockford base32, lower case

function encodeTime(ms: number, length: number): string {
  let out = '';
  for (let i = 0; i < length; i++) {
    out = alphabet[ms % 32] + out;
    ms = Math.floor(ms / 32);
  }
  return out;
}

function encodeRandom(length: number): string {
  const bytes = randomBytes(length);
  let out = '';
  for (const byte of bytes) out += alphabet[byte % 32];
  return out;
}

export function newJobId(now = Date.now()): string {
  return `job_${encodeTime(now, 10)}${encodeRandom(16)}`;
}

export const jobIdPattern = /^job_[0-9a-hjkmnp-tv-z]{26}$/;

export function isJobId(value: string): boolean {
  return jobIdPattern.test(value);
}

/** A random token for authenticating to a sandbox's sandboxd. */
export function newToken(): string {
  return randomBytes(32).toString('base64url');
}
