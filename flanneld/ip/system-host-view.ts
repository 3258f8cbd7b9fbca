/**
 * HostView from what the kernel exposes to this process's network namespace without spawning anything:
 * addresses from os.networkInterfaces(), index and MTU from /sys/class/net, routes from /proc/net.
 */
import { networkInterfaces } from 'node:os';
import { readFile } from 'node:fs/promises';
import { parseIp, type IpAddress } from './address.js';
import type { HostInterface, HostView } from './external-interface.js';
import { connectedNetworks, defaultRouteDev, lookupRoute, parseProcRoutes, type ProcRoute } from './proc-routes.js';

async function readRoutes(): Promise<ProcRoute[]> {
  const [v4, v6] = await Promise.all([
    readFile('/proc/net/route', 'utf8').catch(() => ''),
    readFile('/proc/net/ipv6_route', 'utf8').catch(() => ''),
  ]);
  return parseProcRoutes(v4, v6);
}

export function systemHostView(): HostView {
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
    async defaultRouteInterface(family) {
      return defaultRouteDev(await readRoutes(), family);
    },
    async connectedNetworks() {
      return connectedNetworks(await readRoutes());
    },
    async routeTo(dst) {
      const route = lookupRoute(await readRoutes(), dst);
      return route ? { name: route.dev } : undefined;
    },
  };
}
