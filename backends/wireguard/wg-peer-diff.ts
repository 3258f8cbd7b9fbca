/**
 * From the peer leases' plans to each device's wanted peers, and from wanted and held peers to the one change that
 * converges a device. A public key belongs to one peer per device, so when two leases publish the same key (a copied
 * key file, or a hostile node) the lease that published it first keeps it and the other is reported by name: letting
 * the later one win would move the first node's traffic to whoever copied its key.
 */
import { sameIp } from '../../flanneld/ip/address.js';
import { formatCidr, type IpNet } from '../../flanneld/ip/cidr.js';
import type { WgPeerChanges } from './wg-device.js';
import type { PlannedWgPeer } from './wg-peers.js';
import type { WgPeerConfig, WgPeerState } from './uapi.js';

export type DevicePeers = ReadonlyMap<string, WgPeerConfig>;

export interface WantedPeers {
  /** Device name → public key → peer. */
  readonly devices: ReadonlyMap<string, DevicePeers>;
  /** One sentence per lease whose peer lost a key clash. */
  readonly conflicts: readonly string[];
}

/**
 * `plans` by lease key, in the order the leases first appeared (a Map keeps it, also across updates), so the first
 * publisher of a key stays its owner however the others change.
 */
export function wantedPeers(plans: ReadonlyMap<string, readonly PlannedWgPeer[]>, deviceNames: readonly string[]): WantedPeers {
  const devices = new Map(deviceNames.map((name) => [name, new Map<string, WgPeerConfig>()]));
  const owners = new Map<string, string>();
  const conflicts: string[] = [];
  for (const [leaseKey, planned] of plans) {
    for (const { device, peer } of planned) {
      const peers = devices.get(device);
      if (!peers) continue;
      const owner = owners.get(`${device} ${peer.publicKey}`);
      if (owner !== undefined) {
        conflicts.push(`ignoring the ${device} peer of lease ${leaseKey}: its public key is already published by lease ${owner}`);
        continue;
      }
      owners.set(`${device} ${peer.publicKey}`, leaseKey);
      peers.set(peer.publicKey, peer);
    }
  }
  return { devices, conflicts };
}

/** What turns `held` (what the device has, or was last told) into `wanted`: stale peers removed, differing ones rewritten. */
export function diffPeers(wanted: DevicePeers, held: ReadonlyMap<string, WgPeerConfig | WgPeerState>): WgPeerChanges {
  const remove = [...held.keys()].filter((key) => !wanted.has(key));
  const write = [...wanted.values()].filter((peer) => {
    const have = held.get(peer.publicKey);
    return have === undefined || !samePeer(peer, have);
  });
  return { remove, write };
}

export function isEmptyChange(changes: WgPeerChanges): boolean {
  return changes.remove.length === 0 && changes.write.length === 0;
}

function samePeer(want: WgPeerConfig, have: WgPeerConfig | WgPeerState): boolean {
  return (
    want.presharedKey === (have.presharedKey ?? undefined) &&
    (want.persistentKeepalive ?? 0) === (have.persistentKeepalive ?? 0) &&
    sameEndpoint(want, have) &&
    cidrSet(want) === cidrSet(have)
  );
}

function sameEndpoint(want: WgPeerConfig, have: WgPeerConfig | WgPeerState): boolean {
  if (!want.endpoint || !have.endpoint) return want.endpoint === have.endpoint;
  return want.endpoint.port === have.endpoint.port && sameIp(want.endpoint.ip, have.endpoint.ip);
}

function cidrSet(peer: { readonly allowedIps: readonly IpNet[] }): string {
  return peer.allowedIps.map(formatCidr).sort().join(',');
}
