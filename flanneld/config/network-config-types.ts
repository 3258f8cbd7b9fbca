import type { IpAddress } from '../ip/address.js';
import type { IpNet } from '../ip/cidr.js';

/** The Backend block as given; the chosen backend parses its own keys. */
export interface BackendConfig {
  /** Lower-cased `Backend.Type`; "vxlan" when the Backend block is absent (upstream code means udp). */
  readonly type: string;
  /** The whole Backend object, keys as written (backends match them case-insensitively). */
  readonly raw: Readonly<Record<string, unknown>>;
}

/** net-conf.json / etcd <prefix>/config after parsing; values only as given, nothing derived yet. */
export interface NetworkConfig {
  readonly enableIPv4: boolean;
  readonly enableIPv6: boolean;
  readonly enableNFTables: boolean;
  readonly network?: IpNet;
  readonly subnetLen?: number;
  readonly subnetMin?: IpAddress;
  readonly subnetMax?: IpAddress;
  readonly ipv6Network?: IpNet;
  readonly ipv6SubnetLen?: number;
  readonly ipv6SubnetMin?: IpAddress;
  readonly ipv6SubnetMax?: IpAddress;
  readonly backend: BackendConfig;
}

/** Where one family's node subnets are carved from, with upstream defaults applied (CheckNetworkConfig). */
export interface AllocationRange {
  readonly network: IpNet;
  readonly subnetLen: number;
  /** Network address of the first and last subnet that may be handed out (inclusive). */
  readonly subnetMin: IpAddress;
  readonly subnetMax: IpAddress;
}

export interface AllocationRanges {
  readonly v4?: AllocationRange;
  readonly v6?: AllocationRange;
}
