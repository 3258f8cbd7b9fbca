import { describe, expect, it } from 'vitest';
import { judgeRouteConflicts, type KernelRoute, type RouteEntry } from '../../../backends/datapath/route-ownership.js';
import { RTPROT_BOOT, RTPROT_FLANNEL } from '../../../backends/datapath/netlink/constants.js';
import { createRoute, deleteRoute, replaceRoute } from '../../../backends/datapath/netlink/route.js';
import { parseIp, type IpAddress } from '../../../flanneld/ip/address.js';
import { parseCidr, type IpNet } from '../../../flanneld/ip/cidr.js';

const net = (c: string): IpNet => parseCidr(c) as IpNet;
const ip = (a: string): IpAddress => parseIp(a) as IpAddress;
const route = (dst: string, via?: string, linkIndex?: number): RouteEntry =>
  ({ kind: 'route', dst: net(dst), ...(via ? { via: ip(via) } : {}), ...(linkIndex !== undefined ? { linkIndex, onlink: true } : {}) });
const held = (entry: RouteEntry, protocol: number): KernelRoute => ({ entry, protocol });

describe('whose route holds a destination we want', () => {
  const wanted = route('10.244.5.0/24', '10.244.5.0', 4);

  it('replaces a route of our own protocol, whatever its values', () => {
    expect(judgeRouteConflicts([wanted], [held(route('10.244.5.0/24', '10.244.9.0', 4), RTPROT_FLANNEL)], RTPROT_FLANNEL)).toEqual({ replace: [wanted], collisions: [] });
  });

  it("adopts a route identical to ours that another flannel made (upstream's proto boot during a migration)", () => {
    expect(judgeRouteConflicts([wanted], [held(wanted, RTPROT_BOOT)], RTPROT_FLANNEL).replace).toEqual([wanted]);
  });

  it("leaves the kernel's connected route or an operator's route alone, and says whose it is", () => {
    const connected = route('192.0.2.0/24', undefined, 2);
    const verdict = judgeRouteConflicts([route('192.0.2.0/24', '192.0.2.0', 4)], [held(connected, 2)], RTPROT_FLANNEL);
    expect(verdict.replace).toEqual([]);
    expect(verdict.collisions.map((c) => c.detail)).toEqual(['route 192.0.2.0/24 via 192.0.2.0 dev#4 onlink collides with route 192.0.2.0/24 dev#2 onlink proto 2, a route flanneld did not make; left alone']);
  });

  it('adds the route when the holder went away meanwhile', () => {
    expect(judgeRouteConflicts([wanted], [], RTPROT_FLANNEL).replace).toEqual([wanted]);
  });
});

describe('route messages carry our protocol', () => {
  const r = route('10.244.5.0/24', '10.244.5.0', 4);
  const flags = (msg: Buffer): number => msg.readUInt16LE(6);
  const protocolOf = (msg: Buffer): number => msg.readUInt8(16 + 5);
  it('adds exclusively, replaces and deletes with protocol 70', () => {
    for (const build of [createRoute(r), replaceRoute(r), deleteRoute(r)]) expect(protocolOf(build(1))).toBe(70);
    expect(flags(createRoute(r)(1)) & 0x200).toBe(0x200); // NLM_F_EXCL
    expect(flags(replaceRoute(r)(1)) & 0x100).toBe(0x100); // NLM_F_REPLACE
  });
  it('deletes with the gateway and device it programmed', () => {
    const msg = deleteRoute(r)(1);
    expect(msg.includes(Buffer.from([10, 244, 5, 0]), 28)).toBe(true);
    expect(msg.length).toBeGreaterThan(deleteRoute(route('10.244.5.0/24'))(1).length);
  });
});
