/**
 * The seam between the daemon and the host firewall (iptables or nftables), in the shape of the portmap plugin's
 * PortMapper: the daemon says which rules it wants, a manager makes its own chains hold exactly those, checks
 * them on every resync, and can remove everything it owns when the other mode takes over.
 */
import type { IpNet } from '../ip/cidr.js';

/** What the rules are for, per family; the managers render upstream's exact chains, comments and order. */
export interface TrafficPlan {
  /** The flannel Network (clusterCIDR) and this node's subnet (podCIDR), per enabled family. */
  readonly families: readonly FamilyTraffic[];
  /** --ip-masq: the FLANNEL-POSTRTG / postrtg rules. */
  readonly masquerade: boolean;
  /** --random-fully / fully-random on MASQUERADE, unless --ip-masq-fully-random-disable or unsupported. */
  readonly fullyRandom: boolean;
  /** --ip-masq-exclude: outside destinations pods reach with their own address; each family takes its own. */
  readonly masqueradeExclude: readonly IpNet[];
  /** --iptables-forward-rules: the FLANNEL-FWD / forward accept rules. */
  readonly forward: boolean;
}

export interface FamilyTraffic {
  readonly clusterCidr: IpNet;
  readonly podCidr: IpNet;
}

export interface TrafficManager {
  readonly kind: 'iptables' | 'nftables';
  /** Makes our chains hold exactly the plan's rules, atomically per table; touches nothing else. */
  ensure(plan: TrafficPlan, signal: AbortSignal): Promise<void>;
  /** True when every rule of the plan is in place, in order (the resync check). */
  matches(plan: TrafficPlan, signal: AbortSignal): Promise<boolean>;
  /** Whether MASQUERADE can take --random-fully / fully-random on this host (probed once). */
  supportsRandomFully(signal: AbortSignal): Promise<boolean>;
  /** Removes every chain, table and jump this mode owns (when the other mode takes over). */
  removeAll(signal: AbortSignal): Promise<void>;
}
