/**
 * Upstream's choice of the external interface and public address (docs/compatibility.md#interface-and-public-address):
 * --iface entries (IP or name) in order, then --iface-regex (IPs first, then names), then --iface-can-reach; with none
 * of those, the interface owning --public-ip(v6), else the default-route interface. Pure over a HostView, so it is
 * tested without a kernel.
 */
import { FlannelError } from '../runtime/errors.js';
import { formatIp, parseIp, sameIp, type Family, type IpAddress } from './address.js';
import type { IpNet } from './cidr.js';

export interface HostInterface {
  readonly name: string;
  readonly index: number;
  readonly mtu: number;
  readonly addrs: readonly IpAddress[];
}

export interface HostView {
  interfaces(): Promise<readonly HostInterface[]>;
  defaultRouteInterface(family: Family): Promise<string | undefined>;
  /** Interface (and source address) the kernel would use to reach `dst`. */
  routeTo(dst: IpAddress): Promise<{ readonly name: string; readonly src?: IpAddress } | undefined>;
  /** Networks on directly connected links (routes without a gateway). */
  connectedNetworks(): Promise<readonly IpNet[]>;
}

export interface ExternalInterfaceOptions {
  readonly iface: readonly string[];
  readonly ifaceRegex: readonly string[];
  readonly ifaceCanReach?: IpAddress | undefined;
  readonly publicIP?: IpAddress | undefined;
  readonly publicIPv6?: IpAddress | undefined;
  readonly enableIPv4: boolean;
  readonly enableIPv6: boolean;
}

export interface ExternalInterface {
  readonly name: string;
  readonly index: number;
  readonly mtu: number;
  readonly ifaceAddr?: IpAddress;
  readonly ifaceAddrV6?: IpAddress;
  /** What peers use to reach us: --public-ip(v6) or the interface address. */
  readonly publicIP?: IpAddress;
  readonly publicIPv6?: IpAddress;
}

export async function chooseExternalInterface(host: HostView, opts: ExternalInterfaceOptions): Promise<ExternalInterface> {
  const all = await host.interfaces();
  const { publicIP, publicIPv6, ifaceCanReach } = opts;
  const byAddr = (ip: IpAddress): HostInterface | undefined => all.find((i) => i.addrs.some((a) => sameIp(a, ip)));
  const tried: string[] = [];
  let chosen: HostInterface | undefined;
  let src: IpAddress | undefined;

  const explicit = opts.iface.length > 0 || opts.ifaceRegex.length > 0 || ifaceCanReach !== undefined;
  if (explicit) {
    for (const entry of opts.iface) {
      const ip = parseIp(entry);
      chosen = ip ? byAddr(ip) : all.find((i) => i.name === entry);
      tried.push(`--iface=${entry}`);
      // An address given to pick the interface is also that family's local address, as upstream.
      if (chosen && ip) src = ip;
      if (chosen) break;
    }
    for (const pattern of chosen ? [] : opts.ifaceRegex) {
      const re = new RegExp(pattern);
      chosen =
        all.find((i) => i.addrs.some((a) => re.test(formatIp(a)))) ?? all.find((i) => re.test(i.name));
      tried.push(`--iface-regex=${pattern}`);
      if (chosen) break;
    }
    if (!chosen && ifaceCanReach) {
      const route = await host.routeTo(ifaceCanReach);
      chosen = route ? all.find((i) => i.name === route.name) : undefined;
      src = route?.src;
      tried.push(`--iface-can-reach=${formatIp(ifaceCanReach)}`);
    }
    if (!chosen) {
      throw new FlannelError(
        'ERR_INTERFACE',
        // verbatim upstream: flannel main.go, the sentence before "(tried"
        `Failed to find interface to use that matches the interfaces and/or regexes provided (tried ${tried.join(', ')}; ` +
          `interfaces: ${all.map((i) => i.name).join(', ') || 'none'})`,
      );
    }
  } else if (publicIP || publicIPv6) {
    const ip = (publicIP ?? publicIPv6) as IpAddress;
    chosen = byAddr(ip);
    if (!chosen) {
      throw new FlannelError('ERR_INTERFACE', `no interface holds the public IP ${formatIp(ip)} given by ${publicIP ? '--public-ip' : '--public-ipv6'}`);
    }
  } else {
    const v4 = opts.enableIPv4 ? await host.defaultRouteInterface(4) : undefined;
    const v6 = opts.enableIPv6 ? await host.defaultRouteInterface(6) : undefined;
    if (opts.enableIPv4 && opts.enableIPv6 && v4 !== v6) {
      throw new FlannelError(
        'ERR_INTERFACE',
        `dual stack needs the IPv4 and IPv6 default routes on one interface (IPv4: ${v4 ?? 'none'}, IPv6: ${v6 ?? 'none'}); use --iface`,
      );
    }
    const name = v4 ?? v6;
    chosen = name ? all.find((i) => i.name === name) : undefined;
    if (!chosen) {
      throw new FlannelError(
        'ERR_INTERFACE',
        'no default route to pick the external interface from; use --iface, --iface-regex or --public-ip',
      );
    }
  }

  if (chosen.mtu <= 0) throw new FlannelError('ERR_INTERFACE', `interface ${chosen.name} has MTU ${chosen.mtu}`);
  const iface = chosen;
  // A public address the interface itself holds is also the tunnel's local end: taking the interface's first
  // address instead would send from one address while peers are told another, as upstream does in IPv6-only mode.
  const owned = (family: Family): IpAddress | undefined =>
    [publicIP, publicIPv6].find((p) => p?.family === family && iface.addrs.some((a) => sameIp(a, p)));
  const pick = (family: Family): IpAddress | undefined =>
    src?.family === family ? src : owned(family) ?? preferredAddress(iface.addrs, family);
  const ifaceAddr = pick(4);
  const ifaceAddrV6 = pick(6);
  if (opts.enableIPv4 && !ifaceAddr && !publicIP) {
    throw new FlannelError('ERR_NO_ADDRESS', `interface ${chosen.name} has no IPv4 address`);
  }
  if (opts.enableIPv6 && !ifaceAddrV6 && !publicIPv6) {
    throw new FlannelError('ERR_NO_ADDRESS', `interface ${chosen.name} has no IPv6 address`);
  }
  const pub = opts.enableIPv4 ? publicIP ?? ifaceAddr : undefined;
  const pub6 = opts.enableIPv6 ? publicIPv6 ?? ifaceAddrV6 : undefined;
  return Object.freeze({
    name: chosen.name,
    index: chosen.index,
    mtu: chosen.mtu,
    ...(ifaceAddr ? { ifaceAddr } : {}),
    ...(ifaceAddrV6 ? { ifaceAddrV6 } : {}),
    ...(pub ? { publicIP: pub } : {}),
    ...(pub6 ? { publicIPv6: pub6 } : {}),
  });
}

/** Global unicast before link-local, as upstream's address sort. */
function preferredAddress(addrs: readonly IpAddress[], family: Family): IpAddress | undefined {
  const candidates = addrs.filter((a) => a.family === family && !isLoopback(a));
  return candidates.find((a) => !isLinkLocal(a)) ?? candidates[0];
}

function isLoopback(a: IpAddress): boolean {
  return a.family === 4 ? a.value >> 24n === 127n : a.value === 1n;
}

function isLinkLocal(a: IpAddress): boolean {
  return a.family === 4 ? a.value >> 16n === 0xa9fen : a.value >> 118n === 0x3fan;
}
