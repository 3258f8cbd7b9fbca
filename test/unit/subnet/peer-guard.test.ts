import { describe, expect, it } from 'vitest';
import { allocationRanges, parseNetworkConfig } from '../../../flanneld/config/network-config.js';
import { parseIp, type IpAddress } from '../../../flanneld/ip/address.js';
import { parseCidr, type IpNet } from '../../../flanneld/ip/cidr.js';
import type { Lease, LeaseEvent } from '../../../flanneld/lease/lease.js';
import { checkPeerLease, type PeerRules, type Refusal } from '../../../flanneld/lease/peer-checks.js';
import { SubnetIndex } from '../../../flanneld/lease/subnet-index.js';
import { formatSubnetKey } from '../../../flanneld/lease/subnet-key.js';
import { PeerGuard } from '../../../flanneld/subnet/peer-guard.js';
import { memoryLog } from '../../helpers/test-log.js';

const net = (c: string): IpNet => parseCidr(c) as IpNet;
const ip = (a: string): IpAddress => parseIp(a) as IpAddress;
const OWN: Lease = { subnet: net('10.244.1.0/24'), attrs: { publicIP: ip('192.0.2.1'), backendType: 'vxlan' }, reservation: false };
const HOST = { addresses: [ip('192.0.2.1'), ip('10.244.1.0'), ip('10.244.1.1'), ip('127.0.0.1'), ip('2001:db8:2::1')], connectedNetworks: [net('192.0.2.0/24'), net('10.244.1.0/24'), net('2001:db8:2::/64')] };
const rules = (over: Partial<PeerRules> = {}, conf = '{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"2001:db8:a::/48"}'): PeerRules => ({
  ranges: allocationRanges(parseNetworkConfig(conf).config), exactSubnetLength: true, own: OWN, host: HOST, ...over,
});

let macs = 0;
function peer(subnet: string, over: { publicIP?: string; mac?: unknown; ipv6Subnet?: string; publicIPv6?: string } = {}): Lease {
  const mac = 'mac' in over ? over.mac : `0a:00:00:00:00:${(++macs).toString(16).padStart(2, '0')}`;
  return {
    ...(subnet ? { subnet: net(subnet) } : {}),
    ...(over.ipv6Subnet ? { ipv6Subnet: net(over.ipv6Subnet) } : {}),
    attrs: {
      publicIP: ip(over.publicIP ?? '192.0.2.9'),
      ...(over.publicIPv6 ? { publicIPv6: ip(over.publicIPv6) } : {}),
      backendType: 'vxlan',
      backendData: { VNI: 1, VtepMAC: mac },
    },
    reservation: false,
  };
}
const added = (lease: Lease): LeaseEvent => ({ type: 'added', lease });
const removed = (lease: Lease): LeaseEvent => ({ type: 'removed', lease });
const keys = (events: readonly LeaseEvent[]): string[] => events.map((e) => `${e.type} ${formatSubnetKey(e.lease)}`);
const reasonOf = (lease: Lease, r: PeerRules = rules()): string | undefined => checkPeerLease(lease, r)?.reason;

describe('checks on one peer lease', () => {
  it.each([
    ['the underlay /24 (would replace the connected route)', peer('192.0.2.0/24'), 'outside-network'],
    ['half the IPv4 space', peer('128.0.0.0/1'), 'outside-network'],
    ['a quarter of it', peer('64.0.0.0/2'), 'outside-network'],
    ['a /25 where SubnetLen is 24', peer('10.244.5.0/25'), 'wrong-subnet-length'],
    ['a /16 over everything', peer('10.244.0.0/16'), 'wrong-subnet-length'],
    ['an IPv6 subnet outside IPv6Network', peer('10.244.5.0/24', { ipv6Subnet: '2001:db8:b:5::/64' }), 'outside-network'],
    ['PublicIP loopback', peer('10.244.5.0/24', { publicIP: '127.0.0.1' }), 'bad-public-ip'],
    ['PublicIP link-local', peer('10.244.5.0/24', { publicIP: '169.254.9.9' }), 'bad-public-ip'],
    ['PublicIP multicast', peer('10.244.5.0/24', { publicIP: '224.0.0.5' }), 'bad-public-ip'],
    ['PublicIP broadcast', peer('10.244.5.0/24', { publicIP: '255.255.255.255' }), 'bad-public-ip'],
    ['PublicIP one of ours', peer('10.244.5.0/24', { publicIP: '192.0.2.1' }), 'bad-public-ip'],
    ['PublicIPv6 link-local', peer('10.244.5.0/24', { ipv6Subnet: '2001:db8:a:5::/64', publicIPv6: 'fe80::1' }), 'bad-public-ip'],
    ['PublicIPv6 multicast', peer('10.244.5.0/24', { ipv6Subnet: '2001:db8:a:5::/64', publicIPv6: 'ff02::1' }), 'bad-public-ip'],
    ['a multicast VtepMAC', peer('10.244.5.0/24', { mac: '01:00:5e:00:00:01' }), 'bad-vtep-mac'],
    ['a zero VtepMAC', peer('10.244.5.0/24', { mac: '00:00:00:00:00:00' }), 'bad-vtep-mac'],
    ['a VtepMAC that is no MAC', peer('10.244.5.0/24', { mac: 'x'.repeat(1_000_000) }), 'bad-vtep-mac'],
    ['a VtepMAC that is a number', peer('10.244.5.0/24', { mac: 42 }), 'bad-vtep-mac'],
  ])('refuses %s', (_what, lease, reason) => {
    expect(reasonOf(lease)).toBe(reason);
  });

  it('accepts an ordinary dual-stack peer, and a vxlan peer with a dash-written MAC', () => {
    expect(reasonOf(peer('10.244.5.0/24', { ipv6Subnet: '2001:db8:a:5::/64', publicIPv6: '2001:db8:2::5' }))).toBeUndefined();
    expect(reasonOf(peer('10.244.5.0/24', { mac: '0A-00-00-00-00-99' }))).toBeUndefined();
  });

  it('refuses a subnet overlapping our own, and one covering an address or connected network of this host', () => {
    const kube = rules({ exactSubnetLength: false });
    expect(reasonOf(peer('10.244.0.0/23'), kube)).toBe('overlaps-own-subnet');
    expect(reasonOf(peer('10.244.1.0/24'), kube)).toBe('overlaps-own-subnet');
    const wide = rules({ exactSubnetLength: false }, '{"Network":"192.0.0.0/8"}');
    expect(checkPeerLease(peer('192.0.2.0/24'), wide)).toEqual({ reason: 'covers-host-network', detail: 'subnet 192.0.2.0/24 holds 192.0.2.1, an address of this host' });
    expect(checkPeerLease(peer('192.0.0.0/16'), wide)?.reason).toBe('covers-host-network');
    expect(reasonOf(peer('192.0.9.0/24'), wide)).toBeUndefined();
  });

  it('takes a route for the whole Network (the udp device) as no conflict', () => {
    const udp = rules({ host: { addresses: HOST.addresses, connectedNetworks: [...HOST.connectedNetworks, net('10.244.0.0/16')] } });
    expect(reasonOf(peer('10.244.5.0/24'), udp)).toBeUndefined();
  });

  it('keeps the detail of a huge value short', () => {
    const refusal = checkPeerLease(peer('10.244.5.0/24', { mac: 'y'.repeat(1_000_000) }), rules()) as Refusal;
    expect(refusal.detail.length).toBeLessThan(120);
  });
});

describe('the peer guard between the store and the backends', () => {
  const guard = (r: PeerRules = rules()) => {
    const { log, lines } = memoryLog();
    const changes: number[] = [];
    const g = new PeerGuard(r, log, { refusedChanged: (refused) => changes.push(refused.size) });
    return { g, lines, changes };
  };

  it('passes good peers, drops our own key, and holds back refused ones, logging each once', () => {
    const { g, lines } = guard();
    const good = peer('10.244.5.0/24');
    const bad = peer('192.0.2.0/24');
    const own = { ...OWN };
    expect(keys(g.filter([added(good), added(bad), added(own)]))).toEqual(['added 10.244.5.0-24']);
    for (let i = 0; i < 40; i++) g.filter([added(bad)]);
    expect(lines.filter((l) => l.msg.startsWith('peer lease refused'))).toHaveLength(1);
    expect(lines.find((l) => l.msg.startsWith('peer lease refused'))).toMatchObject({ peer: '192.0.2.0-24', reason: 'outside-network' });
    expect([...g.refused().keys()]).toEqual(['192.0.2.0-24']);
    expect(g.filter([removed(bad)])).toEqual([]);
    expect(g.refused().size).toBe(0);
  });

  it('keeps the first holder of a VtepMAC, and lets the second in once the first has gone', () => {
    const { g } = guard();
    const first = peer('10.244.5.0/24', { mac: '0a:00:00:00:00:aa' });
    const impostor = peer('10.244.6.0/24', { mac: '0A:00:00:00:00:AA' });
    expect(keys(g.filter([added(first), added(impostor)]))).toEqual(['added 10.244.5.0-24']);
    expect(g.refused().get('10.244.6.0-24')?.reason).toBe('duplicate-vtep-mac');
    // The impostor going away must not take the real peer's entries with it: nothing is passed on.
    expect(g.filter([removed(impostor)])).toEqual([]);
    g.filter([added(impostor)]);
    expect(keys(g.filter([removed(first)]))).toEqual(['removed 10.244.5.0-24', 'added 10.244.6.0-24']);
    expect(g.refused().size).toBe(0);
  });

  it('refuses a peer overlapping another live peer (kube mode, where sizes may differ), and lifts it when that one leaves', () => {
    const { g } = guard(rules({ exactSubnetLength: false }));
    const wide = peer('10.244.4.0/23');
    const inner = peer('10.244.5.0/24');
    expect(keys(g.filter([added(wide), added(inner)]))).toEqual(['added 10.244.4.0-23']);
    expect(g.refused().get('10.244.5.0-24')).toEqual({ reason: 'overlaps-peer', detail: 'subnet 10.244.5.0/24 overlaps 10.244.4.0/23 of the live peer 10.244.4.0-23' });
    expect(keys(g.filter([removed(wide)]))).toEqual(['removed 10.244.4.0-23', 'added 10.244.5.0-24']);
  });

  it('withdraws an accepted peer whose lease turns bad, and lets it back when it is fixed', () => {
    const { g, changes } = guard();
    const good = peer('10.244.5.0/24', { mac: '0a:00:00:00:00:bb' });
    g.filter([added(good)]);
    const broken = peer('10.244.5.0/24', { mac: '01:00:00:00:00:01' });
    expect(keys(g.filter([added(broken)]))).toEqual(['removed 10.244.5.0-24']);
    expect(keys(g.filter([added(good)]))).toEqual(['added 10.244.5.0-24']);
    expect(changes).toEqual([1, 0]);
  });

  it('passes an emptied batch on (the reconciler waits for the first one)', () => {
    const { g } = guard();
    expect(g.filter([added(peer('128.0.0.0/1'))])).toEqual([]);
  });

  it('judges 25,000 peers in a fraction of a second', () => {
    const { g } = guard(rules({ exactSubnetLength: false }, '{"Network":"10.0.0.0/8"}'));
    const leases = Array.from({ length: 25_000 }, (_, i) => peer(`10.${(i >> 8) + 1}.${i & 255}.0/24`, { mac: `0a:00:00:${((i >> 16) & 255).toString(16).padStart(2, '0')}:${((i >> 8) & 255).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}` }));
    const started = performance.now();
    expect(g.filter(leases.map(added))).toHaveLength(25_000);
    expect(performance.now() - started).toBeLessThan(5000);
  });
});

describe('SubnetIndex', () => {
  it('finds a stored subnet that contains, equals or lies inside the one asked about', () => {
    const index = new SubnetIndex<string>();
    index.add(net('10.244.4.0/23'), 'a');
    index.add(net('10.245.7.0/24'), 'b');
    index.add(net('2001:db8:a:5::/64'), 'c');
    expect(index.overlapping(net('10.244.5.0/24'))?.value).toBe('a');
    expect(index.overlapping(net('10.244.4.0/23'))?.value).toBe('a');
    expect(index.overlapping(net('10.245.0.0/16'))?.value).toBe('b');
    expect(index.overlapping(net('10.0.0.0/8'))?.value).toBeDefined();
    expect(index.overlapping(net('10.244.6.0/24'))).toBeUndefined();
    expect(index.overlapping(net('2001:db8:a::/48'))?.value).toBe('c');
    expect(index.overlapping(net('2001:db8:b::/48'))).toBeUndefined();
    index.delete(net('10.244.4.0/23'));
    expect(index.overlapping(net('10.244.5.0/24'))).toBeUndefined();
  });
});
