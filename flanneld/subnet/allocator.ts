/**
 * Pure subnet choice, as upstream: walk [SubnetMin, SubnetMax] in SubnetLen steps, collect the first 100 free
 * subnets and pick one at random (so racing nodes rarely collide). Taken ranges are swept in order, so a network
 * with thousands of leases costs one pass, not a check against every lease per candidate.
 */
import type { AllocationRange } from '../config/network-config-types.js';
import { blockSize, ipNet, type IpNet } from '../ip/cidr.js';
import type { Random } from '../runtime/random.js';

export const FREE_CANDIDATE_LIMIT = 100;

/** True when `subnet` could have been handed out from `range` (family, length, alignment and bounds). */
export function fitsRange(range: AllocationRange, subnet: IpNet): boolean {
  return (
    subnet.family === range.network.family &&
    subnet.prefixLen === range.subnetLen &&
    subnet.ip >= range.subnetMin.value &&
    subnet.ip <= range.subnetMax.value
  );
}

export function freeSubnets(range: AllocationRange, taken: readonly IpNet[], limit = FREE_CANDIDATE_LIMIT): IpNet[] {
  const family = range.network.family;
  const step = blockSize(family, range.subnetLen);
  const intervals = taken
    .filter((n) => n.family === family)
    .map((n) => [n.ip, n.ip + blockSize(family, n.prefixLen) - 1n] as const)
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  const free: IpNet[] = [];
  let next = 0;
  for (let start = range.subnetMin.value; start <= range.subnetMax.value && free.length < limit; start += step) {
    const end = start + step - 1n;
    while (next < intervals.length && (intervals[next] as readonly [bigint, bigint])[1] < start) next++;
    let clash = false;
    for (let i = next; i < intervals.length; i++) {
      const [s, e] = intervals[i] as readonly [bigint, bigint];
      if (s > end) break;
      if (e >= start) {
        clash = true;
        break;
      }
    }
    if (!clash) free.push(ipNet(family, start, range.subnetLen));
  }
  return free;
}

export function pickFreeSubnet(range: AllocationRange, taken: readonly IpNet[], random: Random): IpNet | undefined {
  const free = freeSubnets(range, taken);
  return free.length === 0 ? undefined : free[random.int(free.length)];
}
