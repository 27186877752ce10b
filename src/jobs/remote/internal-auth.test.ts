import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { InternalVerifier, signInternal, workerAddress, workerIdWithAddress } from './internal-auth.ts';

describe("a worker's address in its id", () => {
  it('round-trips, and is absent for a worker without an internal route', () => {
    const id = workerIdWithAddress('host:12:abcdef', 'http://10.0.0.7:9000/');
    expect(id).toBe('host:12:abcdef@http://10.0.0.7:9000');
    expect(workerAddress(id)?.origin).toBe('http://10.0.0.7:9000');
    expect(workerAddress('host:12:abcdef')).toBeUndefined();
    expect(workerAddress(null)).toBeUndefined();
  });

  it('is never anything but an http(s) URL', () => {
    for (const bad of ['h:1:x@file:///etc/passwd', 'h:1:x@javascript:alert(1)', 'h:1:x@not a url', 'h:1:x@']) expect(workerAddress(bad)).toBeUndefined();
  });
});

describe('signed internal requests', () => {
  const secret = randomBytes(32);
  const path = '/internal/v1/jobs/job_00000000000000000000000000/sandboxd/v1/terminal';

  it('accepts a fresh signature once', () => {
    const verifier = new InternalVerifier(secret);
    const header = signInternal(secret, 'GET', path);
    expect(verifier.check(header, 'GET', path)).toBeUndefined();
    expect(verifier.check(header, 'GET', path)).toMatch(/used before/);
  });

  it('refuses another secret, method, path or time, and malformed headers', () => {
    const verifier = new InternalVerifier(secret);
    const now = 1_800_000_000_000;
    expect(verifier.check(signInternal(randomBytes(32), 'GET', path, now), 'GET', path, now)).toMatch(/bad .* signature/);
    expect(verifier.check(signInternal(secret, 'GET', path, now), 'PUT', path, now)).toMatch(/bad .* signature/);
    expect(verifier.check(signInternal(secret, 'GET', path, now), 'GET', `${path}?x=1`, now)).toMatch(/bad .* signature/);
    expect(verifier.check(signInternal(secret, 'GET', path, now - 61_000), 'GET', path, now)).toMatch(/too old/);
    expect(verifier.check(signInternal(secret, 'GET', path, now + 61_000), 'GET', path, now)).toMatch(/from the future/);
    for (const bad of [undefined, ['a', 'b'], '', 'x.y.z', '1.2.3.4', `${now}.short.sig`, `${now}.${'a'.repeat(16)}.`, `-1.${'a'.repeat(16)}.abc`, 'é'.repeat(100)]) {
      expect(verifier.check(bad, 'GET', path, now)).toMatch(/missing|malformed|bad/);
    }
  });

  it('forgets nonces only once their signatures have expired', () => {
    const verifier = new InternalVerifier(secret);
    const now = 1_800_000_000_000;
    const first = signInternal(secret, 'GET', path, now);
    expect(verifier.check(first, 'GET', path, now)).toBeUndefined();
    // Much later: the old signature is refused for its age, whether or not its nonce is still remembered.
    expect(verifier.check(signInternal(secret, 'GET', path, now + 200_000), 'GET', path, now + 200_000)).toBeUndefined();
    expect(verifier.check(first, 'GET', path, now + 200_000)).toMatch(/too old/);
  });
});
