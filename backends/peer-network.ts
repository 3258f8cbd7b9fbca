/**
 * What every backend that programs peers (vxlan, host-gw, udp) builds its Network from, kept here so no backend
 * imports another: the kernel scope a network owns, and the run step that hands its plan to the peer reconciler.
 */
import type { Family } from '../flanneld/ip/address.js';
import type { IpNet } from '../flanneld/ip/cidr.js';
import type { Lease } from '../flanneld/lease/lease.js';
import type { BackendDeps } from './backend.js';
import type { DatapathScope } from './datapath/datapath.js';
import { runPeerReconciler, type PeerPlan } from './peer-reconciler.js';

/**
 * The routes inside the flannel networks (minus this node's own subnets) and the neighbours and FDB entries on the
 * network's devices: what a dump returns and a resync may change.
 */
export function scopeOf(lease: Lease, networks: ReadonlyMap<Family, IpNet | undefined>, devices: readonly { index: number }[]): DatapathScope {
  return {
    routeNetworks: [...networks.values()].filter((n): n is IpNet => n !== undefined),
    excludeRoutes: [lease.subnet, lease.ipv6Subnet].filter((n): n is IpNet => n !== undefined),
    neighLinks: devices.map((d) => d.index),
  };
}

/** Runs the peer reconciler over `plan` until `signal` aborts, with the daemon's datapath, clock and observer. */
export function reconcilePeers(deps: BackendDeps, plan: PeerPlan, lease: Lease, signal: AbortSignal): Promise<void> {
  return runPeerReconciler(plan, lease, deps.peerLeases(lease, signal), {
    datapath: deps.datapath, clock: deps.clock, log: deps.log, resyncMs: deps.resyncMs, ...(deps.observer ? { observer: deps.observer } : {}),
  }, signal);
}
