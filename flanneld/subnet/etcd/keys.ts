/** Upstream's etcd layout: <prefix>/config and <prefix>/subnets/<subnet key> (path.Join semantics). */
import { posix } from 'node:path';
import { formatSubnetKey, readCanonicalSubnetKey, type SubnetKeyReading, type SubnetPair } from '../../lease/subnet-key.js';

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

/** The lease a path names, only when the text after `<prefix>/subnets/` is a canonical subnet key. */
export function readSubnetKeyPath(prefix: string, path: string): SubnetKeyReading {
  const base = subnetsPrefix(prefix);
  if (!path.startsWith(base)) return { problem: `not under ${base}` };
  return readCanonicalSubnetKey(path.slice(base.length));
}
