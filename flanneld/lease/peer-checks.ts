/**
 * What a peer's lease must satisfy before anything of it reaches the kernel. Every node can write the shared store,
 * so a lease is input from another program, possibly wrong or hostile: these checks keep one bad entry from taking
 * over this node's routes or cutting it off its own network (docs/peer-validation.md has the table of cases).
 * Checks here look at one lease against this node's own facts; checks between peers live in peer-guard.ts.
 */
import { formatIp, sameIp, type IpAddress } from '../ip/address.js';
import { containsIp, containsNet, formatCidr, overlaps, parseCidr, type IpNet } from '../ip/cidr.js';
import type { AllocationRanges } from '../config/network-config-types.js';
import type { Lease } from './lease.js';

export const REFUSAL_REASONS = [
  'outside-network', 'wrong-subnet-length', 'overlaps-own-subnet', 'overlaps-peer', 'covers-host-network',
  'bad-public-ip', 'bad-vtep-mac', 'duplicate-vtep-mac', 'datapath-collision',
] as const;
export type RefusalReason = (typeof REFUSAL_REASONS)[number];

export interface Refusal {
  readonly reason: RefusalReason;
  /** One line naming the value at fault; bounded in length whatever the lease holds. */
  readonly detail: string;
}

/** What this node is: the facts a peer's lease must not contradict. */
export interface HostFacts {
  /** Every address on this host's interfaces. */
  readonly addresses: readonly IpAddress[];
  /** Networks of this host's directly connected routes (the underlay's among them). */
  readonly connectedNetworks: readonly IpNet[];
}

export interface PeerRules {
  readonly ranges: AllocationRanges;
  /** etcd mode: a peer's subnet has exactly SubnetLen / IPv6SubnetLen, as flannel leases them; kube: any inside. */
  readonly exactSubnetLength: boolean;
  readonly own: Lease;
  readonly host: HostFacts;
}

const DETAIL_LIMIT = 160;
/** Shortens what a lease said, so a megabyte of junk costs a log line, not a megabyte. */
export function bounded(text: string, limit = DETAIL_LIMIT): string {
  return text.length <= limit ? text : `${text.slice(0, limit)}… (${text.length} characters)`;
}

const V4_NOT_UNICAST = ['0.0.0.0/8', '127.0.0.0/8', '169.254.0.0/16', '224.0.0.0/4', '240.0.0.0/4'].map((c) => parseCidr(c) as IpNet);
const V6_NOT_UNICAST = ['::/128', '::1/128', 'fe80::/10', 'ff00::/8'].map((c) => parseCidr(c) as IpNet);
const NOT_UNICAST_NAMES = ['unspecified/"this network"', 'loopback', 'link-local', 'multicast', 'reserved/broadcast'];
const V6_NAMES = ['unspecified', 'loopback', 'link-local', 'multicast'];

/** Why `ip` cannot be a peer's public address, or undefined when it can. */
export function publicIpProblem(ip: IpAddress, host: HostFacts): string | undefined {
  const ranges = ip.family === 4 ? V4_NOT_UNICAST : V6_NOT_UNICAST;
  const names = ip.family === 4 ? NOT_UNICAST_NAMES : V6_NAMES;
  const i = ranges.findIndex((r) => containsIp(r, ip));
  if (i >= 0) return `public IP ${formatIp(ip)} is ${names[i]}, not a unicast address`;
  if (host.addresses.some((a) => sameIp(a, ip))) return `public IP ${formatIp(ip)} is an address of this host`;
  return undefined;
}

/** Lower-case colon form of a unicast, non-zero 6-octet MAC, or why it is not one. */
export function vtepMacProblem(value: unknown): string | undefined {
  if (typeof value !== 'string' || !/^[0-9a-f]{2}([:-])[0-9a-f]{2}(?:\1[0-9a-f]{2}){4}$/i.test(value)) {
    return `VtepMAC ${bounded(JSON.stringify(value) ?? String(value), 40)} is not a MAC address`;
  }
  const octets = value.split(/[:-]/).map((o) => Number.parseInt(o, 16));
  if (octets.every((o) => o === 0)) return `VtepMAC ${value} is all zeros`;
  if (((octets[0] ?? 0) & 1) === 1) return `VtepMAC ${value} is a multicast address`;
  return undefined;
}

/** The VtepMACs a lease publishes (vxlan), per family, as written. */
export function publishedMacs(lease: Lease): unknown[] {
  const macs: unknown[] = [];
  for (const data of [lease.attrs.backendData, lease.attrs.backendV6Data]) {
    if (typeof data === 'object' && data !== null && !Array.isArray(data)) {
      const entry = Object.entries(data).find(([k]) => k.toLowerCase() === 'vtepmac');
      if (entry) macs.push(entry[1]);
    }
  }
  return macs;
}

function subnetProblem(net: IpNet, rules: PeerRules): Refusal | undefined {
  const range = net.family === 4 ? rules.ranges.v4 : rules.ranges.v6;
  const family = `IPv${net.family}`;
  if (!range) return { reason: 'outside-network', detail: `subnet ${formatCidr(net)}: this network has no ${family} Network` };
  if (!containsNet(range.network, net)) {
    return { reason: 'outside-network', detail: `subnet ${formatCidr(net)} is not inside the Network ${formatCidr(range.network)}` };
  }
  if (rules.exactSubnetLength && net.prefixLen !== range.subnetLen) {
    return { reason: 'wrong-subnet-length', detail: `subnet ${formatCidr(net)} is not a /${range.subnetLen} (${net.family === 4 ? 'SubnetLen' : 'IPv6SubnetLen'})` };
  }
  const own = net.family === 4 ? rules.own.subnet : rules.own.ipv6Subnet;
  if (own && overlaps(own, net)) return { reason: 'overlaps-own-subnet', detail: `subnet ${formatCidr(net)} overlaps this node's subnet ${formatCidr(own)}` };
  const address = rules.host.addresses.find((a) => a.family === net.family && containsIp(net, a) && !(own && containsIp(own, a)));
  if (address) return { reason: 'covers-host-network', detail: `subnet ${formatCidr(net)} holds ${formatIp(address)}, an address of this host` };
  const connected = rules.host.connectedNetworks.find((c) => c.family === net.family && overlaps(c, net) && !containsNet(c, range.network) && !(own && containsNet(own, c)));
  if (connected) return { reason: 'covers-host-network', detail: `subnet ${formatCidr(net)} overlaps ${formatCidr(connected)}, a network connected to this host` };
  return undefined;
}

/** The first reason this lease, taken alone, cannot be a peer; undefined when it can. */
export function checkPeerLease(lease: Lease, rules: PeerRules): Refusal | undefined {
  for (const net of [lease.subnet, lease.ipv6Subnet]) {
    const problem = net && subnetProblem(net, rules);
    if (problem) return problem;
  }
  for (const ip of [lease.attrs.publicIP, lease.attrs.publicIPv6]) {
    const problem = ip && publicIpProblem(ip, rules.host);
    if (problem) return { reason: 'bad-public-ip', detail: problem };
  }
  for (const mac of publishedMacs(lease)) {
    const problem = vtepMacProblem(mac);
    if (problem) return { reason: 'bad-vtep-mac', detail: problem };
  }
  return undefined;
}
