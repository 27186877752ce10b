import { describe, expect, it } from 'vitest';
import { classifyIp, formatIp, parseIp, sameIp, unmapIp } from './ip-address.ts';

const classify = (text: string) => {
  const address = parseIp(text);
  if (address === undefined) throw new Error(`${text} did not parse`);
  return classifyIp(address);
};

describe('parseIp', () => {
  it('parses strict IPv4 and refuses shorthand, octal and hex forms', () => {
    expect(parseIp('203.0.113.7')).toEqual({ family: 4, bytes: Uint8Array.of(203, 0, 113, 7) });
    for (const bad of ['127.1', '2130706433', '0x7f.0.0.1', '010.0.0.1', '1.2.3.256', '1.2.3.4.5', '', 'example.com']) expect(parseIp(bad), bad).toBeUndefined();
  });

  it('parses IPv6, with an embedded IPv4 tail, and refuses zone ids', () => {
    expect(formatIp(parseIp('::1')!)).toBe('::1');
    expect(formatIp(parseIp('2001:DB8:0:0:0:0:0:1')!)).toBe('2001:db8::1');
    expect(formatIp(parseIp('::ffff:127.0.0.1')!)).toBe('::ffff:7f00:1');
    expect(formatIp(parseIp('1:2:3:4:5:6:1.2.3.4')!)).toBe('1:2:3:4:5:6:102:304');
    expect(formatIp(parseIp('fe80::')!)).toBe('fe80::');
    expect(formatIp(parseIp('1:0:0:1:0:0:0:1')!)).toBe('1:0:0:1::1');
    expect(parseIp('fe80::1%eth0')).toBeUndefined();
    expect(parseIp('1:2:3:4:5:6:7:8:9')).toBeUndefined();
  });

  it('unmaps IPv4-mapped addresses and compares across the two forms', () => {
    expect(formatIp(unmapIp(parseIp('::ffff:10.1.2.3')!))).toBe('10.1.2.3');
    expect(sameIp(parseIp('::ffff:127.0.0.1')!, parseIp('127.0.0.1')!)).toBe(true);
    expect(sameIp(parseIp('::1')!, parseIp('127.0.0.1')!)).toBe(false);
  });
});

describe('classifyIp', () => {
  it.each([
    ['8.8.8.8', 'public'],
    ['1.1.1.1', 'public'],
    ['0.0.0.0', 'unspecified'],
    ['0.1.2.3', 'unspecified'],
    ['10.0.0.1', 'private'],
    ['172.16.0.1', 'private'],
    ['172.31.255.255', 'private'],
    ['172.32.0.1', 'public'],
    ['192.168.1.1', 'private'],
    ['100.64.0.1', 'cgnat'],
    ['100.127.255.255', 'cgnat'],
    ['100.128.0.1', 'public'],
    ['127.0.0.1', 'loopback'],
    ['127.255.0.9', 'loopback'],
    ['169.254.169.254', 'link-local'],
    ['224.0.0.1', 'multicast'],
    ['239.255.255.250', 'multicast'],
    ['255.255.255.255', 'broadcast'],
    ['240.0.0.1', 'reserved'],
    ['192.0.2.5', 'documentation'],
    ['198.18.0.1', 'benchmarking'],
  ])('IPv4 %s is %s', (address, kind) => expect(classify(address)).toBe(kind));

  it.each([
    ['2606:4700:4700::1111', 'public'],
    ['::', 'unspecified'],
    ['::1', 'loopback'],
    ['fc00::1', 'unique-local'],
    ['fd12:3456::1', 'unique-local'],
    ['fe80::1', 'link-local'],
    ['febf::1', 'link-local'],
    ['fec0::1', 'site-local'],
    ['ff02::1', 'multicast'],
    ['2001:db8::1', 'documentation'],
    ['2001:0:4136:e378::1', 'reserved'],
    ['::127.0.0.1', 'reserved'],
    ['100::1', 'reserved'],
  ])('IPv6 %s is %s', (address, kind) => expect(classify(address)).toBe(kind));

  it.each([
    ['::ffff:127.0.0.1', 'loopback'],
    ['::ffff:10.0.0.1', 'private'],
    ['::ffff:169.254.169.254', 'link-local'],
    ['::ffff:8.8.8.8', 'public'],
    ['64:ff9b::127.0.0.1', 'loopback'],
    ['64:ff9b::8.8.8.8', 'public'],
    ['2002:7f00:1::', 'loopback'],
    ['2002:0808:0808::1', 'public'],
  ])('IPv6 %s carrying IPv4 is classified by it: %s', (address, kind) => expect(classify(address)).toBe(kind));
});
