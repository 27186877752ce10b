import { describe, expect, it } from 'vitest';
import { addressVerdict, AllowPatternError, combineAllowLists, matchingRules, nonPublicLiteral, mergeAllowLists, parseAllowList, parseAllowPattern, parseDestination, type Destination } from './allow-list.ts';
import { parseIp } from './ip-address.ts';

const destination = (host: string, port: number): Destination => {
  const parsed = parseDestination(host, port);
  if (parsed === undefined) throw new Error(`${host} is not a destination`);
  return parsed;
};
const allows = (patterns: string[], host: string, port: number) => matchingRules(parseAllowList(patterns), destination(host, port)).length > 0;

describe('parseAllowPattern', () => {
  it.each([
    ['example.com', 'example.com', { kind: 'name', name: 'example.com' }, undefined],
    ['Registry.NPMJS.org.', 'registry.npmjs.org', { kind: 'name', name: 'registry.npmjs.org' }, undefined],
    ['example.com:8080', 'example.com:8080', { kind: 'name', name: 'example.com' }, 8080],
    ['*.example.com', '*.example.com', { kind: 'subdomains', suffix: 'example.com' }, undefined],
    ['*.example.com:8443', '*.example.com:8443', { kind: 'subdomains', suffix: 'example.com' }, 8443],
    ['*', '*', { kind: 'any' }, undefined],
    ['*:8080', '*:8080', { kind: 'any' }, 8080],
    ['localhost', 'localhost', { kind: 'name', name: 'localhost' }, undefined],
    ['bücher.example', 'xn--bcher-kva.example', { kind: 'name', name: 'xn--bcher-kva.example' }, undefined],
    ['_service.example.com', '_service.example.com', { kind: 'name', name: '_service.example.com' }, undefined],
  ])('%s', (text, pattern, host, port) => {
    expect(parseAllowPattern(text)).toEqual({ pattern, host, port });
  });

  it('parses IP addresses, IPv6 in brackets before a port', () => {
    expect(parseAllowPattern('1.2.3.4')).toMatchObject({ pattern: '1.2.3.4', host: { kind: 'ip' }, port: undefined });
    expect(parseAllowPattern('127.0.0.1:8080')).toMatchObject({ pattern: '127.0.0.1:8080', port: 8080 });
    expect(parseAllowPattern('[::1]:8080')).toMatchObject({ pattern: '[::1]:8080', port: 8080 });
    expect(parseAllowPattern('2001:DB8::1')).toMatchObject({ pattern: '2001:db8::1', port: undefined });
    expect(parseAllowPattern('[2001:db8::1]')).toMatchObject({ pattern: '2001:db8::1', port: undefined });
  });

  it.each([
    ['', /empty/],
    ['   ', /empty/],
    ['http://example.com', /without scheme/],
    ['example.com/path', /without scheme/],
    ['user@example.com', /without scheme/],
    ['example.com:0', /outside 1 to 65535/],
    ['example.com:65536', /outside 1 to 65535/],
    ['example.com:http', /not a number/],
    ['example.com:', /not a number/],
    ['a*.example.com', /wildcard in the wrong place/],
    ['foo.*.com', /wildcard in the wrong place/],
    ['*.', /after "\*\." comes a domain name/],
    ['**.example.com', /after "\*\." comes a domain name|wildcard/],
    ['exa mple.com', /white space/],
    ['-bad.example.com', /not a valid host name/],
    ['bad!.com', /not a valid host name/],
    ['1.2.3', /not a valid IP address/],
    ['2130706433', /not a valid IP address/],
    ['010.0.0.1', /not a valid IP address/],
    ['[::1', /without "\]"/],
    ['[example.com]:80', /IPv6 address in brackets/],
    ['[::1]x', /only ":port"/],
    ['0.0.0.0', /unspecified address/],
    ['[::]:80', /unspecified address/],
    ['224.0.0.1', /multicast address/],
    ['255.255.255.255', /broadcast address/],
    ['a'.repeat(301), /longer than 300/],
  ])('refuses %j', (text, message) => {
    expect(() => parseAllowPattern(text)).toThrow(AllowPatternError);
    expect(() => parseAllowPattern(text)).toThrow(message);
  });

  it('names the entry in its message', () => {
    expect(() => parseAllowPattern('http://x.com')).toThrow(/^"http:\/\/x.com" /);
  });
});

describe('mergeAllowLists', () => {
  it('is the normalized union, in order, without duplicates', () => {
    expect(mergeAllowLists(['pypi.org', 'Example.com'], ['example.com', '*.npmjs.org', 'PYPI.org.'])).toEqual(['pypi.org', 'example.com', '*.npmjs.org']);
    expect(mergeAllowLists([], [])).toEqual([]);
  });
});

describe('matchingRules', () => {
  it('a bare host allows ports 80 and 443 only', () => {
    expect(allows(['example.com'], 'example.com', 443)).toBe(true);
    expect(allows(['example.com'], 'example.com', 80)).toBe(true);
    expect(allows(['example.com'], 'example.com', 8080)).toBe(false);
    expect(allows(['example.com'], 'EXAMPLE.com.', 443)).toBe(true);
  });

  it('host:port allows that port only', () => {
    expect(allows(['example.com:8080'], 'example.com', 8080)).toBe(true);
    expect(allows(['example.com:8080'], 'example.com', 443)).toBe(false);
  });

  it('a host does not allow its subdomains, *.domain allows subdomains only', () => {
    expect(allows(['example.com'], 'www.example.com', 443)).toBe(false);
    expect(allows(['*.example.com'], 'www.example.com', 443)).toBe(true);
    expect(allows(['*.example.com'], 'a.b.example.com', 443)).toBe(true);
    expect(allows(['*.example.com'], 'example.com', 443)).toBe(false);
    expect(allows(['*.example.com'], 'badexample.com', 443)).toBe(false);
    expect(allows(['*.example.com'], 'example.com.evil.net', 443)).toBe(false);
  });

  it('an IP pattern matches that IP literal only, never a name; a name never matches an IP literal', () => {
    expect(allows(['127.0.0.1:8080'], '127.0.0.1', 8080)).toBe(true);
    expect(allows(['127.0.0.1:8080'], '::ffff:127.0.0.1', 8080)).toBe(true);
    expect(allows(['127.0.0.1:8080'], 'localhost', 8080)).toBe(false);
    expect(allows(['localhost:8080'], '127.0.0.1', 8080)).toBe(false);
    expect(allows(['[::1]:8080'], '::1', 8080)).toBe(true);
    expect(allows(['[::1]:8080'], '127.0.0.1', 8080)).toBe(false);
  });

  it('* matches any host on 80 and 443', () => {
    expect(allows(['*'], 'anything.example', 443)).toBe(true);
    expect(allows(['*'], '8.8.8.8', 80)).toBe(true);
    expect(allows(['*'], 'anything.example', 22)).toBe(false);
    expect(allows(['*:22'], 'anything.example', 22)).toBe(true);
  });

  it('an empty list allows nothing', () => {
    expect(allows([], 'example.com', 443)).toBe(false);
  });
});

describe('parseDestination', () => {
  it('refuses what is neither a name nor a strict IP', () => {
    expect(parseDestination('2130706433', 80)).toBeUndefined();
    expect(parseDestination('0x7f.1', 80)).toBeUndefined();
    expect(parseDestination('exa mple.com', 80)).toBeUndefined();
    expect(parseDestination('example.com', 0)).toBeUndefined();
    expect(parseDestination('example.com', 70000)).toBeUndefined();
    expect(parseDestination('::ffff:127.0.0.1', 80)).toMatchObject({ host: '127.0.0.1', port: 80 });
  });
});

describe('addressVerdict (after resolution)', () => {
  const verdict = (patterns: string[], host: string, port: number, address: string) => addressVerdict(parseAllowList(patterns), destination(host, port), parseIp(address)!);

  it('public addresses pass', () => {
    expect(verdict(['example.com'], 'example.com', 443, '93.184.215.14')).toEqual({ ok: true, class: 'public' });
  });

  it('a name that resolves to a private or loopback address is refused unless listed exactly', () => {
    expect(verdict(['example.com'], 'example.com', 443, '127.0.0.1')).toEqual({ ok: false, class: 'loopback' });
    expect(verdict(['*.example.com'], 'a.example.com', 443, '10.0.0.1')).toEqual({ ok: false, class: 'private' });
    expect(verdict(['*'], 'a.example.com', 443, '169.254.169.254')).toEqual({ ok: false, class: 'link-local' });
    expect(verdict(['example.com'], 'example.com', 443, '::ffff:192.168.0.1')).toEqual({ ok: false, class: 'private' });
    expect(verdict(['example.com'], 'example.com', 443, 'fd00::1')).toEqual({ ok: false, class: 'unique-local' });
    expect(verdict(['example.com'], 'example.com', 443, '100.64.1.1')).toEqual({ ok: false, class: 'cgnat' });
    // Listed exactly: the name with its port, or the address itself.
    expect(verdict(['db.internal:5432'], 'db.internal', 5432, '10.0.0.5')).toEqual({ ok: true, class: 'private' });
    expect(verdict(['db.internal', '10.0.0.5'], 'db.internal', 443, '10.0.0.5')).toEqual({ ok: true, class: 'private' });
    expect(verdict(['db.internal', '10.0.0.5:5432'], 'db.internal', 443, '10.0.0.5')).toEqual({ ok: false, class: 'private' });
  });

  it('an IP literal that is private passes only when that IP is listed', () => {
    expect(verdict(['127.0.0.1:8080'], '127.0.0.1', 8080, '127.0.0.1')).toEqual({ ok: true, class: 'loopback' });
    expect(verdict(['*:8080'], '127.0.0.1', 8080, '127.0.0.1')).toEqual({ ok: false, class: 'loopback' });
  });

  it('unspecified, multicast and broadcast addresses are never destinations', () => {
    expect(verdict(['example.com:80'], 'example.com', 80, '0.0.0.0')).toEqual({ ok: false, class: 'unspecified' });
    expect(verdict(['example.com:80'], 'example.com', 80, '::')).toEqual({ ok: false, class: 'unspecified' });
    expect(verdict(['example.com:80'], 'example.com', 80, '224.0.0.1')).toEqual({ ok: false, class: 'multicast' });
  });
});

describe('combineAllowLists', () => {
  it("keeps the server's trust and marks the job's own rules when they may not open private addresses", () => {
    const rules = combineAllowLists(['pypi.org', '10.0.0.5:5432'], ['10.0.0.5:5432', 'db.internal:5432', 'example.com'], false);
    expect(rules.map((rule) => [rule.pattern, rule.opensPrivate])).toEqual([
      ['pypi.org', undefined],
      ['10.0.0.5:5432', undefined],
      ['db.internal:5432', false],
      ['example.com', false],
    ]);
    // The job's exact name:port still reaches public addresses, never private ones.
    expect(addressVerdict(rules, destination('db.internal', 5432), parseIp('10.0.0.9')!)).toEqual({ ok: false, class: 'private' });
    expect(addressVerdict(rules, destination('db.internal', 5432), parseIp('192.0.2.1')!).ok).toBe(false);
    expect(addressVerdict(rules, destination('example.com', 443), parseIp('8.8.8.8')!)).toEqual({ ok: true, class: 'public' });
    // The server's exact IP still opens its private address.
    expect(addressVerdict(rules, destination('10.0.0.5', 5432), parseIp('10.0.0.5')!)).toEqual({ ok: true, class: 'private' });
    expect(combineAllowLists([], ['db.internal:5432'], true)[0]?.opensPrivate).toBeUndefined();
  });

  it('nonPublicLiteral names private IP patterns', () => {
    expect(nonPublicLiteral(parseAllowPattern('127.0.0.1:80'))).toBe('loopback');
    expect(nonPublicLiteral(parseAllowPattern('8.8.8.8'))).toBeUndefined();
    expect(nonPublicLiteral(parseAllowPattern('localhost:80'))).toBeUndefined();
  });
});
