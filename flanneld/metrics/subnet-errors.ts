/**
 * Counts failed subnet manager calls by operation (flanneld_subnet_manager_errors_total{op}) without touching the
 * managers: a decorator the composition root puts between them and the daemon.
 */
import type { Lease, LeaseEvent } from '../lease/lease.js';
import type { IpAddress } from '../ip/address.js';
import type { NetworkConfig } from '../config/network-config-types.js';
import type { LeaseRequest, StoredPublicIPs, SubnetManager } from '../subnet/subnet-manager.js';
import type { SubnetOp } from './metrics.js';

export function countSubnetErrors(inner: SubnetManager, onError: (op: SubnetOp) => void): SubnetManager {
  const counted = <T>(op: SubnetOp, call: () => Promise<T>): Promise<T> =>
    call().catch((err: unknown) => {
      onError(op);
      throw err;
    });
  const storedPublicIPs = inner.storedPublicIPs?.bind(inner);
  const completeLease = inner.completeLease?.bind(inner);
  return {
    name: inner.name,
    getNetworkConfig: (signal: AbortSignal): Promise<NetworkConfig> => counted('get_network_config', () => inner.getNetworkConfig(signal)),
    findPreviousLease: (publicIP: IpAddress | undefined, signal: AbortSignal): Promise<Lease | undefined> =>
      counted('find_previous_lease', () => inner.findPreviousLease(publicIP, signal)),
    acquireLease: (request: LeaseRequest, signal: AbortSignal): Promise<Lease> => counted('acquire_lease', () => inner.acquireLease(request, signal)),
    renewLease: (lease: Lease, signal: AbortSignal): Promise<Lease> => counted('renew_lease', () => inner.renewLease(lease, signal)),
    watchOwnLease: (lease: Lease, signal: AbortSignal): AsyncIterable<void> => inner.watchOwnLease(lease, signal),
    watchLeases: (signal: AbortSignal): AsyncIterable<readonly LeaseEvent[]> => inner.watchLeases(signal),
    ...(storedPublicIPs ? { storedPublicIPs: (signal: AbortSignal): Promise<StoredPublicIPs> => counted('stored_public_ips', () => storedPublicIPs(signal)) } : {}),
    ...(completeLease ? { completeLease: (lease: Lease, signal: AbortSignal): Promise<void> => counted('complete_lease', () => completeLease(lease, signal)) } : {}),
  };
}
