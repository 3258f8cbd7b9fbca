/**
 * The upstream subnet key ("10.5.34.0-24", dual stack "10.5.34.0-24&fc00:0:0:1::-64", IPv6-only
 * "0.0.0.0-0&fc00::-64"). It names a lease in etcd and is also our identity for a lease everywhere else.
 */
import { formatIp, parseIPv4, parseIPv6 } from '../ip/address.js';
import { ipNet, networkAddress, type IpNet } from '../ip/cidr.js';

/** Upstream's regex (flannel pkg/subnet/subnet.go), anchored at the end only, with its unescaped dots. */
const SUBNET_KEY_RE = /(\d+\.\d+.\d+.\d+)-(\d+)(?:&([a-f\d:]+)-(\d+))?$/;

export interface SubnetPair {
  readonly subnet?: IpNet;
  readonly ipv6Subnet?: IpNet;
}

export function formatSubnetKey(pair: SubnetPair): string {
  const v4 = pair.subnet ? `${formatIp(networkAddress(pair.subnet))}-${pair.subnet.prefixLen}` : '0.0.0.0-0';
  if (!pair.ipv6Subnet) return v4;
  return `${v4}&${formatIp(networkAddress(pair.ipv6Subnet))}-${pair.ipv6Subnet.prefixLen}`;
}

/**
 * Parses a key (or a path ending in one); "0.0.0.0-0" means "no IPv4 subnet". Undefined when malformed. As loose as
 * upstream: host bits are masked and anything before the match is ignored, so never use it on keys from the store
 * without readCanonicalSubnetKey's check.
 */
export function parseSubnetKey(text: string): SubnetPair | undefined {
  const m = SUBNET_KEY_RE.exec(text);
  if (!m) return undefined;
  const v4 = parseIPv4(m[1] as string);
  const v4Len = Number(m[2]);
  if (!v4 || v4Len > 32) return undefined;
  const subnet = v4Len === 0 && v4.value === 0n ? undefined : ipNet(4, v4.value, v4Len);
  let ipv6Subnet: IpNet | undefined;
  if (m[3] !== undefined) {
    const v6 = parseIPv6(m[3]);
    const v6Len = Number(m[4]);
    if (!v6 || v6Len > 128) return undefined;
    ipv6Subnet = ipNet(6, v6.value, v6Len);
  }
  if (!subnet && !ipv6Subnet) return undefined;
  return Object.freeze({ ...(subnet ? { subnet } : {}), ...(ipv6Subnet ? { ipv6Subnet } : {}) });
}

export type SubnetKeyReading = { readonly pair: SubnetPair } | { readonly problem: string };

/**
 * A key from the shared store, accepted only exactly as flannel writes it (formatSubnetKey). A deliberate difference
 * from upstream, whose end-anchored regex reads "10.5.3.7-24" and "junk10.5.3.0-24" as the lease 10.5.3.0-24: there a
 * second key can stand in for a live peer's lease, and its deletion reads as that peer leaving. Keys written by
 * upstream flannel or by us are canonical, so nothing real is lost.
 */
export function readCanonicalSubnetKey(text: string): SubnetKeyReading {
  const pair = parseSubnetKey(text);
  if (!pair) return { problem: 'not a subnet key' };
  const canonical = formatSubnetKey(pair);
  if (canonical !== text) return { problem: `not a canonical subnet key (the lease ${canonical} is written only as "${canonical}")` };
  return { pair };
}
