/** What a backend's planner returns for one peer lease, shared by every backend that programs peers. */
import { formatIp } from '../flanneld/ip/address.js';
import { formatCidr } from '../flanneld/ip/cidr.js';
import type { Lease } from '../flanneld/lease/lease.js';
import type { DatapathEntry } from './datapath/datapath.js';

export interface PeerEntries {
  readonly entries: readonly DatapathEntry[];
  /** Why the lease (or one family of it) produced no entries, each naming the lease. */
  readonly skipped: readonly string[];
}

/** "lease 10.244.3.0/24 (public IP 192.0.2.3)": how log lines and skip reasons name a peer. */
export function leaseLabel(peer: Lease): string {
  const nets = [peer.subnet, peer.ipv6Subnet].flatMap((n) => (n ? [formatCidr(n)] : []));
  const ips = [peer.attrs.publicIP, peer.attrs.publicIPv6].flatMap((ip) => (ip ? [formatIp(ip)] : []));
  return `lease ${nets.join(' + ') || '(no subnet)'} (public IP ${ips.join(', ') || 'none'})`;
}
