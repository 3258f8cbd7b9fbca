/**
 * A node's subnet lease in domain terms, and the upstream lease JSON codec (flannel's LeaseAttrs), which is the
 * value stored in etcd under <prefix>/subnets/<key>. Field names, casing and order match upstream byte for byte.
 */
import { formatIp, parseIPv4, parseIPv6, type IpAddress } from '../ip/address.js';
import type { IpNet } from '../ip/cidr.js';
import { FlannelError } from '../runtime/errors.js';

export interface LeaseAttrs {
  /** IPv4 address peers use to reach this node; absent on IPv6-only nodes (upstream writes "0.0.0.0"). */
  readonly publicIP?: IpAddress;
  readonly publicIPv6?: IpAddress;
  /** "" for udp, which upstream leaves out. */
  readonly backendType: string;
  /** Parsed JSON owned by the backend (vxlan: {VNI, VtepMAC}); absent when the backend has none. */
  readonly backendData?: unknown;
  readonly backendV6Data?: unknown;
}

export interface Lease {
  /** Absent on IPv6-only leases (stored as 0.0.0.0-0 in the key). */
  readonly subnet?: IpNet;
  readonly ipv6Subnet?: IpNet;
  readonly attrs: LeaseAttrs;
  /** A reservation never expires and is only ever used by the node whose public IP it names. */
  readonly reservation: boolean;
  /** When the lease runs out (ms, on the manager's clock); known for this node's own lease only. */
  readonly expiresAt?: number;
}

export function sameAttrs(a: LeaseAttrs, b: LeaseAttrs): boolean {
  return encodeLeaseAttrs(a) === encodeLeaseAttrs(b);
}

export interface LeaseEvent {
  readonly type: 'added' | 'removed';
  readonly lease: Lease;
}

const ZERO_V4 = '0.0.0.0';

export function encodeLeaseAttrs(attrs: LeaseAttrs): string {
  const out: Record<string, unknown> = {
    PublicIP: attrs.publicIP ? formatIp(attrs.publicIP) : ZERO_V4,
    PublicIPv6: attrs.publicIPv6 ? formatIp(attrs.publicIPv6) : null,
  };
  if (attrs.backendType !== '') out['BackendType'] = attrs.backendType;
  if (attrs.backendData !== undefined) out['BackendData'] = attrs.backendData;
  if (attrs.backendV6Data !== undefined) out['BackendV6Data'] = attrs.backendV6Data;
  return JSON.stringify(out);
}

/** Reads a lease value the way Go's encoding/json does: keys match case-insensitively, unknown keys are ignored. */
export function decodeLeaseAttrs(text: string): LeaseAttrs {
  const parsed: unknown = JSON.parse(text);
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new FlannelError('ERR_LEASE_INVALID', 'lease value is not a JSON object');
  }
  const fields = new Map<string, unknown>();
  for (const [k, v] of Object.entries(parsed)) fields.set(k.toLowerCase(), v);

  const publicIPText = fields.get('publicip');
  const publicIPv6Text = fields.get('publicipv6');
  const backendType = fields.get('backendtype') ?? '';
  if (typeof backendType !== 'string') throw new FlannelError('ERR_LEASE_INVALID', 'BackendType is not a string');

  let publicIP: IpAddress | undefined;
  if (publicIPText !== undefined && publicIPText !== null && publicIPText !== ZERO_V4) {
    publicIP = typeof publicIPText === 'string' ? parseIPv4(publicIPText) : undefined;
    if (!publicIP) throw new FlannelError('ERR_LEASE_INVALID', `PublicIP ${JSON.stringify(publicIPText)} is not an IPv4 address`);
  }
  let publicIPv6: IpAddress | undefined;
  if (publicIPv6Text !== undefined && publicIPv6Text !== null && publicIPv6Text !== '') {
    publicIPv6 = typeof publicIPv6Text === 'string' ? parseIPv6(publicIPv6Text) : undefined;
    if (!publicIPv6) throw new FlannelError('ERR_LEASE_INVALID', `PublicIPv6 ${JSON.stringify(publicIPv6Text)} is not an IPv6 address`);
  }
  const backendData = fields.get('backenddata');
  const backendV6Data = fields.get('backendv6data');
  return Object.freeze({
    ...(publicIP ? { publicIP } : {}),
    ...(publicIPv6 ? { publicIPv6 } : {}),
    backendType,
    ...(backendData !== undefined && backendData !== null ? { backendData } : {}),
    ...(backendV6Data !== undefined && backendV6Data !== null ? { backendV6Data } : {}),
  });
}
