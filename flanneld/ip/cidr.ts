import { bitsOf, formatIp, ipAddress, parseIp, type Family, type IpAddress } from './address.js';

/** A network in canonical form: host bits of `ip` are always zero. */
export interface IpNet {
  readonly family: Family;
  readonly ip: bigint;
  readonly prefixLen: number;
}

export function mask(family: Family, prefixLen: number): bigint {
  const bits = BigInt(bitsOf(family));
  const all = (1n << bits) - 1n;
  return all ^ ((1n << (bits - BigInt(prefixLen))) - 1n);
}

export function ipNet(family: Family, ip: bigint, prefixLen: number): IpNet {
  return Object.freeze({ family, ip: ip & mask(family, prefixLen), prefixLen });
}

/** Parses "a.b.c.d/n" or "x::/n"; host bits are masked off, as Go's net.ParseCIDR does. */
export function parseCidr(text: string): IpNet | undefined {
  const slash = text.indexOf('/');
  if (slash < 0) return undefined;
  const addr = parseIp(text.slice(0, slash));
  const lenText = text.slice(slash + 1);
  if (!addr || !/^\d{1,3}$/.test(lenText)) return undefined;
  const prefixLen = Number(lenText);
  if (prefixLen > bitsOf(addr.family)) return undefined;
  return ipNet(addr.family, addr.value, prefixLen);
}

export function formatCidr(net: IpNet): string {
  return `${formatIp(networkAddress(net))}/${net.prefixLen}`;
}

export function networkAddress(net: IpNet): IpAddress {
  return ipAddress(net.family, net.ip);
}

/** Number of addresses in a network of this prefix length. */
export function blockSize(family: Family, prefixLen: number): bigint {
  return 1n << BigInt(bitsOf(family) - prefixLen);
}

export function containsIp(net: IpNet, addr: IpAddress): boolean {
  return net.family === addr.family && (addr.value & mask(net.family, net.prefixLen)) === net.ip;
}

/** True when `inner` lies wholly inside `outer`. */
export function containsNet(outer: IpNet, inner: IpNet): boolean {
  return (
    outer.family === inner.family &&
    inner.prefixLen >= outer.prefixLen &&
    (inner.ip & mask(outer.family, outer.prefixLen)) === outer.ip
  );
}

export function overlaps(a: IpNet, b: IpNet): boolean {
  return containsNet(a, b) || containsNet(b, a);
}

export function sameNet(a: IpNet | undefined, b: IpNet | undefined): boolean {
  return (
    a === b ||
    (a !== undefined && b !== undefined && a.family === b.family && a.ip === b.ip && a.prefixLen === b.prefixLen)
  );
}

/** The first usable address (network + 1), which subnet.env reports as the node's gateway. */
export function firstHost(net: IpNet): IpAddress {
  return ipAddress(net.family, net.ip + 1n);
}
