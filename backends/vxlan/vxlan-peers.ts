/**
 * What one peer lease asks of the kernel under vxlan (docs/compatibility.md#vxlan-backend, "Per peer"): per family,
 * either a direct route to the peer's public address (DirectRouting on a shared segment) or neighbour + FDB + onlink
 * route through the vxlan device. Pure: the caller owns the devices and decides DirectRouting, and logs the skip
 * reasons once.
 */
import type { Family, IpAddress } from '../../flanneld/ip/address.js';
import { networkAddress, type IpNet } from '../../flanneld/ip/cidr.js';
import type { Lease } from '../../flanneld/lease/lease.js';
import type { DatapathEntry } from '../datapath/datapath.js';
import { leaseLabel, type PeerEntries } from '../peer-entries.js';
import { decodeVxlanBackendData } from './vtep-mac.js';

export interface VxlanFamilyContext {
  /** Index of this node's vxlan device for the family (flannel.<VNI> or flannel-v6.<VNI>). */
  readonly linkIndex: number;
  /** True when traffic to this public address should skip encapsulation (DirectRouting and same L2 segment). */
  readonly isDirect: (publicIP: IpAddress) => boolean;
}

/** A family without a context has no device on this node, so peers' subnets of that family are left alone. */
export interface VxlanPeerContext {
  readonly v4?: VxlanFamilyContext;
  readonly v6?: VxlanFamilyContext;
}

export type VxlanPeerPlan = PeerEntries;

interface FamilyView {
  readonly family: Family;
  readonly subnet: IpNet | undefined;
  readonly publicIP: IpAddress | undefined;
  readonly data: unknown;
  readonly ipKey: string;
  readonly dataKey: string;
}

export function planVxlanPeer(peer: Lease, ctx: VxlanPeerContext): VxlanPeerPlan {
  if (peer.attrs.backendType !== 'vxlan') {
    return {
      entries: [],
      skipped: [`ignoring non-vxlan ${leaseLabel(peer)}: BackendType is ${JSON.stringify(peer.attrs.backendType)}`],
    };
  }
  const views: readonly FamilyView[] = [
    {
      family: 4,
      subnet: peer.subnet,
      publicIP: peer.attrs.publicIP,
      data: peer.attrs.backendData,
      ipKey: 'PublicIP',
      dataKey: 'BackendData',
    },
    {
      family: 6,
      subnet: peer.ipv6Subnet,
      publicIP: peer.attrs.publicIPv6,
      data: peer.attrs.backendV6Data,
      ipKey: 'PublicIPv6',
      dataKey: 'BackendV6Data',
    },
  ];
  const entries: DatapathEntry[] = [];
  const skipped: string[] = [];
  for (const view of views) {
    const family = view.family === 4 ? ctx.v4 : ctx.v6;
    if (!family || !view.subnet) continue;
    const reason = planFamily(view, view.subnet, family, entries);
    if (reason !== undefined) skipped.push(`ignoring IPv${view.family} part of ${leaseLabel(peer)}: ${reason}`);
  }
  return { entries, skipped };
}

/** Appends the family's entries, or returns why there are none. */
function planFamily(
  view: FamilyView,
  subnet: IpNet,
  ctx: VxlanFamilyContext,
  out: DatapathEntry[],
): string | undefined {
  const publicIP = view.publicIP;
  if (!publicIP) return `no ${view.ipKey}`;
  // Upstream decodes BackendData before the DirectRouting decision, so a malformed one is skipped either way.
  const data = decodeVxlanBackendData(view.data);
  if (!data) return `${view.dataKey} is missing or has no valid VtepMAC: ${JSON.stringify(view.data) ?? 'absent'}`;
  if (ctx.isDirect(publicIP)) {
    out.push({ kind: 'route', dst: subnet, via: publicIP });
    return undefined;
  }
  const gateway = networkAddress(subnet);
  out.push(
    { kind: 'neigh', linkIndex: ctx.linkIndex, ip: gateway, mac: data.mac },
    { kind: 'fdb', linkIndex: ctx.linkIndex, mac: data.mac, dst: publicIP },
    { kind: 'route', dst: subnet, via: gateway, linkIndex: ctx.linkIndex, onlink: true },
  );
  return undefined;
}

