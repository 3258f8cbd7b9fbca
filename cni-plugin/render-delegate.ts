/**
 * The delegate config, exactly as upstream's flannel_linux.go builds it: bridge with host-local IPAM over this
 * node's subnet(s), a route per flannel network, ipMasq the inverse of flanneld's, MTU from subnet.env. Keys are
 * written sorted (as Go's encoding/json writes maps), so the saved file matches upstream's byte for byte.
 */
import { formatCidr } from '../flanneld/ip/cidr.js';
import { isObject, type FlannelNetConf, type JsonObject } from './netconf.js';
import { CniCode, CniError } from './protocol.js';
import type { FlannelSubnetEnv } from './subnet-file.js';

export function checkDelegate(delegate: JsonObject | undefined): void {
  if (!delegate) return;
  if ('type' in delegate && typeof delegate['type'] !== 'string') {
    // verbatim upstream: cni-plugin flannel.go
    throw new CniError(CniCode.InvalidConfig, "'delegate' dictionary, if present, must have (string) 'type' field");
  }
  // verbatim upstream: cni-plugin flannel.go
  if ('name' in delegate) throw new CniError(CniCode.InvalidConfig, "'delegate' dictionary must not have 'name' field, it'll be set by flannel");
  // verbatim upstream: cni-plugin flannel.go
  if ('ipam' in delegate) throw new CniError(CniCode.InvalidConfig, "'delegate' dictionary must not have 'ipam' field, it'll be set by flannel");
}

export function delegateType(conf: FlannelNetConf): string {
  const t = conf.delegate?.['type'];
  return typeof t === 'string' && t !== '' ? t : 'bridge';
}

export function renderDelegate(conf: FlannelNetConf, env: FlannelSubnetEnv, delegateVersion: string): JsonObject {
  checkDelegate(conf.delegate);
  const type = delegateType(conf);
  const out: JsonObject = { ...(conf.delegate ?? {}), name: conf.name, type };
  if (!('ipMasq' in out)) out['ipMasq'] = !env.ipMasq;
  if (!('mtu' in out)) out['mtu'] = env.mtu;
  if (type === 'bridge' && !('isGateway' in out)) out['isGateway'] = true;
  if (delegateVersion !== '') out['cniVersion'] = delegateVersion;
  if (conf.runtimeConfig) out['runtimeConfig'] = conf.runtimeConfig;

  const ipam: JsonObject = { ...(conf.ipam ?? {}) };
  if (typeof ipam['type'] !== 'string' || ipam['type'] === '') ipam['type'] = 'host-local';
  ipam['ranges'] = [env.subnet, env.ipv6Subnet].filter((n) => n !== undefined).map((n) => [{ subnet: formatCidr(n) }]);
  const given = ipam['routes'];
  if (given !== undefined && !(Array.isArray(given) && given.every((r) => isObject(r) && typeof r['dst'] === 'string'))) {
    // verbatim upstream: cni-plugin flannel_linux.go, the three chained prefixes
    throw new CniError(CniCode.InvalidConfig, `failed to assemble Delegate IPAM: failed to read IPAM routes: failed to parse ipam.routes (got ${JSON.stringify(given)})`);
  }
  ipam['routes'] = [
    ...((given as JsonObject[] | undefined) ?? []),
    ...[...env.networks, ...env.ipv6Networks].map((n) => ({ dst: formatCidr(n) })),
  ];
  out['ipam'] = ipam;
  return out;
}

/** JSON with object keys sorted at every level (Go's map encoding). */
export function stableStringify(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) => {
    if (!isObject(v)) return v;
    const sorted: JsonObject = {};
    for (const k of Object.keys(v).sort()) sorted[k] = v[k];
    return sorted;
  });
}
