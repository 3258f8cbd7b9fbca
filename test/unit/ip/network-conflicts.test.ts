import { describe, expect, it } from 'vitest';
import { parseIp, type IpAddress } from '../../../flanneld/ip/address.js';
import { parseCidr, type IpNet } from '../../../flanneld/ip/cidr.js';
import type { HostInterface } from '../../../flanneld/ip/external-interface.js';
import { networkConflict } from '../../../flanneld/ip/network-conflicts.js';

const net = (c: string): IpNet => parseCidr(c) as IpNet;
const ip = (a: string): IpAddress => parseIp(a) as IpAddress;
const iface = (name: string, ...addrs: string[]): HostInterface => ({ name, index: 2, mtu: 1500, addrs: addrs.map(ip) });

describe('a Network that takes in the host\'s own network', () => {
  const host = [iface('lo', '127.0.0.1', '::1'), iface('eth0', '192.0.2.1', '2001:db8:2::1')];
  const connected = [net('192.0.2.0/24'), net('2001:db8:2::/64')];

  it.each([
    ['192.0.0.0/8', 'it holds 192.0.2.1, an address of this host on eth0'],
    ['192.0.2.0/25', 'it holds 192.0.2.1, an address of this host on eth0'],
    ['127.0.0.0/8', 'it holds 127.0.0.1, an address of this host on lo'],
    ['2001:db8::/32', 'it holds 2001:db8:2::1, an address of this host on eth0'],
  ])('refuses %s: %s', (network, why) => {
    expect(networkConflict(net(network), host, connected)).toBe(why);
  });

  it('refuses a Network inside a wider connected network', () => {
    expect(networkConflict(net('10.244.0.0/16'), [iface('eth0', '10.1.2.3')], [net('10.0.0.0/8')])).toBe('it lies inside 10.0.0.0/8, a network connected to this host');
  });

  it("accepts its own devices' addresses and routes (cni0, flannel.1, the udp device's route for the whole Network)", () => {
    const ours = [...host, iface('cni0', '10.244.3.1'), iface('flannel.1', '10.244.3.0'), iface('flannel0', '10.244.3.0')];
    expect(networkConflict(net('10.244.0.0/16'), ours, [...connected, net('10.244.3.0/24'), net('10.244.0.0/16')])).toBeUndefined();
  });
});
