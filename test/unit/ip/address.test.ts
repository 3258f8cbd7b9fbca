import { describe, expect, it } from 'vitest';
import { formatIp, parseIPv4, parseIPv6, parseIp } from '../../../flanneld/ip/address.js';
import { containsNet, formatCidr, parseCidr, firstHost, overlaps } from '../../../flanneld/ip/cidr.js';

describe('ip addresses', () => {
  it.each([
    ['10.244.1.0', '10.244.1.0'],
    ['0.0.0.0', '0.0.0.0'],
    ['255.255.255.255', '255.255.255.255'],
  ])('round-trips IPv4 %s', (text, expected) => {
    const a = parseIPv4(text);
    expect(a && formatIp(a)).toBe(expected);
  });

  it.each(['256.1.1.1', '1.2.3', '01.2.3.4', 'a.b.c.d', ''])('rejects IPv4 %s', (text) => {
    expect(parseIPv4(text)).toBeUndefined();
  });

  it.each([
    ['fc00:0:0:1::', 'fc00:0:0:1::'],
    ['FC00:0000:0000:0001:0000:0000:0000:0000', 'fc00:0:0:1::'],
    ['2001:db8::1', '2001:db8::1'],
    ['::', '::'],
    ['::1', '::1'],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
    ['2001:0:0:1:0:0:0:1', '2001:0:0:1::1'],
    ['1:0:2:3:4:5:6:7', '1:0:2:3:4:5:6:7'],
    ['::ffff:1.2.3.4', '::ffff:102:304'],
  ])('formats IPv6 %s as Go does (%s)', (text, expected) => {
    const a = parseIPv6(text);
    expect(a && formatIp(a)).toBe(expected);
  });

  it.each(['1::2::3', ':::', '1:2:3:4:5:6:7:8:9', 'g::1', '1:2:3:4:5:6:7'])('rejects IPv6 %s', (text) => {
    expect(parseIPv6(text)).toBeUndefined();
  });

  it('parseIp picks the family from the text', () => {
    expect(parseIp('10.0.0.1')?.family).toBe(4);
    expect(parseIp('fe80::1')?.family).toBe(6);
  });
});

describe('cidr', () => {
  it('masks host bits like net.ParseCIDR', () => {
    expect(formatCidr(parseCidr('10.244.1.7/24')!)).toBe('10.244.1.0/24');
    expect(formatCidr(parseCidr('2001:cafe:42::1/56')!)).toBe('2001:cafe:42::/56');
  });

  it('rejects bad prefixes', () => {
    expect(parseCidr('10.0.0.0/33')).toBeUndefined();
    expect(parseCidr('10.0.0.0')).toBeUndefined();
    expect(parseCidr('::/129')).toBeUndefined();
  });

  it('answers containment and overlap', () => {
    const net = parseCidr('10.244.0.0/16')!;
    expect(containsNet(net, parseCidr('10.244.3.0/24')!)).toBe(true);
    expect(containsNet(net, parseCidr('10.245.3.0/24')!)).toBe(false);
    expect(overlaps(parseCidr('10.244.3.0/24')!, net)).toBe(true);
    expect(formatIp(firstHost(parseCidr('10.244.3.0/24')!))).toBe('10.244.3.1');
  });
});
