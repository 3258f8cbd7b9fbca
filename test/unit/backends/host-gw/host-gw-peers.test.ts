import { describe, expect, it } from 'vitest';
import { parseIp, type IpAddress } from '../../../../flanneld/ip/address.js';
import { parseCidr, type IpNet } from '../../../../flanneld/ip/cidr.js';
import type { Lease, LeaseAttrs } from '../../../../flanneld/lease/lease.js';
import { describeEntry } from '../../../../backends/datapath/entry-key.js';
import { checkHostGwReachable, planHostGwPeer, type HostGwPeerContext } from '../../../../backends/host-gw/host-gw-peers.js';

const ip = (text: string): IpAddress => parseIp(text)!;
const net = (text: string): IpNet => parseCidr(text)!;

function peer(attrs: Partial<LeaseAttrs> = {}, nets: { v4?: string; v6?: string } = { v4: '10.244.2.0/24', v6: 'fd00:2::/64' }): Lease {
  return {
    ...(nets.v4 ? { subnet: net(nets.v4) } : {}),
    ...(nets.v6 ? { ipv6Subnet: net(nets.v6) } : {}),
    attrs: { publicIP: ip('192.168.1.12'), publicIPv6: ip('2001:db8::12'), backendType: 'host-gw', ...attrs },
    reservation: false,
  };
}

const dual: HostGwPeerContext = { v4: { linkIndex: 2 }, v6: { linkIndex: 2 } };
const plan = (lease: Lease, ctx: HostGwPeerContext) => {
  const { entries, skipped } = planHostGwPeer(lease, ctx);
  return { entries: entries.map(describeEntry), skipped };
};

describe('planHostGwPeer', () => {
  it('routes each subnet via the peer public address on the external interface', () => {
    const { entries } = planHostGwPeer(peer(), dual);
    expect(entries).toEqual([
      { kind: 'route', dst: net('10.244.2.0/24'), via: ip('192.168.1.12'), linkIndex: 2 },
      { kind: 'route', dst: net('fd00:2::/64'), via: ip('2001:db8::12'), linkIndex: 2 },
    ]);
  });

  it.each([
    ['dual-stack node, v4-only peer', dual, { v4: '10.244.2.0/24' }, ['route 10.244.2.0/24 via 192.168.1.12 dev#2']],
    ['dual-stack node, v6-only peer', dual, { v6: 'fd00:2::/64' }, ['route fd00:2::/64 via 2001:db8::12 dev#2']],
    ['v4-only node, dual peer', { v4: { linkIndex: 3 } }, { v4: '10.244.2.0/24', v6: 'fd00:2::/64' }, ['route 10.244.2.0/24 via 192.168.1.12 dev#3']],
    ['v6-only node, dual peer', { v6: { linkIndex: 4 } }, { v4: '10.244.2.0/24', v6: 'fd00:2::/64' }, ['route fd00:2::/64 via 2001:db8::12 dev#4']],
    ['v4-only node, v6-only peer', { v4: { linkIndex: 3 } }, { v6: 'fd00:2::/64' }, []],
  ] as const)('%s', (_name, ctx, nets, expected) => {
    expect(plan(peer({}, nets), ctx)).toEqual({ entries: expected, skipped: [] });
  });

  it.each(['vxlan', 'alloc', ''])('ignores a lease of BackendType %j with one reason naming it', (type) => {
    const result = plan(peer({ backendType: type }), dual);
    expect(result.entries).toEqual([]);
    expect(result.skipped).toEqual([expect.stringMatching(/non-host-gw lease 10\.244\.2\.0\/24 \+ fd00:2::\/64/)]);
    expect(result.skipped[0]).toContain(JSON.stringify(type));
  });

  it('skips a family without a public address and keeps the other', () => {
    const lease: Lease = { ...peer(), attrs: { publicIP: ip('192.168.1.12'), backendType: 'host-gw' } };
    const result = plan(lease, dual);
    expect(result.entries).toEqual(['route 10.244.2.0/24 via 192.168.1.12 dev#2']);
    expect(result.skipped).toEqual([expect.stringContaining('IPv6 part of lease')]);
    expect(result.skipped[0]).toContain('no PublicIPv6');
  });
});

describe('checkHostGwReachable', () => {
  const connected = [net('192.168.1.0/24'), net('10.0.0.0/8'), net('2001:db8::/64')];

  it.each(['192.168.1.12', '192.168.1.255', '10.200.0.1', '2001:db8::12'])('accepts %s on a connected network', (peerIP) => {
    expect(checkHostGwReachable(ip(peerIP), connected)).toBeUndefined();
  });

  it.each([
    ['192.168.2.12', '192.168.1.0/24, 10.0.0.0/8'],
    ['2001:db8:1::12', '2001:db8::/64'],
  ])('refuses %s, naming the peer and the networks checked', (peerIP, checked) => {
    const reason = checkHostGwReachable(ip(peerIP), connected);
    expect(reason).toContain(`host-gw peer ${peerIP} is not on a directly connected network`);
    expect(reason).toContain(checked);
  });

  it('says so when no network of that family is connected', () => {
    expect(checkHostGwReachable(ip('2001:db8::12'), [net('192.168.1.0/24')])).toContain('no IPv6 network');
    expect(checkHostGwReachable(ip('192.168.1.12'), [])).toContain('no IPv4 network');
  });
});
