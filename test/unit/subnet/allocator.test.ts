import { describe, expect, it } from 'vitest';
import { parseIPv4 } from '../../../flanneld/ip/address.js';
import { formatCidr, parseCidr, type IpNet } from '../../../flanneld/ip/cidr.js';
import type { AllocationRange } from '../../../flanneld/config/network-config-types.js';
import { fitsRange, freeSubnets, pickFreeSubnet } from '../../../flanneld/subnet/allocator.js';
import { seededRandom } from '../../../flanneld/runtime/random.js';

const range: AllocationRange = {
  network: parseCidr('10.244.0.0/16')!,
  subnetLen: 24,
  subnetMin: parseIPv4('10.244.1.0')!,
  subnetMax: parseIPv4('10.244.255.0')!,
};
const nets = (...texts: string[]): IpNet[] => texts.map((t) => parseCidr(t)!);

describe('allocator', () => {
  it('collects the first 100 free subnets from SubnetMin', () => {
    const free = freeSubnets(range, []);
    expect(free).toHaveLength(100);
    expect(formatCidr(free[0]!)).toBe('10.244.1.0/24');
    expect(formatCidr(free[99]!)).toBe('10.244.100.0/24');
  });

  it('skips taken subnets, including larger or smaller overlapping ones', () => {
    const free = freeSubnets(range, nets('10.244.1.0/24', '10.244.2.0/23', '10.244.5.128/25'), 3);
    expect(free.map(formatCidr)).toEqual(['10.244.4.0/24', '10.244.6.0/24', '10.244.7.0/24']);
  });

  it('returns nothing when the range is full', () => {
    const taken = Array.from({ length: 255 }, (_, i) => parseCidr(`10.244.${i + 1}.0/24`)!);
    expect(pickFreeSubnet(range, taken, seededRandom(1))).toBeUndefined();
  });

  it('handles thousands of taken subnets in one sweep', () => {
    const big: AllocationRange = { ...range, network: parseCidr('10.0.0.0/8')!, subnetMin: parseIPv4('10.0.1.0')!, subnetMax: parseIPv4('10.255.255.0')! };
    const taken = Array.from({ length: 5000 }, (_, i) => parseCidr(`10.${(i >> 8) & 255}.${i & 255}.0/24`)!);
    const free = freeSubnets(big, taken);
    expect(formatCidr(free[0]!)).toBe('10.19.136.0/24');
  });

  it('picks uniformly among the free ones with the injected Random', () => {
    const picks = new Set<string>();
    const random = seededRandom(7);
    for (let i = 0; i < 50; i++) picks.add(formatCidr(pickFreeSubnet(range, [], random)!));
    expect(picks.size).toBeGreaterThan(30);
  });

  it('knows what fits the range', () => {
    expect(fitsRange(range, parseCidr('10.244.7.0/24')!)).toBe(true);
    expect(fitsRange(range, parseCidr('10.244.0.0/24')!)).toBe(false);
    expect(fitsRange(range, parseCidr('10.244.7.0/25')!)).toBe(false);
    expect(fitsRange(range, parseCidr('10.245.7.0/24')!)).toBe(false);
  });
});
