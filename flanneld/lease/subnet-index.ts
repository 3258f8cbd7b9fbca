/**
 * Which live subnet, if any, overlaps a given one, without comparing against every peer: subnets are kept per
 * prefix length, so a lookup costs one map probe per length in use (one or two in practice), not one per peer.
 */
import { blockSize, ipNet, mask, type IpNet } from '../ip/cidr.js';

/** Above this many sub-blocks per length, a covering subnet is checked by scanning that length's entries instead. */
const ENUMERATE_LIMIT = 4096n;

export class SubnetIndex<V> {
  /** family/prefix length → network bits → value. */
  private readonly byLength = new Map<string, Map<bigint, { net: IpNet; value: V }>>();

  private slot(family: number, prefixLen: number, create: boolean): Map<bigint, { net: IpNet; value: V }> | undefined {
    const key = `${family}/${prefixLen}`;
    let m = this.byLength.get(key);
    if (!m && create) {
      m = new Map();
      this.byLength.set(key, m);
    }
    return m;
  }

  add(net: IpNet, value: V): void {
    this.slot(net.family, net.prefixLen, true)?.set(net.ip, { net, value });
  }

  delete(net: IpNet): void {
    const m = this.slot(net.family, net.prefixLen, false);
    m?.delete(net.ip);
    if (m?.size === 0) this.byLength.delete(`${net.family}/${net.prefixLen}`);
  }

  /** A stored subnet that overlaps `net` (contains it, equals it or lies inside it), with its value. */
  overlapping(net: IpNet): { net: IpNet; value: V } | undefined {
    for (const [key, entries] of this.byLength) {
      const [family, lenText] = key.split('/');
      if (Number(family) !== net.family) continue;
      const len = Number(lenText);
      if (len <= net.prefixLen) {
        const hit = entries.get(net.ip & mask(net.family, len));
        if (hit) return hit;
        continue;
      }
      const count = blockSize(net.family, net.prefixLen) / blockSize(net.family, len);
      if (count <= ENUMERATE_LIMIT) {
        const step = blockSize(net.family, len);
        for (let i = 0n; i < count; i++) {
          const hit = entries.get(net.ip + i * step);
          if (hit) return hit;
        }
      } else {
        for (const entry of entries.values()) if (ipNet(net.family, entry.net.ip, net.prefixLen).ip === net.ip) return entry;
      }
    }
    return undefined;
  }
}

