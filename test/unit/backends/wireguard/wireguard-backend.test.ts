import { afterEach, describe, expect, it, vi } from 'vitest';
import type { Network } from '../../../../backends/backend.js';
import { describeEntry } from '../../../../backends/datapath/entry-key.js';
import type { WgPeerConfig } from '../../../../backends/wireguard/uapi.js';
import { createWireguardBackend } from '../../../../backends/wireguard/wireguard-backend.js';
import type { WgImplementationChoice } from '../../../../backends/wireguard/wg-device-choice.js';
import { parseNetworkConfig } from '../../../../flanneld/config/network-config.js';
import type { NetworkConfig } from '../../../../flanneld/config/network-config-types.js';
import { formatIp, parseIp, type IpAddress } from '../../../../flanneld/ip/address.js';
import { formatCidr, parseCidr, type IpNet } from '../../../../flanneld/ip/cidr.js';
import type { ExternalInterface } from '../../../../flanneld/ip/external-interface.js';
import { encodeLeaseAttrs, type Lease, type LeaseAttrs, type LeaseEvent } from '../../../../flanneld/lease/lease.js';
import { backendHarness, type BackendHarness } from '../../../helpers/backend-harness.js';
import { FakeWgDevice } from '../../../helpers/fake-wg-device.js';

const ip = (text: string): IpAddress => parseIp(text) as IpAddress;
const net = (text: string): IpNet => parseCidr(text) as IpNet;
const config = (json: string): NetworkConfig => parseNetworkConfig(json).config;
const key = (n: number): string => Buffer.alloc(32, n).toString('base64');

const RESYNC_MS = 60_000;
const WARN = 40;
const OWN = { private: key(1), public: key(2) };
const V4 = '{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard"}}';
const DUAL = (mode: string) =>
  `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"wireguard","Mode":"${mode}"}}`;

interface PeerSpec {
  readonly n: number;
  readonly key?: string;
  readonly port?: number | null;
  readonly v6?: boolean;
  readonly backendType?: string;
}

/** A peer as upstream's wireguard backend publishes it. */
function peer(spec: PeerSpec): Lease {
  const data = { PublicKey: spec.key ?? key(100 + spec.n), Port: spec.port === undefined ? 51820 : spec.port };
  const attrs: LeaseAttrs = {
    publicIP: ip(`192.0.2.${spec.n}`),
    backendType: spec.backendType ?? 'wireguard',
    backendData: data,
    ...(spec.v6 ? { publicIPv6: ip(`2001:db8::${spec.n}`), backendV6Data: { ...data, Port: spec.port === undefined ? 51821 : spec.port } } : {}),
  };
  return {
    subnet: net(`10.244.${spec.n}.0/24`),
    ...(spec.v6 ? { ipv6Subnet: net(`fd00:10:244:${spec.n}::/64`) } : {}),
    attrs,
    reservation: false,
  };
}

const added = (...leases: Lease[]): LeaseEvent[] => leases.map((lease) => ({ type: 'added', lease }));
const removed = (...leases: Lease[]): LeaseEvent[] => leases.map((lease) => ({ type: 'removed', lease }));
const peerText = (p: WgPeerConfig): string =>
  `${p.publicKey.slice(0, 4)} ${p.endpoint ? `${formatIp(p.endpoint.ip)}:${p.endpoint.port}` : '-'} ${p.allowedIps.map(formatCidr).join(',')}`;
const k4 = (n: number): string => key(100 + n).slice(0, 4);

const harnesses: BackendHarness[] = [];
afterEach(async () => {
  for (const h of harnesses.splice(0)) await h.stopAll();
});

function setup(opts: { implementation?: WgImplementationChoice; kernelMissing?: boolean; noPublicV6?: boolean } = {}) {
  const harness = backendHarness({ subnet: '10.244.1.0/24', ipv6Subnet: 'fd00:10:244:1::/64', resyncMs: RESYNC_MS });
  harnesses.push(harness);
  const { dp, eth0, subnets, lines } = harness;
  const devices: FakeWgDevice[] = [];
  const extIface = (cfg: NetworkConfig): ExternalInterface => ({
    name: 'eth0',
    index: eth0.index,
    mtu: 1500,
    ifaceAddr: ip('192.0.2.1'),
    ifaceAddrV6: ip('2001:db8::1'),
    publicIP: ip('192.0.2.1'),
    ...(cfg.enableIPv6 && !opts.noPublicV6 ? { publicIPv6: ip('2001:db8::1') } : {}),
  });
  const make = (implementation: 'kernel' | 'userspace') => (name: string) => {
    const device = new FakeWgDevice(name, implementation, dp, implementation === 'kernel' && opts.kernelMissing === true);
    devices.push(device);
    return device;
  };

  const register = (json: string): Promise<Network> => {
    const cfg = config(json);
    const backend = createWireguardBackend(harness.deps(extIface(cfg)), {
      implementation: opts.implementation ?? 'auto',
      devices: () => ({ kernel: make('kernel'), userspace: make('userspace') }),
      keyPair: async () => ({ privateKey: OWN.private, publicKey: OWN.public }),
    });
    return backend.registerNetwork(cfg, new AbortController().signal);
  };
  const run = (network: Network) => harness.run(network);

  /** The live device of that name (a fallback leaves the failed kernel attempt in `devices` too). */
  const device = (name: string): FakeWgDevice => {
    const found = devices.filter((d) => d.name === name && d.index !== undefined).at(-1);
    if (!found) throw new Error(`no device ${name}`);
    return found;
  };

  return {
    dp, devices, subnets, lines, register, run, device, clock: harness.clock, push: harness.push, resync: harness.resync,
    /** Sorted by address, so expectations read in peer order. */
    peersOf: (name: string) => device(name).describePeers(peerText).sort((a, b) => a.slice(5).localeCompare(b.slice(5))),
    kernel: (): string[] => dp.entries.map((e) => describeEntry(e)).sort(),
    addresses: async (name: string) => (await dp.addresses(device(name).index as number)).map((a) => formatCidr(a.cidr)).sort(),
    warnings: () => lines.filter((l) => l.level === WARN).map((l) => l.msg),
  };
}

describe('wireguard registerNetwork', () => {
  it("publishes upstream's lease attrs: BackendType wireguard and {PublicKey, Port} per family", async () => {
    const h = setup();
    await h.register(DUAL('separate'));
    const [attrs] = h.subnets.callsTo('acquireLease').map((c) => c.request.attrs);
    expect(encodeLeaseAttrs(attrs!)).toBe(
      '{"PublicIP":"192.0.2.1","PublicIPv6":"2001:db8::1","BackendType":"wireguard",' +
        `"BackendData":{"PublicKey":"${OWN.public}","Port":51820},"BackendV6Data":{"PublicKey":"${OWN.public}","Port":51821}}`,
    );
  });

  it('separate mode: two devices, each with the lease address, MTU − 80 and one route for its whole network', async () => {
    const h = setup();
    const network = await h.register(DUAL('separate'));
    expect(network.mtu).toBe(1420);
    const v4 = h.device('flannel-wg');
    const v6 = h.device('flannel-wg-v6');
    expect([v4.iface, v6.iface]).toEqual([{ privateKey: OWN.private, listenPort: 51820 }, { privateKey: OWN.private, listenPort: 51821 }]);
    expect(h.dp.links.filter((l) => l.name.startsWith('flannel-wg')).map((l) => `${l.name} ${l.mtu} ${l.up}`)).toEqual(['flannel-wg 1420 true', 'flannel-wg-v6 1420 true']);
    expect(await h.addresses('flannel-wg')).toEqual(['10.244.1.0/32']);
    expect(await h.addresses('flannel-wg-v6')).toEqual(['fd00:10:244:1::/128']);
    expect(h.kernel()).toEqual([`route 10.244.0.0/16 dev#${v4.index}`, `route fd00:10:244::/56 dev#${v6.index}`].sort());
  });

  it('auto mode: one device listening on ListenPort carries both families', async () => {
    const h = setup();
    await h.register(DUAL('auto'));
    const dev = h.device('flannel-wg');
    expect(h.devices.map((d) => d.name)).toEqual(['flannel-wg']);
    expect(dev.iface?.listenPort).toBe(51820);
    expect(await h.addresses('flannel-wg')).toEqual(['10.244.1.0/32', 'fd00:10:244:1::/128']);
    expect(h.kernel()).toEqual([`route 10.244.0.0/16 dev#${dev.index}`, `route fd00:10:244::/56 dev#${dev.index}`].sort());
    const [attrs] = h.subnets.callsTo('acquireLease').map((c) => c.request.attrs);
    // The port really listened on, not ListenPortV6 as upstream publishes in this mode.
    expect(attrs?.backendV6Data).toEqual({ PublicKey: OWN.public, Port: 51820 });
  });

  it('refuses separate dual-stack without a public IPv6 address, naming the device, before claiming a lease', async () => {
    const h = setup({ noPublicV6: true });
    const err = (await h.register(DUAL('separate')).catch((e: unknown) => e)) as Error & { code: string };
    expect(err.code).toBe('ERR_NO_ADDRESS');
    expect(err.message).toContain('no public IPv6 address for the wireguard device flannel-wg-v6');
    expect(h.subnets.callsTo('acquireLease')).toEqual([]);
  });

  it('refuses an unknown Mode naming the key and value', async () => {
    const h = setup();
    const err = (await h.register('{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard","Mode":"both"}}').catch((e: unknown) => e)) as Error;
    expect(err.message).toContain('Mode');
    expect(err.message).toContain('both');
  });
});

describe('wireguard implementation choice', () => {
  it('auto uses the kernel when it can, and says so', async () => {
    const h = setup();
    await h.register(V4);
    expect(h.device('flannel-wg').implementation).toBe('kernel');
    expect(h.lines.some((l) => l.msg === 'WireGuard devices run in the kernel')).toBe(true);
  });

  it('auto falls back to wireguard-go when the kernel has no WireGuard, and says why', async () => {
    const h = setup({ kernelMissing: true });
    await h.register(DUAL('separate'));
    expect(h.device('flannel-wg').implementation).toBe('userspace');
    expect(h.device('flannel-wg-v6').implementation).toBe('userspace');
    const line = h.lines.find((l) => l.msg.includes('running the devices in userspace'));
    expect(line).toMatchObject({ reason: expect.stringContaining('EOPNOTSUPP') });
  });

  it('a forced kernel without WireGuard fails the start, naming the flag and the way out', async () => {
    const h = setup({ kernelMissing: true, implementation: 'kernel' });
    const err = (await h.register(V4).catch((e: unknown) => e)) as Error;
    expect(err.message).toContain('EOPNOTSUPP');
    expect(err.message).toContain('--wireguard-implementation=kernel');
    expect(h.subnets.callsTo('acquireLease')).toEqual([]);
  });

  it('a forced userspace runs wireguard-go even where the kernel could', async () => {
    const h = setup({ implementation: 'userspace' });
    await h.register(V4);
    expect(h.devices.map((d) => `${d.name} ${d.implementation}`)).toEqual(['flannel-wg userspace']);
  });
});

describe('wireguard run: peers', () => {
  it('adds a peer per lease with its subnet, endpoint and published port; ignores its own lease; removes a gone peer', async () => {
    const h = setup();
    const network = await h.register(V4);
    await h.run(network);
    await h.push(added(peer({ n: 2 }), peer({ n: 3, port: 51999 }), network.lease));
    expect(h.peersOf('flannel-wg')).toEqual([`${k4(2)} 192.0.2.2:51820 10.244.2.0/24`, `${k4(3)} 192.0.2.3:51999 10.244.3.0/24`]);
    // No per-peer kernel entries: the allowed IPs steer.
    expect(h.kernel()).toEqual([`route 10.244.0.0/16 dev#${h.device('flannel-wg').index}`]);

    await h.push(removed(peer({ n: 3 })));
    expect(h.peersOf('flannel-wg')).toEqual([`${k4(2)} 192.0.2.2:51820 10.244.2.0/24`]);
    expect(h.warnings()).toEqual([]);
  });

  it('sends only what changed: a new peer is one write, an unchanged one is not sent again', async () => {
    const h = setup();
    const network = await h.register(V4);
    await h.run(network);
    await h.push(added(peer({ n: 2 })));
    const dev = h.device('flannel-wg');
    const before = dev.updates.length;
    await h.push(added(peer({ n: 3 }), peer({ n: 2 })));
    expect(dev.updates.slice(before).map((u) => ({ remove: u.remove.length, write: u.write.map((p) => p.publicKey) }))).toEqual([{ remove: 0, write: [key(103)] }]);
  });

  it("a peer's new key replaces its old one; a changed address moves its endpoint", async () => {
    const h = setup();
    const network = await h.register(V4);
    await h.run(network);
    await h.push(added(peer({ n: 2 })));
    await h.push(added(peer({ n: 2, key: key(50) })));
    expect(h.peersOf('flannel-wg')).toEqual([`${key(50).slice(0, 4)} 192.0.2.2:51820 10.244.2.0/24`]);
  });

  it('a peer publishing Port 0 or no port is dialled on our own listen port', async () => {
    const h = setup();
    const network = await h.register('{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard","ListenPort":51000}}');
    await h.run(network);
    await h.push(added(peer({ n: 2, port: 0 }), peer({ n: 3, port: null })));
    expect(h.peersOf('flannel-wg')).toEqual([`${k4(2)} 192.0.2.2:51000 10.244.2.0/24`, `${k4(3)} 192.0.2.3:51000 10.244.3.0/24`]);
  });

  it('PSK and PersistentKeepaliveInterval reach every peer', async () => {
    const h = setup();
    const psk = key(9);
    const network = await h.register(`{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard","PSK":"${psk}","PersistentKeepaliveInterval":25}}`);
    await h.run(network);
    await h.push(added(peer({ n: 2 })));
    expect([...h.device('flannel-wg').peers.values()]).toEqual([expect.objectContaining({ presharedKey: psk, persistentKeepalive: 25 })]);
  });

  it('separate dual-stack: each family on its device with its own endpoint and port', async () => {
    const h = setup();
    const network = await h.register(DUAL('separate'));
    await h.run(network);
    await h.push(added(peer({ n: 2, v6: true })));
    expect(h.peersOf('flannel-wg')).toEqual([`${k4(2)} 192.0.2.2:51820 10.244.2.0/24`]);
    expect(h.peersOf('flannel-wg-v6')).toEqual([`${k4(2)} 2001:db8::2:51821 fd00:10:244:2::/64`]);
  });

  it.each([
    ['ipv4', '192.0.2.2:51820'],
    ['ipv6', '2001:db8::2:51821'],
    ['auto', '192.0.2.2:51820'],
  ])('%s mode: one peer with both subnets, dialled at %s', async (mode, endpoint) => {
    const h = setup();
    const network = await h.register(DUAL(mode));
    await h.run(network);
    await h.push(added(peer({ n: 2, v6: true })));
    expect(h.peersOf('flannel-wg')).toEqual([`${k4(2)} ${endpoint} 10.244.2.0/24,fd00:10:244:2::/64`]);
  });

  it('skips bad peers with one warning each naming the lease and field, and serves the others', async () => {
    const h = setup();
    const network = await h.register(V4);
    await h.run(network);
    const badKey = { ...peer({ n: 4 }), attrs: { ...peer({ n: 4 }).attrs, backendData: { PublicKey: 'short', Port: 51820 } } };
    await h.push(added(peer({ n: 2 }), peer({ n: 3, backendType: 'vxlan' }), badKey, peer({ n: 5, key: OWN.public })));
    expect(h.peersOf('flannel-wg')).toEqual([`${k4(2)} 192.0.2.2:51820 10.244.2.0/24`]);
    const warned = h.lines.filter((l) => l.level === WARN).map((l) => JSON.stringify(l));
    expect(warned.join('\n')).toContain('non-wireguard');
    expect(warned.join('\n')).toContain('BackendData.PublicKey is not the base64 of a 32-byte key');
    expect(warned.join('\n')).toContain("this node's own key");
  });

  it('two leases with one public key: the first keeps it, the second is named, and takes over once the first goes', async () => {
    const h = setup();
    const network = await h.register(V4);
    await h.run(network);
    await h.push(added(peer({ n: 2, key: key(60) })));
    await h.push(added(peer({ n: 3, key: key(60) })));
    expect(h.peersOf('flannel-wg')).toEqual([`${key(60).slice(0, 4)} 192.0.2.2:51820 10.244.2.0/24`]);
    expect(h.warnings().join('\n')).toContain('its public key is already published by lease 10.244.2.0-24');
    await h.push(removed(peer({ n: 2, key: key(60) })));
    expect(h.peersOf('flannel-wg')).toEqual([`${key(60).slice(0, 4)} 192.0.2.3:51820 10.244.3.0/24`]);
  });
});

describe('wireguard run: drift', () => {
  it('the periodic resync removes a peer no lease names, restores a removed one and rewrites an altered one', async () => {
    const h = setup();
    const network = await h.register(V4);
    await h.run(network);
    await h.push(added(peer({ n: 2 }), peer({ n: 3 })));
    const dev = h.device('flannel-wg');
    dev.peers.set(key(77), { publicKey: key(77), allowedIps: [net('10.244.9.0/24')] });
    dev.peers.delete(key(103));
    dev.peers.set(key(102), { ...(dev.peers.get(key(102)) as WgPeerConfig), endpoint: { ip: ip('198.51.100.9'), port: 1 } });
    await h.resync();
    await vi.waitFor(() => expect(h.peersOf('flannel-wg')).toEqual([`${k4(2)} 192.0.2.2:51820 10.244.2.0/24`, `${k4(3)} 192.0.2.3:51820 10.244.3.0/24`]));
    expect(h.lines.find((l) => l.msg === 'WireGuard peers drifted from the leases; converging')).toMatchObject({ unknownPeers: 1, missingOrChanged: 2 });
  });

  it('a device deleted behind our back is made anew with its address, route and every peer', async () => {
    const h = setup({ implementation: 'userspace' });
    const network = await h.register(V4);
    await h.run(network);
    await h.push(added(peer({ n: 2 })));
    const old = h.device('flannel-wg').index;
    h.dp.deleteLinkBehindOurBack('flannel-wg');
    await vi.waitFor(async () => {
      const dev = h.device('flannel-wg');
      expect(dev.index).not.toBe(old);
      expect(h.peersOf('flannel-wg')).toEqual([`${k4(2)} 192.0.2.2:51820 10.244.2.0/24`]);
      expect(h.kernel()).toEqual([`route 10.244.0.0/16 dev#${dev.index}`]);
      expect(await h.addresses('flannel-wg')).toEqual(['10.244.1.0/32']);
    });
  });

  it('closes its devices when run ends', async () => {
    const h = setup();
    const network = await h.register(V4);
    const r = await h.run(network);
    r.abort.abort();
    await r.done;
    expect(h.device('flannel-wg').closed).toBe(true);
  });
});
