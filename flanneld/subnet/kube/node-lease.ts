/**
 * Node objects ↔ leases: a node's podCIDR(s) are its subnets, its flannel annotations are the lease attrs. Peers
 * whose annotations do not parse, or are over the size cap (read by length only), are reported with a bounded reason
 * naming what is wrong, so the caller can warn once.
 */
import type { NetworkConfig } from '../../config/network-config-types.js';
import { formatIp, parseIPv4, parseIPv6, type IpAddress } from '../../ip/address.js';
import { containsNet, formatCidr, parseCidr, type IpNet } from '../../ip/cidr.js';
import type { Lease, LeaseAttrs } from '../../lease/lease.js';
import { ConfigError, FlannelError } from '../../runtime/errors.js';
import { LOGGED_KEY_CHARS, clip, oversizeProblem } from '../store-limits.js';
import type { AnnotationNames } from './annotations.js';
import type { KubeNode } from './node-api.js';

export interface NodeSubnets {
  readonly v4?: IpNet;
  readonly v6?: IpNet;
}

/** The node's podCIDR(s) by family; throws naming the node and the value when they are not one or two CIDRs. */
export function nodeSubnets(node: KubeNode): NodeSubnets {
  if (node.podCIDRs.length > 2) {
    throw new FlannelError('ERR_SUBNET_CONFLICT', `node "${node.name}" pod CIDRs ${node.podCIDRs.join(',')} should be IPv4/IPv6 only or dual-stack`);
  }
  const out: { v4?: IpNet; v6?: IpNet } = {};
  for (const text of node.podCIDRs) {
    const net = parseCidr(text);
    if (!net) throw new FlannelError('ERR_SUBNET_CONFLICT', `node "${node.name}" has an unparseable podCIDR "${text}"`);
    const family = net.family === 4 ? 'v4' : 'v6';
    if (out[family]) throw new FlannelError('ERR_SUBNET_CONFLICT', `node "${node.name}" has two IPv${net.family} podCIDRs: ${node.podCIDRs.join(',')}`);
    out[family] = net;
  }
  return out;
}

/**
 * A node with a podCIDR of one family while net-conf.json also enables the other (upstream: "pod cidrs should be
 * IPv4/IPv6 only or dualstack"). Waiting only helps if someone re-creates the Node: spec.podCIDRs cannot change once
 * set. The message says which side to fix, since either the cluster or net-conf.json can be the wrong one.
 */
function missingFamily(node: KubeNode, family: 4 | 6): FlannelError {
  const fix = family === 6
    ? 'node IPAM must give every node an IPv6 podCIDR too (an IPv6 range in kube-controller-manager --cluster-cidr), or net-conf.json must not set EnableIPv6'
    : 'net-conf.json must set "EnableIPv4": false for an IPv6-only cluster, or node IPAM must give every node an IPv4 podCIDR too';
  return new FlannelError(
    'ERR_CONFIG_INVALID',
    `node "${node.name}" has no IPv${family} podCIDR but net-conf.json enables IPv${family} (spec.podCIDRs: ${node.podCIDRs.join(',') || 'none'}): ${fix}; spec.podCIDRs cannot change once set, so the Node must be re-created`,
  );
}

/**
 * This node's subnets for the enabled families, checked against the network config: a podCIDR outside Network means
 * the cluster's --cluster-cidr and net-conf.json disagree, which no amount of waiting fixes.
 */
export function ownSubnets(node: KubeNode, config: NetworkConfig): NodeSubnets {
  const found = nodeSubnets(node);
  const out: { v4?: IpNet; v6?: IpNet } = {};
  const pick = (family: 4 | 6, network: IpNet | undefined, subnet: IpNet | undefined, key: string): IpNet => {
    if (!subnet) throw missingFamily(node, family);
    if (!network || !containsNet(network, subnet)) {
      throw new ConfigError(key, network && formatCidr(network), `does not contain the ${family === 6 ? 'IPv6 ' : ''}podCIDR ${formatCidr(subnet)} of node "${node.name}"; net-conf.json must match the cluster's --cluster-cidr`);
    }
    return subnet;
  };
  if (config.enableIPv4) out.v4 = pick(4, config.network, found.v4, 'Network');
  if (config.enableIPv6) out.v6 = pick(6, config.ipv6Network, found.v6, 'IPv6Network');
  return out;
}

export type PeerLease =
  | { readonly kind: 'lease'; readonly lease: Lease }
  /** Not (yet) run by flannel: no kube-subnet-manager annotation. Not worth a warning. */
  | { readonly kind: 'unmanaged' }
  | { readonly kind: 'malformed'; readonly reason: string };

/** The annotation's text when it is under the size cap; throws (by its length alone) when it is not. */
function annotation(node: KubeNode, key: string): string | undefined {
  const text = node.annotations[key];
  const problem = text === undefined ? undefined : oversizeProblem(`annotation ${key}`, Buffer.byteLength(text));
  if (problem) throw new FlannelError('ERR_NODE_INVALID', problem);
  return text;
}

function parseData(node: KubeNode, key: string): unknown {
  const text = annotation(node, key);
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text) ?? undefined;
  } catch {
    throw new FlannelError('ERR_NODE_INVALID', `annotation ${key} is not JSON: ${clip(JSON.stringify(text), LOGGED_KEY_CHARS)}`);
  }
}

function parseAddress(node: KubeNode, key: string, parse: (t: string) => IpAddress | undefined): IpAddress {
  const text = annotation(node, key);
  const ip = text === undefined ? undefined : parse(text);
  if (!ip) throw new FlannelError('ERR_NODE_INVALID', text === undefined ? `annotation ${key} is missing` : `annotation ${key} is not an address: ${clip(JSON.stringify(text), LOGGED_KEY_CHARS)}`);
  return ip;
}

/** A peer node as a lease, for the families the network config enables. */
export function peerLease(node: KubeNode, names: AnnotationNames, config: NetworkConfig): PeerLease {
  if (node.annotations[names.kubeSubnetManager] !== 'true') return { kind: 'unmanaged' };
  try {
    const subnets = nodeSubnets(node);
    const backendType = annotation(node, names.backendType) ?? '';
    const v4 = config.enableIPv4 ? subnets.v4 : undefined;
    const v6 = config.enableIPv6 ? subnets.v6 : undefined;
    if (config.enableIPv4 && !v4) throw new FlannelError('ERR_NODE_INVALID', `no IPv4 podCIDR (spec.podCIDRs: ${node.podCIDRs.join(',') || 'none'})`);
    if (config.enableIPv6 && !v6) throw new FlannelError('ERR_NODE_INVALID', `no IPv6 podCIDR (spec.podCIDRs: ${node.podCIDRs.join(',') || 'none'})`);
    const attrs: { -readonly [K in keyof LeaseAttrs]: LeaseAttrs[K] } = { backendType };
    if (v4) {
      attrs.publicIP = parseAddress(node, names.publicIP, parseIPv4);
      const data = parseData(node, names.backendData);
      if (data !== undefined) attrs.backendData = data;
    }
    if (v6) {
      attrs.publicIPv6 = parseAddress(node, names.publicIPv6, parseIPv6);
      const data = parseData(node, names.backendV6Data);
      if (data !== undefined) attrs.backendV6Data = data;
    }
    return { kind: 'lease', lease: { ...(v4 ? { subnet: v4 } : {}), ...(v6 ? { ipv6Subnet: v6 } : {}), attrs, reservation: false } };
  } catch (err) {
    return { kind: 'malformed', reason: err instanceof Error ? err.message : String(err) };
  }
}

/**
 * The backend data this node published before, each family read on its own as upstream's GetStoredMacAddresses does,
 * so the vxlan backend keeps its VTEP MACs even when the node no longer reads as a lease under the current config: a
 * node moving from IPv4-only to dual stack has no public-ipv6 yet, and its IPv4 MAC must survive the restart all the
 * same (peers keep reaching it through their FDB entries). Data that does not parse is left out.
 */
export function storedBackendData(node: KubeNode, names: AnnotationNames): Pick<LeaseAttrs, 'backendData' | 'backendV6Data'> {
  const read = (key: string): unknown => {
    try {
      return parseData(node, key);
    } catch {
      return undefined;
    }
  };
  const backendData = read(names.backendData);
  const backendV6Data = read(names.backendV6Data);
  return { ...(backendData !== undefined ? { backendData } : {}), ...(backendV6Data !== undefined ? { backendV6Data } : {}) };
}

/**
 * What this node publishes (docs/compatibility.md#kubernetes-mode): always kube-subnet-manager and backend-type; per
 * family with a subnet, the backend data (JSON, `null` when the backend has none) and the public IP, or the operator's
 * overwrite of it.
 */
export function publishedAnnotations(lease: Lease, names: AnnotationNames, current: Readonly<Record<string, string>>): Record<string, string> {
  const { attrs } = lease;
  const out: Record<string, string> = {
    [names.kubeSubnetManager]: 'true',
    [names.backendType]: attrs.backendType,
  };
  if (lease.subnet && attrs.publicIP) {
    out[names.backendData] = JSON.stringify(attrs.backendData ?? null);
    out[names.publicIP] = current[names.publicIPOverwrite] || formatIp(attrs.publicIP);
  }
  if (lease.ipv6Subnet && attrs.publicIPv6) {
    out[names.backendV6Data] = JSON.stringify(attrs.backendV6Data ?? null);
    out[names.publicIPv6] = current[names.publicIPv6Overwrite] || formatIp(attrs.publicIPv6);
  }
  return out;
}

/** Only the annotations whose value differs from the node's: patches carry nothing that is already there. */
export function changedAnnotations(wanted: Readonly<Record<string, string>>, current: Readonly<Record<string, string>>): Record<string, string> {
  return Object.fromEntries(Object.entries(wanted).filter(([k, v]) => current[k] !== v));
}
