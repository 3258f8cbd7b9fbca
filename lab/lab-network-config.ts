/**
 * The network config the lab writes to etcd: the README's default (10.244.0.0/16, vxlan),
 * `--network`/`--backend`/`--ipv6*` edits of it, or a whole net-conf.json from `--config`. It goes through flanneld's
 * own parser and etcd-mode checks first, so a bad file is refused by the lab with the daemon's message (naming the key)
 * instead of leaving N daemons waiting on it. The config also decides the lab's families, so a `--config` with
 * EnableIPv6 gets an underlay that carries IPv6.
 */
import { readFileSync } from 'node:fs';
import { allocationRanges, parseNetworkConfig } from '../flanneld/config/network-config.js';
import { containsNet, formatCidr, overlaps, parseCidr } from '../flanneld/ip/cidr.js';
import { errorMessage } from '../flanneld/runtime/errors.js';
import { KUBELET_WIREGUARD_REFUSAL, type LabOptions, type LabStack } from './lab-args.js';

export const LAB_UNDERLAY = '192.0.2.0/24';
export const LAB_UNDERLAY6 = '2001:db8:2::/64';
/** The only IPv6 the lab uses: the documentation prefix. */
export const LAB_IPV6_RANGE = '2001:db8::/32';
export const LAB_IPV6_NETWORK = '2001:db8:a::/48';

export interface LabNetworkConfig {
  /** The JSON text stored at /coreos.com/network/config. */
  readonly text: string;
  readonly backendType: string;
  readonly stack: LabStack;
}

type ConfigOptions = Pick<LabOptions, 'network' | 'backend' | 'config' | 'ipv6Network'> & { readonly stack?: LabStack; readonly kubelet?: boolean };

function flagsConfig(opts: ConfigOptions): Record<string, unknown> {
  const backend = { Type: opts.backend ?? 'vxlan' };
  const ipv6 = { EnableIPv6: true, IPv6Network: opts.ipv6Network ?? LAB_IPV6_NETWORK };
  switch (opts.stack ?? 'v4') {
    case 'v4': return { Network: opts.network ?? '10.244.0.0/16', Backend: backend };
    case 'dual': return { Network: opts.network ?? '10.244.0.0/16', ...ipv6, Backend: backend };
    case 'v6': return { EnableIPv4: false, ...ipv6, Backend: backend };
  }
}

export function labNetworkConfig(opts: ConfigOptions): LabNetworkConfig {
  let text: string;
  let source: string;
  if (opts.config !== undefined) {
    source = `--config ${opts.config}`;
    try {
      text = readFileSync(opts.config, 'utf8');
    } catch (err) {
      throw new Error(`${source}: cannot read it: ${errorMessage(err)}`, { cause: err });
    }
  } else {
    const given = [['--network', opts.network], ['--backend', opts.backend], ['--ipv6-network', opts.ipv6Network]].filter(([, v]) => v !== undefined);
    source = given.length > 0 ? given.map(([flag]) => flag).join('/') : 'the default network config';
    text = JSON.stringify(flagsConfig(opts));
  }
  try {
    const { config } = parseNetworkConfig(text);
    allocationRanges(config);
    const stack: LabStack = !config.enableIPv4 ? 'v6' : config.enableIPv6 ? 'dual' : 'v4';
    const reserved = [LAB_UNDERLAY, '127.0.0.0/8', LAB_UNDERLAY6].map((r) => [r, parseCidr(r)] as const);
    for (const net of [config.enableIPv4 ? config.network : undefined, config.enableIPv6 ? config.ipv6Network : undefined]) {
      const taken = reserved.find(([, r]) => net && r && overlaps(net, r));
      if (net && taken) throw new Error(`${net.family === 4 ? 'Network' : 'IPv6Network'} ${formatCidr(net)} overlaps ${taken[0]}, which the lab's hosts use`);
    }
    const v6 = config.enableIPv6 ? config.ipv6Network : undefined;
    if (v6 && !containsNet(parseCidr(LAB_IPV6_RANGE)!, v6)) {
      throw new Error(`IPv6Network ${formatCidr(v6)} is outside ${LAB_IPV6_RANGE}, the only IPv6 range the lab uses`);
    }
    if (stack !== 'v4' && config.backend.type === 'udp') throw new Error('the udp backend carries IPv4 only; use vxlan, host-gw or wireguard for IPv6');
    if (opts.kubelet && config.backend.type === 'wireguard') throw new Error(KUBELET_WIREGUARD_REFUSAL);
    return { text: text.trim(), backendType: config.backend.type, stack };
  } catch (err) {
    throw new Error(`${source}: ${errorMessage(err)}`, { cause: err });
  }
}
