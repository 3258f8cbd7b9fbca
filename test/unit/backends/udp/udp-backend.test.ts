import { afterEach, describe, expect, it, vi } from 'vitest';
import { backendHarness, type BackendHarness } from '../../../helpers/backend-harness.js';
import type { Network } from '../../../../backends/backend.js';
import type { DatapathEntry, LinkInfo } from '../../../../backends/datapath/datapath.js';
import { describeEntry } from '../../../../backends/datapath/entry-key.js';
import { createUdpBackend } from '../../../../backends/udp/udp-backend.js';
import type { TunDevice, UdpDataplane, UdpProxy, UdpProxyOptions, UdpStats } from '../../../../backends/udp/udp-dataplane.js';
import { parseNetworkConfig } from '../../../../flanneld/config/network-config.js';
import type { NetworkConfig } from '../../../../flanneld/config/network-config-types.js';
import { formatIp, parseIp, type IpAddress } from '../../../../flanneld/ip/address.js';
import { formatCidr, parseCidr, type IpNet } from '../../../../flanneld/ip/cidr.js';
import type { ExternalInterface } from '../../../../flanneld/ip/external-interface.js';
import { encodeLeaseAttrs, type Lease, type LeaseEvent } from '../../../../flanneld/lease/lease.js';
import { ConfigError } from '../../../../flanneld/runtime/errors.js';
import { seededRandom } from '../../../../flanneld/runtime/random.js';
import type { FakeDatapath } from '../../../helpers/fake-datapath.js';

const ip = (text: string): IpAddress => parseIp(text) as IpAddress;
const net = (text: string): IpNet => parseCidr(text) as IpNet;
const config = (json: string): NetworkConfig => parseNetworkConfig(json).config;

const RESYNC_MS = 60_000;
const WARN = 40;
const IFACE_IP = '192.168.1.11';
const OWN_SUBNET = '10.244.3.0/24';
const V4 = '{"Network":"10.244.0.0/16","Backend":{"Type":"udp"}}';

/** A peer as upstream's udp backend publishes it: PublicIP only, no BackendType. */
function peer(n: number, publicIP: string): Lease {
  return { subnet: net(`10.244.${n}.0/24`), attrs: { publicIP: ip(publicIP), backendType: '' }, reservation: false };
}

const added = (...leases: Lease[]): LeaseEvent[] => leases.map((lease) => ({ type: 'added', lease }));
const removed = (...leases: Lease[]): LeaseEvent[] => leases.map((lease) => ({ type: 'removed', lease }));

const ZERO_DROPS: UdpStats['dropped'] = {
  no_route: 0, queue_full: 0, send_error: 0, ttl_expired: 0, malformed: 0, not_ipv4: 0, tun_write: 0, tun_read_error: 0, udp_receive_error: 0,
};

class FakeProxy implements UdpProxy {
  /** setRoute/deleteRoute in call order, as text, so a test sees replays and not only the final table. */
  readonly calls: string[] = [];
  readonly table = new Map<string, string>();
  stopped = false;
  dropped: UdpStats['dropped'] = ZERO_DROPS;

  constructor(
    readonly opts: UdpProxyOptions,
    private readonly onStop: () => void,
  ) {}

  setRoute(subnet: IpNet, peerIp: IpAddress, port: number): void {
    if (this.stopped) throw new Error('setRoute on a stopped proxy');
    const route = `${formatIp(peerIp)}:${port}`;
    this.calls.push(`set ${formatCidr(subnet)} ${route}`);
    this.table.set(formatCidr(subnet), route);
  }

  deleteRoute(subnet: IpNet): void {
    if (this.stopped) throw new Error('deleteRoute on a stopped proxy');
    this.calls.push(`delete ${formatCidr(subnet)}`);
    this.table.delete(formatCidr(subnet));
  }

  stats(): UdpStats {
    return {
      tunRxPackets: 0, txPackets: 0, txBytes: 0, rxPackets: 0, rxBytes: 0, tunTxPackets: 0, icmpSent: 0,
      dropped: this.dropped, routes: this.table.size,
    };
  }

  stop(): void {
    if (this.stopped) throw new Error('proxy stopped twice');
    this.stopped = true;
    this.onStop();
  }

  /** The table as `subnet -> peer:port`, sorted. */
  routes(): string[] {
    return [...this.table].map(([subnet, route]) => `${subnet} -> ${route}`).sort();
  }
}

/**
 * The kernel side of a TUN device, modelled on the FakeDatapath: opening one creates the link (with a fresh index,
 * as the kernel would), and closing it (the proxy's stop) removes the link with its address and routes.
 */
class FakeUdpDataplane implements UdpDataplane {
  readonly calls: string[] = [];
  readonly proxies: FakeProxy[] = [];
  /** TUN descriptors opened and not closed yet, with their device's index: empty whenever no proxy runs. */
  readonly openFds = new Map<number, number>();
  /** The next start throws this (as the addon does, after closing the descriptor it was given). */
  startFailure: Error | undefined;
  private nextFd = 20;

  constructor(private readonly dp: FakeDatapath) {}

  openTun(name: string): TunDevice {
    this.calls.push(`openTun ${name}`);
    this.openFds.set(this.nextFd, this.dp.addLink({ name, kind: 'tun' }).index);
    return { name, fd: this.nextFd++ };
  }

  closeTun(tun: TunDevice): void {
    this.calls.push(`closeTun fd ${tun.fd}`);
    this.close(tun);
  }

  start(opts: UdpProxyOptions): UdpProxy {
    this.calls.push(`start ${opts.tun.name} fd ${opts.tun.fd}`);
    const failure = this.startFailure;
    if (failure) {
      this.startFailure = undefined;
      this.close(opts.tun);
      throw failure;
    }
    const proxy = new FakeProxy(opts, () => {
      this.calls.push(`stop fd ${opts.tun.fd}`);
      this.close(opts.tun);
    });
    this.proxies.push(proxy);
    return proxy;
  }

  /** The kernel's side of the last close: the device goes, unless it went behind our back already. */
  private close(tun: TunDevice): void {
    const index = this.openFds.get(tun.fd);
    if (index === undefined) throw new Error(`fd ${tun.fd} closed twice`);
    this.openFds.delete(tun.fd);
    // Already gone when someone deleted it behind our back; never remove a newer device of the same name.
    if (this.dp.links.some((l) => l.index === index)) void this.dp.deleteLink(index);
  }

  get current(): FakeProxy {
    const p = this.proxies.at(-1);
    if (!p) throw new Error('no proxy started');
    return p;
  }
}

const harnesses: BackendHarness[] = [];
afterEach(async () => {
  for (const h of harnesses.splice(0)) await h.stopAll();
});

function setup(opts: { mtu?: number } = {}) {
  const harness = backendHarness({ ...(opts.mtu !== undefined ? { mtu: opts.mtu } : {}), connected: ['192.168.1.0/24'], subnet: OWN_SUBNET, resyncMs: RESYNC_MS });
  harnesses.push(harness);
  const { dp, eth0, subnets, lines, progress, mtu } = harness;
  const dataplane = new FakeUdpDataplane(dp);
  /** As chooseExternalInterface builds it: public addresses only for the enabled families. */
  const extIface = (cfg: NetworkConfig): ExternalInterface => ({
    name: 'eth0',
    index: eth0.index,
    mtu,
    ifaceAddr: ip(IFACE_IP),
    ifaceAddrV6: ip('2001:db8::11'),
    ...(cfg.enableIPv4 ? { publicIP: ip(IFACE_IP) } : {}),
    ...(cfg.enableIPv6 ? { publicIPv6: ip('2001:db8::11') } : {}),
  });
  let dropSource: (() => Readonly<Record<string, number>> | undefined) | undefined;

  const register = (json: string): Promise<Network> => {
    const cfg = config(json);
    const deps = harness.deps(extIface(cfg), {
      random: seededRandom(7),
      trackDrops: (source) => {
        dropSource = source;
      },
    });
    return createUdpBackend(deps, dataplane).registerNetwork(cfg, new AbortController().signal);
  };

  /** Starts `run` and waits until it follows the leases, the kernel's notices and the resync timer. */
  const run = (network: Network) => harness.run(network);

  const { push, resync } = progress;

  const tun = (): LinkInfo | undefined => dp.links.find((l) => l.name === 'flannel0');

  return {
    dp, dataplane, subnets, lines, register, run, push, resync, tun,
    kernel: (): string[] => dp.entries.map((e: DatapathEntry) => describeEntry(e)).sort(),
    warnings: () => lines.filter((l) => l.level === WARN),
    /** What the backend registered as its drop counters, read now. */
    drops: () => dropSource?.(),
  };
}

describe('udp registerNetwork', () => {
  it("publishes upstream's udp lease attrs: PublicIP only, no BackendType or BackendData", async () => {
    const h = setup();
    await h.register(V4);

    const [attrs] = h.subnets.callsTo('acquireLease').map((c) => c.request.attrs);
    expect(attrs).toEqual({ publicIP: ip(IFACE_IP), backendType: '' });
    expect(encodeLeaseAttrs(attrs!)).toBe(`{"PublicIP":"${IFACE_IP}","PublicIPv6":null}`);
  });

  it.each([
    [1500, 1472],
    [9001, 8973],
  ])('reports MTU = underlay %i − 28 (outer IPv4 + UDP headers) = %i and gives it to the device and the proxy', async (underlay, mtu) => {
    const h = setup({ mtu: underlay });
    const network = await h.register(V4);

    expect(network.mtu).toBe(mtu);
    expect(h.tun()).toMatchObject({ mtu, up: true });
    expect(h.dataplane.current.opts.mtu).toBe(mtu);
  });

  it('opens flannel0, starts the proxy on the interface address and port 8285, and routes the Network into it', async () => {
    const h = setup();
    const network = await h.register(V4);

    expect(h.dataplane.calls).toEqual(['openTun flannel0', 'start flannel0 fd 20']);
    const { opts } = h.dataplane.current;
    expect(opts).toEqual({ tun: { name: 'flannel0', fd: 20 }, localAddr: ip(IFACE_IP), port: 8285, mtu: 1472 });
    const tun = h.tun() as LinkInfo;
    // The lease's network address as a /32: a pod subnet route is not this device's to claim.
    expect((await h.dp.addresses(tun.index)).map((a) => `${formatIp(a.address)} ${formatCidr(a.cidr)}`)).toEqual(['10.244.3.0 10.244.3.0/32']);
    expect(h.kernel()).toEqual([`route 10.244.0.0/16 dev#${tun.index}`]);
    expect(network.lease.subnet).toEqual(net(OWN_SUBNET));
  });

  it('listens on and sends to Backend.Port', async () => {
    const h = setup();
    const network = await h.register('{"Network":"10.244.0.0/16","Backend":{"Type":"udp","port":9999}}');
    expect(h.dataplane.current.opts.port).toBe(9999);
    await h.run(network);
    await h.push(added(peer(2, '192.168.1.12')));
    expect(h.dataplane.current.routes()).toEqual(['10.244.2.0/24 -> 192.168.1.12:9999']);
  });

  it('refuses EnableIPv6 with a ConfigError naming it, before claiming a lease or opening a device', async () => {
    const h = setup();
    const err: unknown = await h.register('{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"udp"}}').catch((e: unknown) => e);

    expect(err).toBeInstanceOf(ConfigError);
    expect(err).toMatchObject({ key: 'EnableIPv6', value: true, code: 'ERR_CONFIG_INVALID' });
    expect((err as Error).message).toContain('EnableIPv6');
    expect(h.subnets.callsTo('acquireLease')).toEqual([]);
    expect(h.dataplane.calls).toEqual([]);
  });

  it('refuses a bad Backend.Port before claiming a lease', async () => {
    const h = setup();
    const err: unknown = await h.register('{"Network":"10.244.0.0/16","Backend":{"Type":"udp","Port":0}}').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect(err).toMatchObject({ key: 'Backend.Port', value: 0 });
    expect(h.subnets.callsTo('acquireLease')).toEqual([]);
  });
});

describe('udp run: peer table', () => {
  it('adds a route to each peer, ignores its own lease, re-points a peer whose PublicIP changed and deletes a removed one', async () => {
    const h = setup();
    const network = await h.register(V4);
    await h.run(network);
    const proxy = h.dataplane.current;

    await h.push(added(peer(2, '192.168.1.12'), peer(4, '192.168.1.14'), network.lease));
    expect(proxy.routes()).toEqual(['10.244.2.0/24 -> 192.168.1.12:8285', '10.244.4.0/24 -> 192.168.1.14:8285']);

    await h.push(added(peer(2, '192.168.1.22')));
    expect(proxy.calls.at(-1)).toBe('set 10.244.2.0/24 192.168.1.22:8285');

    await h.push(removed(peer(4, '192.168.1.14')));
    expect(proxy.calls.at(-1)).toBe('delete 10.244.4.0/24');
    expect(proxy.routes()).toEqual(['10.244.2.0/24 -> 192.168.1.22:8285']);

    // Peers live in the proxy's table, not in the kernel: the Network route into flannel0 is all there is.
    expect(h.kernel()).toEqual([`route 10.244.0.0/16 dev#${h.tun()?.index}`]);
    expect(h.dataplane.proxies).toHaveLength(1);
    expect(h.warnings()).toEqual([]);
  });

  it('skips a peer without an IPv4 PublicIP with one warning naming it, and serves the others', async () => {
    const h = setup();
    const network = await h.register(V4);
    await h.run(network);
    const v6Only: Lease = { subnet: net('10.244.5.0/24'), attrs: { publicIPv6: ip('2001:db8::15'), backendType: '' }, reservation: false };

    await h.push(added(peer(2, '192.168.1.12'), v6Only));

    expect(h.dataplane.current.routes()).toEqual(['10.244.2.0/24 -> 192.168.1.12:8285']);
    expect(h.warnings()).toEqual([expect.objectContaining({ peer: '10.244.5.0-24' })]);
    expect(h.warnings()[0]?.msg).toContain('lease 10.244.5.0/24 (public IP 2001:db8::15) has no IPv4 subnet and public IP');

    // Neither the same lease again nor a resync repeats the warning.
    await h.push(added(v6Only));
    await h.resync();
    expect(h.warnings()).toHaveLength(1);
    expect(h.dataplane.current.table.has('10.244.5.0/24')).toBe(false);
  });

  it('deletes the route of a peer that loses its PublicIP', async () => {
    const h = setup();
    const network = await h.register(V4);
    await h.run(network);
    await h.push(added(peer(2, '192.168.1.12')));

    await h.push(added({ subnet: net('10.244.2.0/24'), attrs: { backendType: '' }, reservation: false }));

    expect(h.dataplane.current.calls.at(-1)).toBe('delete 10.244.2.0/24');
    expect(h.dataplane.current.routes()).toEqual([]);
  });

  it("reports the proxy's drop counters while it runs", async () => {
    const h = setup();
    await h.register(V4);
    h.dataplane.current.dropped = { ...ZERO_DROPS, no_route: 3 };
    expect(h.drops()).toMatchObject({ no_route: 3, queue_full: 0 });
  });
});

describe('udp run: repair', () => {
  it('re-opens flannel0 deleted behind its back: old proxy stopped, new one started, every route replayed', async () => {
    const h = setup();
    const network = await h.register(V4);
    await h.run(network);
    await h.push(added(peer(2, '192.168.1.12'), peer(4, '192.168.1.14'), peer(6, '192.168.1.16')));
    await h.push(removed(peer(6, '192.168.1.16')));
    const [old] = h.dataplane.proxies;
    const oldIndex = h.tun()?.index;

    h.dp.deleteLinkBehindOurBack('flannel0');

    await vi.waitFor(() => {
      expect(h.dataplane.proxies).toHaveLength(2);
      expect(h.kernel()).toHaveLength(1);
    });
    const tun = h.tun() as LinkInfo;
    expect(old?.stopped).toBe(true);
    expect(h.dataplane.calls.slice(2)).toEqual(['stop fd 20', 'openTun flannel0', 'start flannel0 fd 21']);
    expect([...h.dataplane.openFds.keys()]).toEqual([21]);
    expect(tun.index).not.toBe(oldIndex);
    expect(tun).toMatchObject({ mtu: 1472, up: true });
    expect((await h.dp.addresses(tun.index)).map((a) => formatCidr(a.cidr))).toEqual(['10.244.3.0/32']);
    expect(h.kernel()).toEqual([`route 10.244.0.0/16 dev#${tun.index}`]);
    expect(h.dataplane.current.stopped).toBe(false);
    expect(h.dataplane.current.routes()).toEqual(['10.244.2.0/24 -> 192.168.1.12:8285', '10.244.4.0/24 -> 192.168.1.14:8285']);

    // The new proxy keeps following the leases.
    await h.push(added(peer(7, '192.168.1.17')));
    expect(h.dataplane.current.table.get('10.244.7.0/24')).toBe('192.168.1.17:8285');
  });

  it('restores the Network route deleted behind its back, keeping the device and the proxy', async () => {
    const h = setup();
    const network = await h.register(V4);
    await h.run(network);
    await h.push(added(peer(2, '192.168.1.12')));
    const want = h.kernel();

    h.dp.deleteEntryBehindOurBack('route 10.244.0.0/16');

    await vi.waitFor(() => expect(h.kernel()).toEqual(want));
    expect(h.dataplane.proxies).toHaveLength(1);
    expect(h.dataplane.current.routes()).toEqual(['10.244.2.0/24 -> 192.168.1.12:8285']);
    expect(h.warnings().map((w) => w.msg)).toContain('device entry removed behind our back; restoring it');
  });

  it("keeps the Network route, which lies outside the peers' scope, through a periodic resync", async () => {
    const h = setup();
    const network = await h.register(V4);
    await h.run(network);
    await h.push(added(peer(2, '192.168.1.12')));
    const want = h.kernel();

    await h.resync();

    expect(h.kernel()).toEqual(want);
    expect(h.dataplane.proxies).toHaveLength(1);
  });
});

describe('udp registerNetwork: the TUN descriptor when the start fails', () => {
  /** An error as the addon throws it: the errno's name as `code`. */
  const systemError = (message: string, code: string): Error => Object.assign(new Error(message), { code });

  it("fails with the proxy's own error (a taken port) and leaves no descriptor or device behind", async () => {
    const h = setup();
    h.dataplane.startFailure = systemError('bind UDP 192.168.1.11:8285: Address already in use', 'EADDRINUSE');

    const err: unknown = await h.register(V4).catch((e: unknown) => e);

    expect(err).toMatchObject({ code: 'EADDRINUSE', message: expect.stringContaining('192.168.1.11:8285') });
    expect(h.dataplane.openFds.size).toBe(0);
    expect(h.tun()).toBeUndefined();
  });

  it('fails with a proxy thread that could not start, naming it', async () => {
    const h = setup();
    h.dataplane.startFailure = systemError('start the peers-to-TUN thread: Resource temporarily unavailable', 'EAGAIN');

    await expect(h.register(V4)).rejects.toMatchObject({ code: 'EAGAIN', message: expect.stringContaining('peers-to-TUN thread') });
    expect(h.dataplane.openFds.size).toBe(0);
  });

  it.each([
    ['is not found right after it was opened', (dp: FakeDatapath) => vi.spyOn(dp, 'link').mockResolvedValue(undefined), 'vanished'],
    ['cannot be looked up', (dp: FakeDatapath) => vi.spyOn(dp, 'link').mockResolvedValueOnce(undefined).mockRejectedValueOnce(new Error('netlink: ENOBUFS')), 'ENOBUFS'],
  ])('closes a device that %s, before any proxy took it', async (_what, breakLookup, message) => {
    const h = setup();
    breakLookup(h.dp);

    await expect(h.register(V4)).rejects.toThrow(message);
    expect(h.dataplane.calls).toEqual(['openTun flannel0', 'closeTun fd 20']);
    expect(h.dataplane.openFds.size).toBe(0);
  });

  it.each([
    ['its MTU cannot be set', (dp: FakeDatapath) => vi.spyOn(dp, 'configureLink').mockRejectedValueOnce(new Error('configure link: EPERM')), 'EPERM'],
    ['its Network route cannot be added', (dp: FakeDatapath) => dp.failEntry('route 10.244.0.0/16', 'ENETDOWN'), 'ENETDOWN'],
  ])('stops the proxy, closing flannel0, when %s', async (_what, breakDevice, message) => {
    const h = setup();
    breakDevice(h.dp);

    await expect(h.register(V4)).rejects.toThrow(message);
    expect(h.dataplane.current.stopped).toBe(true);
    expect(h.dataplane.openFds.size).toBe(0);
    expect(h.tun()).toBeUndefined();
  });
});

describe('udp run: shutdown', () => {
  it('stops the proxy (closing flannel0) when run ends', async () => {
    const h = setup();
    const network = await h.register(V4);
    const r = await h.run(network);
    await h.push(added(peer(2, '192.168.1.12')));

    r.abort.abort();
    await r.done;

    expect(h.dataplane.current.stopped).toBe(true);
    expect(h.dataplane.calls.at(-1)).toBe('stop fd 20');
    expect(h.dataplane.openFds.size).toBe(0);
    await vi.waitFor(() => expect(h.tun()).toBeUndefined());
    expect(network.lease).toBeDefined();
    expect(h.drops()).toBeUndefined();
  });
});
