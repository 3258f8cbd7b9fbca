/**
 * What one peer lease asks of this node's WireGuard devices (docs/compatibility.md#wireguard-backend): a peer per
 * device with the lease's subnet(s) as allowed IPs, dialled at the peer's public address and published port. In
 * `separate` mode each family has its own device and endpoint; in the single-device modes both subnets go to one
 * peer, reached over the endpoint family the mode picks (upstream's selectMode in `auto`).
 */
import type { Family, IpAddress } from '../../flanneld/ip/address.js';
import type { IpNet } from '../../flanneld/ip/cidr.js';
import type { Lease } from '../../flanneld/lease/lease.js';
import { leaseLabel } from '../peer-entries.js';
import type { WgPeerConfig } from './uapi.js';
import { deviceFor, endpointFamily, type EndpointAddresses, type WireguardConfig } from './wireguard-config.js';
import { parseWireguardPeerData, WIREGUARD_BACKEND_TYPE } from './wg-lease-data.js';

export interface WgPeerContext {
  readonly config: WireguardConfig;
  /** The families this node runs; a peer's other family is left alone. */
  readonly families: readonly Family[];
  /** This node's public addresses, for `auto`'s choice of endpoint family. */
  readonly self: EndpointAddresses;
  /** This node's public key: a lease naming it would make the device talk to itself. */
  readonly ownPublicKey: string;
}

/** One peer on one device. */
export interface PlannedWgPeer {
  readonly device: string;
  readonly peer: WgPeerConfig;
}

export interface WgPeerPlan {
  readonly peers: readonly PlannedWgPeer[];
  /** Why the lease (or one family of it) gave no peer, each naming the lease. */
  readonly skipped: readonly string[];
}

interface FamilyView {
  readonly family: Family;
  readonly subnet: IpNet | undefined;
  readonly publicIP: IpAddress | undefined;
  readonly data: unknown;
  readonly field: 'BackendData' | 'BackendV6Data';
}

export function planWireguardPeer(lease: Lease, ctx: WgPeerContext): WgPeerPlan {
  if (lease.attrs.backendType !== WIREGUARD_BACKEND_TYPE) {
    return { peers: [], skipped: [`ignoring non-wireguard ${leaseLabel(lease)}: BackendType is ${JSON.stringify(lease.attrs.backendType)}`] };
  }
  const views = familyViews(lease).filter((v) => ctx.families.includes(v.family) && v.subnet !== undefined);
  if (views.length === 0) return { peers: [], skipped: [`ignoring ${leaseLabel(lease)}: no subnet of a family this node runs`] };
  return ctx.config.mode === 'separate' ? planSeparate(lease, views, ctx) : planSingle(lease, views, ctx);
}

function familyViews(lease: Lease): FamilyView[] {
  return [
    { family: 4, subnet: lease.subnet, publicIP: lease.attrs.publicIP, data: lease.attrs.backendData, field: 'BackendData' },
    { family: 6, subnet: lease.ipv6Subnet, publicIP: lease.attrs.publicIPv6, data: lease.attrs.backendV6Data, field: 'BackendV6Data' },
  ];
}

/** One device per family, each with its own endpoint and key from that family's data. */
function planSeparate(lease: Lease, views: readonly FamilyView[], ctx: WgPeerContext): WgPeerPlan {
  const peers: PlannedWgPeer[] = [];
  const skipped: string[] = [];
  for (const view of views) {
    const device = deviceFor(ctx.config, view.family);
    const planned = peerFor(lease, view, [view.subnet as IpNet], device.listenPort, ctx);
    if (typeof planned === 'string') skipped.push(planned);
    else peers.push({ device: device.name, peer: planned });
  }
  return { peers, skipped };
}

/** Both subnets on the one device, dialled over the family the mode picks, with that family's key and port. */
function planSingle(lease: Lease, views: readonly FamilyView[], ctx: WgPeerContext): WgPeerPlan {
  const family = endpointFamily(ctx.config.mode, addressesOf(lease), ctx.self);
  const endpointView = familyViews(lease).find((v) => v.family === family) as FamilyView;
  const device = deviceFor(ctx.config, family);
  const planned = peerFor(lease, endpointView, views.map((v) => v.subnet as IpNet), device.listenPort, ctx);
  return typeof planned === 'string' ? { peers: [], skipped: [planned] } : { peers: [{ device: device.name, peer: planned }], skipped: [] };
}

function addressesOf(lease: Lease): EndpointAddresses {
  return {
    ...(lease.attrs.publicIP ? { publicIP: lease.attrs.publicIP } : {}),
    ...(lease.attrs.publicIPv6 ? { publicIPv6: lease.attrs.publicIPv6 } : {}),
  };
}

/** The peer reached through `view`'s address and data, or why there is none. */
function peerFor(lease: Lease, view: FamilyView, allowedIps: readonly IpNet[], ownPort: number, ctx: WgPeerContext): WgPeerConfig | string {
  const what = `IPv${view.family} endpoint of ${leaseLabel(lease)}`;
  if (!view.publicIP) return `ignoring the ${what}: no ${view.family === 4 ? 'PublicIP' : 'PublicIPv6'}`;
  const data = parseWireguardPeerData(view.data, view.field, ownPort);
  if ('refused' in data) return `ignoring the ${what}: ${data.refused}`;
  if (data.publicKey === ctx.ownPublicKey) return `ignoring the ${what}: ${view.field}.PublicKey is this node's own key`;
  return {
    publicKey: data.publicKey,
    ...(ctx.config.psk !== undefined ? { presharedKey: ctx.config.psk } : {}),
    endpoint: { ip: view.publicIP, port: data.port },
    persistentKeepalive: ctx.config.persistentKeepaliveInterval,
    allowedIps,
  };
}
