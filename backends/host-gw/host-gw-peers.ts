/**
 * What one peer lease asks of the kernel under host-gw (docs/compatibility.md#host-gw-backend): a route to the peer's
 * subnet via its public address on the external interface, per family. That only works when the peer is on a directly
 * connected network, which `checkHostGwReachable` lets the caller verify first instead of installing a route the kernel
 * rejects.
 */
import { formatIp, type IpAddress } from '../../flanneld/ip/address.js';
import { containsIp, formatCidr, type IpNet } from '../../flanneld/ip/cidr.js';
import type { Lease } from '../../flanneld/lease/lease.js';
import type { DatapathEntry } from '../datapath/datapath.js';
import { leaseLabel, type PeerEntries } from '../peer-entries.js';

export interface HostGwFamilyContext {
  /** Index of the external interface the routes leave by. */
  readonly linkIndex: number;
}

/** A family without a context is not enabled on this node, so peers' subnets of that family are left alone. */
export interface HostGwPeerContext {
  readonly v4?: HostGwFamilyContext;
  readonly v6?: HostGwFamilyContext;
}

export type HostGwPeerPlan = PeerEntries;

export function planHostGwPeer(peer: Lease, ctx: HostGwPeerContext): HostGwPeerPlan {
  if (peer.attrs.backendType !== 'host-gw') {
    return {
      entries: [],
      skipped: [`ignoring non-host-gw ${leaseLabel(peer)}: BackendType is ${JSON.stringify(peer.attrs.backendType)}`],
    };
  }
  const families = [
    { family: 4, ctx: ctx.v4, subnet: peer.subnet, via: peer.attrs.publicIP, ipKey: 'PublicIP' },
    { family: 6, ctx: ctx.v6, subnet: peer.ipv6Subnet, via: peer.attrs.publicIPv6, ipKey: 'PublicIPv6' },
  ] as const;
  const entries: DatapathEntry[] = [];
  const skipped: string[] = [];
  for (const f of families) {
    if (!f.ctx || !f.subnet) continue;
    if (!f.via) {
      skipped.push(`ignoring IPv${f.family} part of ${leaseLabel(peer)}: no ${f.ipKey}`);
      continue;
    }
    entries.push({ kind: 'route', dst: f.subnet, via: f.via, linkIndex: f.ctx.linkIndex });
  }
  return { entries, skipped };
}

/**
 * undefined when `peerIP` lies in one of this node's directly connected underlay networks, else the reason the
 * peer cannot be served by host-gw (naming the peer and the networks that were checked).
 */
export function checkHostGwReachable(peerIP: IpAddress, directlyConnected: readonly IpNet[]): string | undefined {
  if (directlyConnected.some((net) => containsIp(net, peerIP))) return undefined;
  const sameFamily = directlyConnected.filter((net) => net.family === peerIP.family).map(formatCidr);
  const checked = sameFamily.length > 0 ? sameFamily.join(', ') : `no IPv${peerIP.family} network`;
  return (
    `host-gw peer ${formatIp(peerIP)} is not on a directly connected network (this node has ${checked}); ` +
    'host-gw needs every node on one layer-2 segment: use vxlan, with DirectRouting for same-segment peers'
  );
}

