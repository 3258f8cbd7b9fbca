/** Upstream's etcd layout: <prefix>/config and <prefix>/subnets/<subnet key> (path.Join semantics). */
import { posix } from 'node:path';
import { formatSubnetKey, parseSubnetKey, type SubnetPair } from '../../lease/subnet-key.js';

export const DEFAULT_ETCD_PREFIX = '/coreos.com/network';

export function configKey(prefix: string): string {
  return posix.join(prefix, 'config');
}

/** The range every lease key lives under, with the trailing slash so "subnets2" is not matched. */
export function subnetsPrefix(prefix: string): string {
  return posix.join(prefix, 'subnets') + '/';
}

export function subnetKeyPath(prefix: string, pair: SubnetPair): string {
  return subnetsPrefix(prefix) + formatSubnetKey(pair);
}

export function parseSubnetKeyPath(prefix: string, path: string): SubnetPair | undefined {
  const base = subnetsPrefix(prefix);
  return path.startsWith(base) ? parseSubnetKey(path.slice(base.length)) : undefined;
}
