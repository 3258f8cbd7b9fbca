import { describe, expect, it } from 'vitest';
import { parseIp, type IpAddress } from '../../../../flanneld/ip/address.js';
import { parseCidr } from '../../../../flanneld/ip/cidr.js';
import type { Lease, LeaseAttrs } from '../../../../flanneld/lease/lease.js';
import { describeEntry } from '../../../../backends/datapath/entry-key.js';
import { planVxlanPeer, type VxlanPeerContext } from '../../../../backends/vxlan/vxlan-peers.js';

const ip = (text: string): IpAddress => parseIp(text)!;

const MAC4 = '0e:2a:00:00:00:02';
const MAC6 = '0e:2a:00:00:00:06';

function peer(over: Partial<LeaseAttrs> = {}, nets: { v4?: string; v6?: string } = { v4: '10.244.2.0/24', v6: 'fd00:2::/64' }): Lease {
  return {
    ...(nets.v4 ? { subnet: parseCidr(nets.v4)! } : {}),
    ...(nets.v6 ? { ipv6Subnet: parseCidr(nets.v6)! } : {}),
    attrs: {
      publicIP: ip('192.168.1.12'),
      publicIPv6: ip('2001:db8::12'),
      backendType: 'vxlan',
      backendData: { VNI: 1, VtepMAC: MAC4 },
      backendV6Data: { VNI: 1, VtepMAC: MAC6.toUpperCase() },
      ...over,
    },
    reservation: false,
  };
}

const never = (): boolean => false;
const always = (): boolean => true;
const V4 = { linkIndex: 7, isDirect: never };
const V6 = { linkIndex: 8, isDirect: never };
const dual: VxlanPeerContext = { v4: V4, v6: V6 };

const plan = (lease: Lease, ctx: VxlanPeerContext): { entries: string[]; skipped: readonly string[] } => {
  const { entries, skipped } = planVxlanPeer(lease, ctx);
  return { entries: entries.map(describeEntry), skipped };
};

const ENCAP_V4 = [
  `neigh 10.244.2.0 lladdr ${MAC4} dev#7`,
  `fdb ${MAC4} dst 192.168.1.12 dev#7`,
  'route 10.244.2.0/24 via 10.244.2.0 dev#7 onlink',
];
const ENCAP_V6 = [
  `neigh fd00:2:: lladdr ${MAC6} dev#8`,
  `fdb ${MAC6} dst 2001:db8::12 dev#8`,
  'route fd00:2::/64 via fd00:2:: dev#8 onlink',
];

describe('planVxlanPeer', () => {
  it('emits neighbour, FDB, then onlink route per family, in upstream order', () => {
    expect(plan(peer(), dual)).toEqual({ entries: [...ENCAP_V4, ...ENCAP_V6], skipped: [] });
  });

  it('builds entries exactly (no device on a direct route, onlink only when encapsulated)', () => {
    const { entries } = planVxlanPeer(peer(), { v4: { linkIndex: 7, isDirect: never } });
    expect(entries[0]).toEqual({ kind: 'neigh', linkIndex: 7, ip: ip('10.244.2.0'), mac: MAC4 });
    expect(entries[1]).toEqual({ kind: 'fdb', linkIndex: 7, mac: MAC4, dst: ip('192.168.1.12') });
    expect(entries[2]).toEqual({ kind: 'route', dst: parseCidr('10.244.2.0/24'), via: ip('10.244.2.0'), linkIndex: 7, onlink: true });
    const direct = planVxlanPeer(peer(), { v4: { linkIndex: 7, isDirect: always } }).entries;
    expect(direct).toEqual([{ kind: 'route', dst: parseCidr('10.244.2.0/24'), via: ip('192.168.1.12') }]);
  });

  it('asks isDirect about the public address of the right family', () => {
    const asked: string[] = [];
    const spy = (p: IpAddress): boolean => {
      asked.push(`${p.family}`);
      return p.family === 6;
    };
    const result = plan(peer(), { v4: { linkIndex: 7, isDirect: spy }, v6: { linkIndex: 8, isDirect: spy } });
    expect(asked).toEqual(['4', '6']);
    expect(result.entries).toEqual([...ENCAP_V4, 'route fd00:2::/64 via 2001:db8::12']);
  });

  it.each([
    ['v4 only here', { v4: V4 }, ENCAP_V4],
    ['v6 only here', { v6: V6 }, ENCAP_V6],
    ['no devices', {}, []],
  ] as const)('only plans families with a device (%s)', (_name, ctx, expected) => {
    expect(plan(peer(), ctx)).toEqual({ entries: expected, skipped: [] });
  });

  it.each([
    ['v4-only peer', { v4: '10.244.2.0/24' }, ENCAP_V4],
    ['v6-only peer', { v6: 'fd00:2::/64' }, ENCAP_V6],
  ] as const)('only plans families the peer has a subnet for (%s)', (_name, nets, expected) => {
    expect(plan(peer({}, nets), dual)).toEqual({ entries: expected, skipped: [] });
  });

  it.each(['host-gw', 'udp', '', 'VXLAN'])('ignores a lease of BackendType %j, once, naming it', (type) => {
    const result = plan(peer({ backendType: type }), dual);
    expect(result.entries).toEqual([]);
    expect(result.skipped).toHaveLength(1);
    expect(result.skipped[0]).toContain('10.244.2.0/24');
    expect(result.skipped[0]).toContain('192.168.1.12');
    expect(result.skipped[0]).toContain(JSON.stringify(type));
  });

  it.each([
    ['missing BackendData', { backendData: undefined }, 'BackendData'],
    ['malformed BackendData', { backendData: { VNI: 1, VtepMAC: 'garbage' } }, 'BackendData'],
    ['BackendData not an object', { backendData: 'x' }, 'BackendData'],
  ])('skips only the IPv4 part with %s', (_name, over, key) => {
    const lease = peer();
    const result = plan({ ...lease, attrs: { ...lease.attrs, ...over } as LeaseAttrs }, dual);
    expect(result.entries).toEqual(ENCAP_V6);
    expect(result.skipped).toHaveLength(1);
    expect(result.skipped[0]).toMatch(/IPv4 part of lease 10\.244\.2\.0\/24/);
    expect(result.skipped[0]).toContain(key);
  });

  it('skips only the IPv6 part with unparseable BackendV6Data, even when it would route directly', () => {
    const ctx: VxlanPeerContext = { v4: V4, v6: { linkIndex: 8, isDirect: always } };
    const result = plan(peer({ backendV6Data: { VtepMAC: 42 } }), ctx);
    expect(result.entries).toEqual(ENCAP_V4);
    expect(result.skipped).toEqual([expect.stringContaining('BackendV6Data')]);
    expect(result.skipped[0]).toContain('IPv6 part');
  });

  it('skips a family whose public address is missing', () => {
    const lease: Lease = { ...peer(), attrs: { backendType: 'vxlan', backendData: { VtepMAC: MAC4 }, backendV6Data: { VtepMAC: MAC6 } } };
    const result = plan(lease, dual);
    expect(result.entries).toEqual([]);
    expect(result.skipped).toEqual([expect.stringContaining('no PublicIP'), expect.stringContaining('no PublicIPv6')]);
  });

  it('does not require a VNI in the peer data', () => {
    expect(plan(peer({ backendData: { vtepmac: MAC4.toUpperCase() } }), { v4: V4 }).entries).toEqual(ENCAP_V4);
  });
});
