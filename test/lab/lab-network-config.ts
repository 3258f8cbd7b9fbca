/**
 * The network config the lab writes to etcd: the default, `--network`/`--backend` edits of it, or a whole
 * net-conf.json from `--config`. It goes through flanneld's own parser and etcd-mode checks first, so a bad file is
 * refused by the lab with the daemon's message (naming the key) instead of leaving N daemons waiting on it.
 */
import { readFileSync } from 'node:fs';
import { allocationRanges, parseNetworkConfig } from '../../flanneld/config/network-config.js';
import { formatCidr, overlaps, parseCidr } from '../../flanneld/ip/cidr.js';
import { errorMessage } from '../../flanneld/runtime/errors.js';
import type { LabOptions } from './lab-args.js';

export const LAB_UNDERLAY = '192.0.2.0/24';

export interface LabNetworkConfig {
  /** The JSON text stored at /coreos.com/network/config. */
  readonly text: string;
  readonly backendType: string;
}

export function labNetworkConfig(opts: Pick<LabOptions, 'network' | 'backend' | 'config'>): LabNetworkConfig {
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
    source = '--network/--backend';
    text = JSON.stringify({ Network: opts.network ?? '10.244.0.0/16', Backend: { Type: opts.backend ?? 'vxlan' } });
  }
  try {
    const { config } = parseNetworkConfig(text);
    allocationRanges(config);
    for (const reserved of [LAB_UNDERLAY, '127.0.0.0/8']) {
      const net = parseCidr(reserved);
      if (config.network && net && overlaps(config.network, net)) {
        throw new Error(`Network ${formatCidr(config.network)} overlaps ${reserved}, which the lab's hosts use`);
      }
    }
    return { text: text.trim(), backendType: config.backend.type };
  } catch (err) {
    throw new Error(`${source}: ${errorMessage(err)}`, { cause: err });
  }
}
