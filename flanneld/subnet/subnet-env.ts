/**
 * subnet.env, the file flanneld hands to the CNI plugin and to itself on the next start: upstream's keys and order,
 * written atomically (temp file in the same directory, then rename) so a reader never sees half a file.
 * Shared with the CNI plugin, so it imports nothing beyond ip/, runtime/atomic-file.ts and node:fs.
 */
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { formatIp } from '../ip/address.js';
import { writeFileAtomic as writeAtomic } from '../runtime/atomic-file.js';
import { firstHost, formatCidr, parseCidr, type IpNet } from '../ip/cidr.js';

export const DEFAULT_SUBNET_FILE = '/run/flannel/subnet.env';

export interface SubnetEnv {
  readonly network?: IpNet;
  readonly subnet?: IpNet;
  readonly ipv6Network?: IpNet;
  readonly ipv6Subnet?: IpNet;
  readonly mtu: number;
  readonly ipMasq: boolean;
}

export function renderSubnetEnv(env: SubnetEnv): string {
  const lines: string[] = [];
  const gatewayForm = (net: IpNet): string => `${formatIp(firstHost(net))}/${net.prefixLen}`;
  if (env.network) lines.push(`FLANNEL_NETWORK=${formatCidr(env.network)}`);
  if (env.subnet) lines.push(`FLANNEL_SUBNET=${gatewayForm(env.subnet)}`);
  if (env.ipv6Network) lines.push(`FLANNEL_IPV6_NETWORK=${formatCidr(env.ipv6Network)}`);
  if (env.ipv6Subnet) lines.push(`FLANNEL_IPV6_SUBNET=${gatewayForm(env.ipv6Subnet)}`);
  lines.push(`FLANNEL_MTU=${env.mtu}`);
  lines.push(`FLANNEL_IPMASQ=${env.ipMasq ? 'true' : 'false'}`);
  return lines.join('\n') + '\n';
}

/** KEY=value lines; blank lines and `#` comments ignored; the value runs to the end of the line. */
export function parseEnvText(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const eq = line.indexOf('=');
    if (eq <= 0) continue;
    out.set(line.slice(0, eq).trim(), line.slice(eq + 1).trim());
  }
  return out;
}

/** The subnets a previous run recorded, for lease reuse; a missing or unparsable value is simply absent. */
export function previousSubnets(text: string): { subnet?: IpNet; ipv6Subnet?: IpNet } {
  const env = parseEnvText(text);
  const read = (key: string, family: 4 | 6): IpNet | undefined => {
    const value = env.get(key);
    const net = value && !value.includes(',') ? parseCidr(value) : undefined;
    return net?.family === family ? net : undefined;
  };
  const subnet = read('FLANNEL_SUBNET', 4);
  const ipv6Subnet = read('FLANNEL_IPV6_SUBNET', 6);
  return { ...(subnet ? { subnet } : {}), ...(ipv6Subnet ? { ipv6Subnet } : {}) };
}

/** Writes subnet.env atomically with mode 0644 (whatever the umask), creating its directory 0755. */
export async function writeSubnetFile(path: string, text: string): Promise<void> {
  mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
  writeAtomic(path, text, 0o644);
}
