import { describe, expect, it } from 'vitest';
import { parseIPv4, parseIPv6 } from '../../../flanneld/ip/address.js';
import { parseCidr } from '../../../flanneld/ip/cidr.js';
import { decodeLeaseAttrs, encodeLeaseAttrs, type Lease } from '../../../flanneld/lease/lease.js';
import { LeaseTable } from '../../../flanneld/lease/lease-table.js';
import { formatSubnetKey, parseSubnetKey } from '../../../flanneld/lease/subnet-key.js';

describe('lease JSON', () => {
  it('encodes exactly as upstream (field order, null PublicIPv6)', () => {
    const text = encodeLeaseAttrs({
      publicIP: parseIPv4('192.168.64.3')!,
      backendType: 'vxlan',
      backendData: { VNI: 1, VtepMAC: 'c6:d2:32:6f:8f:44' },
    });
    expect(text).toBe('{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}');
  });

  it('leaves BackendType out for udp and writes 0.0.0.0 without an IPv4 address', () => {
    expect(encodeLeaseAttrs({ backendType: '', publicIPv6: parseIPv6('2001:db8::1')! })).toBe('{"PublicIP":"0.0.0.0","PublicIPv6":"2001:db8::1"}');
  });

  it('decodes keys case-insensitively and ignores unknown ones', () => {
    const attrs = decodeLeaseAttrs('{"publicip":"10.0.0.1","BACKENDTYPE":"host-gw","Extra":1}');
    expect(attrs.backendType).toBe('host-gw');
    expect(encodeLeaseAttrs(attrs)).toBe('{"PublicIP":"10.0.0.1","PublicIPv6":null,"BackendType":"host-gw"}');
  });

  it.each(['[]', '"x"', '{"PublicIP":"nope"}', '{"PublicIPv6":"1.2.3.4"}', '{"BackendType":5}', '{'])('rejects %s', (text) => {
    expect(() => decodeLeaseAttrs(text)).toThrow();
  });
});

describe('subnet keys', () => {
  it.each([
    ['10.5.34.0-24', '10.5.34.0-24'],
    ['10.5.34.0-24&fc00:0:0:1::-64', '10.5.34.0-24&fc00:0:0:1::-64'],
    ['0.0.0.0-0&fc00::-64', '0.0.0.0-0&fc00::-64'],
    ['/coreos.com/network/subnets/10.1.2.0-24', '10.1.2.0-24'],
  ])('round-trips %s', (text, expected) => {
    expect(formatSubnetKey(parseSubnetKey(text)!)).toBe(expected);
  });

  it('reads 0.0.0.0-0 as no IPv4 subnet', () => {
    const pair = parseSubnetKey('0.0.0.0-0&fc00::-64')!;
    expect(pair.subnet).toBeUndefined();
    expect(pair.ipv6Subnet?.prefixLen).toBe(64);
  });

  it.each(['garbage', '10.1.2.0', '10.1.2.0-33', '0.0.0.0-0', '10.1.2.0-24&zz::-64'])('rejects %s', (text) => {
    expect(parseSubnetKey(text)).toBeUndefined();
  });
});

describe('LeaseTable', () => {
  const lease = (cidr: string, ip: string): Lease => ({
    subnet: parseCidr(cidr)!,
    attrs: { publicIP: parseIPv4(ip)!, backendType: 'alloc' },
    reservation: false,
  });

  it('emits nothing for a put that only renews', () => {
    const table = new LeaseTable();
    expect(table.put(lease('10.1.1.0/24', '192.0.2.1'))?.type).toBe('added');
    expect(table.put(lease('10.1.1.0/24', '192.0.2.1'))).toBeUndefined();
    expect(table.put(lease('10.1.1.0/24', '192.0.2.9'))?.type).toBe('added');
  });

  it('diffs a snapshot into added and removed, carrying the removed lease', () => {
    const table = new LeaseTable();
    table.replaceAll([lease('10.1.1.0/24', '192.0.2.1'), lease('10.1.2.0/24', '192.0.2.2')]);
    const events = table.replaceAll([lease('10.1.2.0/24', '192.0.2.2'), lease('10.1.3.0/24', '192.0.2.3')]);
    expect(events.map((e) => `${e.type} ${formatSubnetKey(e.lease)} ${e.lease.attrs.publicIP?.value}`)).toEqual([
      'added 10.1.3.0-24 3221225987',
      'removed 10.1.1.0-24 3221225985',
    ]);
  });
});
