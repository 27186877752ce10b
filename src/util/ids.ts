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

let last: { time: number; random: string } | undefined;

/** The random part plus one, in base32 (it has 80 bits: it does not run over in practice). */
function increment(random: string): string {
  const digits = [...random];
  for (let i = digits.length - 1; i >= 0; i--) {
    const next = alphabet.indexOf(digits[i]!) + 1;
    digits[i] = alphabet[next % 32]!;
    if (next < 32) break;
  }
  return digits.join('');
}

/**
 * Monotonic within a process (as ULID's monotonic factory): ids made in one millisecond, or while the clock steps
 * back, take the last time and the last random part plus one, so that they still sort in creation order.
 */
export function newJobId(now = Date.now()): string {
  last = last !== undefined && now <= last.time ? { time: last.time, random: increment(last.random) } : { time: now, random: encodeRandom(16) };
  return `job_${encodeTime(last.time, 10)}${last.random}`;
}

export const jobIdPattern = /^job_[0-9a-hjkmnp-tv-z]{26}$/;

export function isJobId(value: string): boolean {
  return jobIdPattern.test(value);
}

/** A random token for authenticating to a sandbox's sandboxd. */
export function newToken(): string {
  return randomBytes(32).toString('base64url');
}
