/**
 * The backend contract, small on purpose (upstream's common.go idea): a backend registers the network once, which
 * yields this node's lease and MTU, then `run` keeps the datapath converged until the daemon stops.
 */
import type { Logger } from 'pino';
import type { NetworkConfig } from '../flanneld/config/network-config-types.js';
import type { IpAddress } from '../flanneld/ip/address.js';
import type { ExternalInterface, HostView } from '../flanneld/ip/external-interface.js';
import type { Lease, LeaseAttrs, LeaseEvent } from '../flanneld/lease/lease.js';
import type { Clock } from '../flanneld/runtime/clock.js';
import type { Random } from '../flanneld/runtime/random.js';
import type { Datapath } from './datapath/datapath.js';
import type { ReconcilerObserver } from './peer-reconciler.js';

export interface BackendDeps {
  readonly extIface: ExternalInterface;
  /** This node's earlier lease for the public IP, if the store still holds it (vxlan keeps its VTEP MAC from it). */
  readonly findPreviousLease: (publicIP: IpAddress | undefined, signal: AbortSignal) => Promise<Lease | undefined>;
  /** Claims this node's lease with the backend's attrs, retrying transient failures until it succeeds or aborts. */
  readonly acquireLease: (attrs: LeaseAttrs, signal: AbortSignal) => Promise<Lease>;
  /**
   * Every other node's lease, as the store's watch delivers them but only those that passed validation against
   * this node's own lease (flanneld/subnet/peer-guard.ts): what a backend programs.
   */
  readonly peerLeases: (own: Lease, signal: AbortSignal) => AsyncIterable<readonly LeaseEvent[]>;
  readonly datapath: Datapath;
  readonly host: HostView;
  readonly clock: Clock;
  readonly random: Random;
  readonly log: Logger;
  /** Full datapath dump-and-diff period (--datapath-resync), in ms. */
  readonly resyncMs: number;
  readonly observer?: ReconcilerObserver;
  /**
   * A backend whose packets pass through userspace (udp) names where its drop counters are read: packets dropped so
   * far, by reason, or undefined while its data path is not running.
   */
  readonly trackDrops?: (source: () => Readonly<Record<string, number>> | undefined) => void;
  /** A device that lives in a helper process (wireguard-go) went down with it (`problem` says how), or is back. */
  readonly deviceProcess?: (device: string, problem: string | undefined) => void;
}

export type BackendFactory = (deps: BackendDeps) => Backend;

export interface Backend {
  /** Parses its own Backend block, prepares devices and acquires the lease with its attrs. */
  registerNetwork(config: NetworkConfig, signal: AbortSignal): Promise<Network>;
}

export interface Network {
  readonly lease: Lease;
  /** MTU for pods, as reported in subnet.env. */
  readonly mtu: number;
  /** Follows peer leases and keeps the datapath converged; settles only when `signal` aborts. */
  run(signal: AbortSignal): Promise<void>;
}

/** The lease attrs every backend shares: the public addresses of this node. */
export function baseLeaseAttrs(extIface: ExternalInterface, backendType: string): LeaseAttrs {
  return {
    ...(extIface.publicIP ? { publicIP: extIface.publicIP } : {}),
    ...(extIface.publicIPv6 ? { publicIPv6: extIface.publicIPv6 } : {}),
    backendType,
  };
}
