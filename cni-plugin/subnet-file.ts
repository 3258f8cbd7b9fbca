/**
 * subnet.env as the plugin reads it (cni-plugin: flannel.go loadFlannelSubnetEnv): network keys may be comma
 * lists, subnets are taken in network form, and a file missing a whole group of keys is an error that lists them.
 */
import { readFileSync } from 'node:fs';
import { parseCidr, sameNet, type IpNet } from '../flanneld/ip/cidr.js';
import { parseEnvText } from '../flanneld/subnet/subnet-env.js';
import { CniCode, CniError } from './protocol.js';

export interface FlannelSubnetEnv {
  readonly networks: readonly IpNet[];
  readonly subnet?: IpNet;
  readonly ipv6Networks: readonly IpNet[];
  readonly ipv6Subnet?: IpNet;
  readonly mtu: number;
  readonly ipMasq: boolean;
}

/** Reads and checks the file; ENOENT becomes code 11 "try again later" since flanneld may not have written it yet. */
export function loadSubnetFile(path: string): FlannelSubnetEnv {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new CniError(
      code === 'ENOENT' ? CniCode.TryAgainLater : CniCode.IoFailure,
      // verbatim upstream: cni-plugin flannel.go, the prefix and "Check the flannel pod log for this node"
      `failed to load flannel 'subnet.env' file: ${code === 'ENOENT' ? `open ${path}: no such file or directory` : (err as Error).message}. ` +
        'Check the flannel pod log for this node (is flanneld running and has it written its subnet file?)',
    );
  }
  return parseSubnetFile(text, path);
}

export function parseSubnetFile(text: string, path: string): FlannelSubnetEnv {
  const env = parseEnvText(text);
  const bad = (key: string, value: string): CniError =>
    // verbatim upstream: cni-plugin flannel.go, the "failed to load flannel 'subnet.env' file:" prefix
    new CniError(CniCode.InvalidConfig, `failed to load flannel 'subnet.env' file: ${path}: ${key} is invalid (got ${JSON.stringify(value)})`);
  const nets = (key: string): IpNet[] => {
    const value = env.get(key);
    if (value === undefined || value === '') return [];
    const out: IpNet[] = [];
    for (const part of value.split(',')) {
      const net = parseCidr(part.trim());
      if (!net) throw bad(key, value);
      if (!out.some((n) => sameNet(n, net))) out.push(net);
    }
    return out;
  };
  const one = (key: string): IpNet | undefined => {
    const list = nets(key);
    if (list.length > 1) throw bad(key, env.get(key) ?? '');
    return list[0];
  };
  const networks = nets('FLANNEL_NETWORK');
  const ipv6Networks = nets('FLANNEL_IPV6_NETWORK');
  const subnet = one('FLANNEL_SUBNET');
  const ipv6Subnet = one('FLANNEL_IPV6_SUBNET');
  const mtuText = env.get('FLANNEL_MTU');
  const masqText = env.get('FLANNEL_IPMASQ');
  const missing: string[] = [];
  if (networks.length === 0 && ipv6Networks.length === 0) missing.push('FLANNEL_NETWORK, FLANNEL_IPV6_NETWORK');
  if (!subnet && !ipv6Subnet) missing.push('FLANNEL_SUBNET, FLANNEL_IPV6_SUBNET');
  if (mtuText === undefined) missing.push('FLANNEL_MTU');
  if (masqText === undefined) missing.push('FLANNEL_IPMASQ');
  if (missing.length > 0) {
    // verbatim upstream: cni-plugin flannel.go, the prefix and "<file> is missing"
    throw new CniError(CniCode.InvalidConfig, `failed to load flannel 'subnet.env' file: ${path} is missing ${missing.join('; ')}`);
  }
  if (!/^\d+$/.test(mtuText as string) || Number(mtuText) < 68 || Number(mtuText) > 65535) throw bad('FLANNEL_MTU', mtuText as string);
  return {
    networks,
    ...(subnet ? { subnet } : {}),
    ipv6Networks,
    ...(ipv6Subnet ? { ipv6Subnet } : {}),
    mtu: Number(mtuText),
    ipMasq: masqText === 'true',
  };
}
