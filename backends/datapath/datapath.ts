/**
 * What backends ask of the kernel, in domain terms. Entries are plain values with a stable identity key, so the
 * reconciler can diff "what the leases want" against "what the kernel holds" and send only the difference, in
 * batches. The real implementation speaks rtnetlink; unit tests use an in-memory fake with the same contract.
 */
import type { IpAddress } from '../../flanneld/ip/address.js';
import type { IpNet } from '../../flanneld/ip/cidr.js';

/** Lower-case colon-separated MAC, e.g. "0e:2a:00:00:00:01". */
export type Mac = string;

export type DatapathEntry =
  /** A route in the main table; `linkIndex` absent lets the kernel pick the device (DirectRouting, host-gw). */
  | { readonly kind: 'route'; readonly dst: IpNet; readonly via?: IpAddress; readonly linkIndex?: number; readonly onlink?: boolean }
  /** A permanent neighbour (ARP/NDP) entry. */
  | { readonly kind: 'neigh'; readonly linkIndex: number; readonly ip: IpAddress; readonly mac: Mac }
  /** A permanent bridge FDB entry on a VXLAN device ("self"): frames for `mac` go to `dst`. */
  | { readonly kind: 'fdb'; readonly linkIndex: number; readonly mac: Mac; readonly dst: IpAddress };

export type EntryKind = DatapathEntry['kind'];

export interface DatapathChange {
  readonly op: 'replace' | 'delete';
  readonly entry: DatapathEntry;
}

export interface ApplyFailure {
  readonly change: DatapathChange;
  /** errno name from the kernel, e.g. "ENETUNREACH". */
  readonly errno: string;
  readonly message: string;
}

export interface ApplyReport {
  readonly applied: number;
  readonly failures: readonly ApplyFailure[];
}

/** The entries a network owns: what dumps return and what the reconciler may delete. */
export interface DatapathScope {
  /** Routes whose dst lies inside one of these networks (the flannel Network, per family). */
  readonly routeNetworks: readonly IpNet[];
  /** Never touched, even inside routeNetworks: this node's own subnet(s). */
  readonly excludeRoutes: readonly IpNet[];
  /** Devices whose neighbour and FDB entries are ours (the vxlan devices). */
  readonly neighLinks: readonly number[];
}

export interface VxlanLinkSpec {
  readonly name: string;
  readonly vni: number;
  /** 0 leaves the kernel default (8472). */
  readonly port: number;
  readonly local: IpAddress;
  readonly underlayIndex: number;
  readonly mtu: number;
  readonly learning: boolean;
  readonly gbp: boolean;
  /** Kept across re-creation so peers' entries stay valid. */
  readonly mac: Mac;
}

export interface LinkInfo {
  readonly index: number;
  readonly name: string;
  readonly mtu: number;
  readonly mac: Mac;
  readonly up: boolean;
  readonly kind?: string;
  readonly vxlan?: {
    readonly vni: number;
    readonly port: number;
    readonly local?: IpAddress;
    readonly underlayIndex?: number;
    readonly learning: boolean;
    readonly gbp: boolean;
  };
}

export interface AddressInfo {
  readonly linkIndex: number;
  readonly cidr: IpNet;
  /** The address itself (not masked). */
  readonly address: IpAddress;
}

export type DatapathEvent =
  | { readonly type: 'link-deleted'; readonly index: number; readonly name: string }
  | { readonly type: 'entry-deleted'; readonly entry: DatapathEntry }
  /** The notification socket overflowed: some events were lost, so a full resync is due. */
  | { readonly type: 'overrun' };

export interface Datapath {
  link(name: string): Promise<LinkInfo | undefined>;
  /** Creates the VXLAN device, or replaces it when an existing one differs in any parameter; sets it up. */
  ensureVxlan(spec: VxlanLinkSpec): Promise<LinkInfo>;
  /**
   * Removes a link of ours that must be made anew: a device left by an earlier run that the backend cannot take
   * over (wireguard-go's TUN device, whose process exits with it).
   */
  deleteLink(index: number): Promise<void>;
  /** Sets the link's MTU and brings it up (devices a backend opens itself, such as udp's TUN device). */
  configureLink(index: number, mtu: number): Promise<void>;
  /** Makes `wanted` the only address of its family inside `within` on the link (others outside are left alone). */
  ensureAddress(linkIndex: number, wanted: AddressInfo, within: IpNet): Promise<void>;
  /** Many messages per send; failures are reported per change, never thrown mid-batch. */
  apply(changes: readonly DatapathChange[]): Promise<ApplyReport>;
  dump(scope: DatapathScope): Promise<readonly DatapathEntry[]>;
  /** Adds a blackhole route for `dst` unless a route for it already exists (--ip-blackhole-route). */
  ensureBlackhole(dst: IpNet): Promise<void>;
  /** Kernel notifications of deletions (any device, any route) until `signal` aborts; callers filter by scope. */
  events(signal: AbortSignal): AsyncIterable<DatapathEvent>;
}
