import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { BrowserTokens, linkTtlMs, sessionTtlMs } from './browser-tokens.ts';

describe('BrowserTokens', () => {
  const tokens = new BrowserTokens(randomBytes(32));

  it('links open once, within their time, for what they name', () => {
    const now = Date.now();
    const { token, expires } = tokens.link('job_a', 'key_1', 'desktop', now);
    expect(expires).toBe(now + linkTtlMs);
    expect(tokens.verify(token, 'session', now)).toBeUndefined(); // a link is no session
    expect(tokens.redeemLink(token, now + linkTtlMs)).toBeUndefined(); // expired
    expect(tokens.redeemLink(token, now + 1)).toEqual({ kind: 'link', job: 'job_a', owner: 'key_1', service: 'desktop', expires });
    expect(tokens.redeemLink(token, now + 2)).toBeUndefined(); // used
  });

  it('sessions last hours and cannot be forged, altered or made with another secret', () => {
    const now = Date.now();
    const { token } = tokens.session('job_a', 'key_1', now);
    expect(tokens.verify(token, 'session', now + sessionTtlMs - 1)?.job).toBe('job_a');
    expect(tokens.verify(token, 'session', now + sessionTtlMs)).toBeUndefined();
    const [body, mac] = token.split('.') as [string, string];
    const altered = Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(body, 'base64url').toString()), job: 'job_b' })).toString('base64url');
    expect(tokens.verify(`${altered}.${mac}`, 'session', now)).toBeUndefined();
    expect(new BrowserTokens(randomBytes(32)).verify(token, 'session', now)).toBeUndefined();
    for (const bad of ['', '.', 'a.b', `${token}.x`, `${body}.`, 'x'.repeat(2000), `${Buffer.from('{').toString('base64url')}.${mac}`]) expect(tokens.verify(bad, 'session', now)).toBeUndefined();
  });
});
