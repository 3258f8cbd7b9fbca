/**
 * HostView from what the kernel exposes to this process's network namespace without spawning anything:
 * addresses from os.networkInterfaces(), index and MTU from /sys/class/net, default routes from /proc/net.
 * (The rtnetlink datapath will provide route lookups for --iface-can-reach.)
 */
import { networkInterfaces } from 'node:os';
import { readFile } from 'node:fs/promises';
import { parseIp, type Family, type IpAddress } from './address.js';
import type { HostInterface, HostView } from './external-interface.js';

export function systemHostView(routeTo: HostView['routeTo'] = () => Promise.resolve(undefined)): HostView {
  return {
    async interfaces(): Promise<HostInterface[]> {
      const out: HostInterface[] = [];
      for (const [name, infos] of Object.entries(networkInterfaces())) {
        const addrs = (infos ?? []).map((i) => parseIp(i.address.split('%')[0] as string)).filter((a): a is IpAddress => !!a);
        const index = Number((await readFile(`/sys/class/net/${name}/ifindex`, 'utf8').catch(() => '0')).trim());
        const mtu = Number((await readFile(`/sys/class/net/${name}/mtu`, 'utf8').catch(() => '0')).trim());
        out.push({ name, index, mtu, addrs });
      }
      return out;
    },
    async defaultRouteInterface(family: Family): Promise<string | undefined> {
      if (family === 4) {
        const text = await readFile('/proc/net/route', 'utf8').catch(() => '');
        for (const line of text.split('\n').slice(1)) {
          const cols = line.trim().split(/\s+/);
          if (cols[1] === '00000000' && cols[7] === '00000000') return cols[0];
        }
        return undefined;
      }
      const text = await readFile('/proc/net/ipv6_route', 'utf8').catch(() => '');
      for (const line of text.split('\n')) {
        const cols = line.trim().split(/\s+/);
        if (cols[0] === '0'.repeat(32) && cols[1] === '00' && cols[9] !== 'lo') return cols[9];
      }
      return undefined;
    },
    routeTo,
  };
}
