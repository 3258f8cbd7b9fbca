/** The traffic plan from the network config, this node's lease and the flags (pure). */
import type { NetworkConfig } from '../config/network-config-types.js';
import type { IpNet } from '../ip/cidr.js';
import type { Lease } from '../lease/lease.js';
import type { FamilyTraffic, TrafficPlan } from './traffic-manager.js';

export interface TrafficOptions {
  readonly ipMasq: boolean;
  readonly ipMasqFullyRandomDisable: boolean;
  readonly ipMasqExclude: readonly IpNet[];
  readonly iptablesForwardRules: boolean;
}

export function trafficPlan(config: NetworkConfig, lease: Lease, opts: TrafficOptions): TrafficPlan {
  const families: FamilyTraffic[] = [];
  if (config.enableIPv4 && config.network && lease.subnet) families.push({ clusterCidr: config.network, podCidr: lease.subnet });
  if (config.enableIPv6 && config.ipv6Network && lease.ipv6Subnet) {
    families.push({ clusterCidr: config.ipv6Network, podCidr: lease.ipv6Subnet });
  }
  return {
    families,
    masquerade: opts.ipMasq,
    fullyRandom: !opts.ipMasqFullyRandomDisable,
    masqueradeExclude: opts.ipMasqExclude,
    forward: opts.iptablesForwardRules,
  };
}
