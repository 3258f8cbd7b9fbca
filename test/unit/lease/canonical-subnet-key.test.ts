/**
 * Keys from the shared store are leases only exactly as flannel writes them: everything upstream's looser regex
 * reads as some other lease (host bits, text before or after, leading zeros, IPv6 spelled otherwise) is refused.
 */
import { describe, expect, it } from 'vitest';
import { formatSubnetKey, readCanonicalSubnetKey } from '../../../flanneld/lease/subnet-key.js';

describe('canonical subnet keys', () => {
  it.each([
    '10.244.3.0-24',
    '10.244.3.0-24&2001:db8:a:3::-64',
    '0.0.0.0-0&2001:db8:a:3::-64',
    '10.0.0.0-8',
    '10.244.3.128-25',
    '10.5.34.0-24&fc00:0:0:1::-64',
  ])('accepts %s as written', (key) => {
    const read = readCanonicalSubnetKey(key);
    expect(read).toHaveProperty('pair');
    if ('pair' in read) expect(formatSubnetKey(read.pair)).toBe(key);
  });

  it.each([
    ['10.244.3.7-24', 'host bits set', '10.244.3.0-24'],
    ['junk10.244.3.0-24', 'text before the key', '10.244.3.0-24'],
    ['x/10.244.3.0-24', 'a path, not a key', '10.244.3.0-24'],
    ['10.244.3.0-24&2001:db8:a:3::1-64', 'IPv6 host bits set', '10.244.3.0-24&2001:db8:a:3::-64'],
    ['10.244.3.0-24&2001:db8:a:3:0:0:0:0-64', 'IPv6 not compressed', '10.244.3.0-24&2001:db8:a:3::-64'],
    ['10.244.3.0-024', 'a leading zero in the length', '10.244.3.0-24'],
  ])('refuses %s (%s), which upstream reads as %s', (key, _why, upstreamReads) => {
    const read = readCanonicalSubnetKey(key);
    expect(read).toEqual({ problem: `not a canonical subnet key (the lease ${upstreamReads} is written only as "${upstreamReads}")` });
  });

  it.each(['garbage', '10.244.3.0', '10.244.3.0-33', '0.0.0.0-0', '10.244.3.0-24&zz::-64', '010.244.3.0-24', '', '10.244.3.0-24 ', '10.244.3.0-24&2001:DB8:a:3::-64'])(
    'refuses %j as not a subnet key at all (or not canonical)',
    (key) => {
      expect(readCanonicalSubnetKey(key)).toHaveProperty('problem');
    },
  );
});
