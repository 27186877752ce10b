import { describe, expect, it } from 'vitest';
import { loadConfig } from '../config.ts';
import { jobNetworkFromRequest, jobOpensPrivate, sandboxAllowRules } from './job-network.ts';

describe('WORKCELL_NETWORK_ALLOW', () => {
  it('is a comma-separated list, normalized, default empty; a bad entry fails start-up naming it', () => {
    expect(loadConfig({}).networkAllow).toEqual([]);
    expect(loadConfig({ WORKCELL_NETWORK_ALLOW: ' PyPI.org, *.npmjs.org,,pypi.org ' }).networkAllow).toEqual(['pypi.org', '*.npmjs.org']);
    expect(() => loadConfig({ WORKCELL_NETWORK_ALLOW: 'pypi.org,https://x.test' })).toThrow(/WORKCELL_NETWORK_ALLOW: "https:\/\/x.test" is not a destination/);
    expect(loadConfig({ WORKCELL_NETWORK_JOB_PRIVATE: 'false' }).networkJobPrivate).toBe(false);
    expect(loadConfig({}).networkJobPrivate).toBeUndefined();
  });
});

describe('a job network', () => {
  it('may open private addresses by default only without an API key', () => {
    expect(jobOpensPrivate({ networkJobPrivate: undefined }, null)).toBe(true);
    expect(jobOpensPrivate({ networkJobPrivate: undefined }, 'key_1')).toBe(false);
    expect(jobOpensPrivate({ networkJobPrivate: true }, 'key_1')).toBe(true);
    expect(jobOpensPrivate({ networkJobPrivate: false }, null)).toBe(false);
  });

  it('validates and normalizes the job list', () => {
    expect(jobNetworkFromRequest({ networkJobPrivate: undefined }, undefined, null)).toEqual({ allow: [] });
    expect(jobNetworkFromRequest({ networkJobPrivate: undefined }, ['A.example', 'a.example', '127.0.0.1:80'], null)).toEqual({ allow: ['a.example', '127.0.0.1:80'] });
    expect(() => jobNetworkFromRequest({ networkJobPrivate: undefined }, ['127.0.0.1:80'], 'key_1')).toThrow(/loopback address/);
    expect(() => jobNetworkFromRequest({ networkJobPrivate: undefined }, ['bad pattern'], null)).toThrow(/network.allow: "bad pattern"/);
  });

  it("runs with the server's list first and the job's own after it", () => {
    const rules = sandboxAllowRules({ networkAllow: ['pypi.org'], networkJobPrivate: undefined }, { network: { allow: ['pypi.org', 'db.internal:5432'] }, owner: 'key_1' });
    expect(rules.map((rule) => [rule.pattern, rule.opensPrivate])).toEqual([
      ['pypi.org', undefined],
      ['db.internal:5432', false],
    ]);
  });
});
