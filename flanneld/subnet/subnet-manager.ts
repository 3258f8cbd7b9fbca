/**
 * The seam between where leases live (etcd or the Kubernetes API) and everything that uses them. The daemon and the
 * backends only see this interface, so each store can be tested alone and swapped without touching the datapath.
 */
import type { IpAddress } from '../ip/address.js';
import type { NetworkConfig } from '../config/network-config-types.js';
import type { Lease, LeaseAttrs, LeaseEvent } from '../lease/lease.js';
import type { SubnetPair } from '../lease/subnet-key.js';

export interface LeaseRequest {
  readonly attrs: LeaseAttrs;
  /** Subnets recorded in the previous subnet.env; reused when still valid and free. */
  readonly previous?: SubnetPair;
}

/** Public addresses an operator recorded in the store for this node; they override --public-ip / --public-ipv6. */
export interface StoredPublicIPs {
  readonly publicIP?: IpAddress;
  readonly publicIPv6?: IpAddress;
}

export interface SubnetManager {
  readonly name: 'etcd' | 'kube';
  /** Reads and validates the network config; rejects ConfigError naming the key and value. */
  getNetworkConfig(signal: AbortSignal): Promise<NetworkConfig>;
  /** This node's lease from an earlier run, if the store still has one for this public IP (subnet and MAC reuse). */
  findPreviousLease(publicIP: IpAddress | undefined, signal: AbortSignal): Promise<Lease | undefined>;
  /** Claims a subnet for this node; rejects NoFreeSubnetError when the network is full. */
  acquireLease(request: LeaseRequest, signal: AbortSignal): Promise<Lease>;
  /** Extends the lease; re-creates or restores it when it vanished or was overwritten; rejects LeaseLostError when taken. */
  renewLease(lease: Lease, signal: AbortSignal): Promise<Lease>;
  /** Yields each time this node's own lease disappears from the store (expiry, deletion) or is changed by someone else. */
  watchOwnLease(lease: Lease, signal: AbortSignal): AsyncIterable<void>;
  /** Every node's leases: one full batch, then deltas; re-lists itself after reconnect or compaction. */
  watchLeases(signal: AbortSignal): AsyncIterable<readonly LeaseEvent[]>;
  /** Read before the external interface is chosen (kube: the node-public-ip annotations). */
  storedPublicIPs?(signal: AbortSignal): Promise<StoredPublicIPs>;
  /** Once subnet.env is written and the datapath runs (kube: NetworkUnavailable=False); retries until done. */
  completeLease?(lease: Lease, signal: AbortSignal): Promise<void>;
}
