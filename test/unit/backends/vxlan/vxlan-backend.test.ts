import { memoryLog } from '../../../helpers/test-log.js';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { BackendDeps, Network } from '../../../../backends/backend.js';
import type { AddressInfo, DatapathEntry, LinkInfo, VxlanLinkSpec } from '../../../../backends/datapath/datapath.js';
import { describeEntry, entryIdentity } from '../../../../backends/datapath/entry-key.js';
import { createVxlanBackend } from '../../../../backends/vxlan/vxlan-backend.js';
import { randomVtepMac } from '../../../../backends/vxlan/vtep-mac.js';
import { parseNetworkConfig } from '../../../../flanneld/config/network-config.js';
import type { NetworkConfig } from '../../../../flanneld/config/network-config-types.js';
import { parseIp, type IpAddress } from '../../../../flanneld/ip/address.js';
import { formatCidr, parseCidr, type IpNet } from '../../../../flanneld/ip/cidr.js';
import type { ExternalInterface, HostView } from '../../../../flanneld/ip/external-interface.js';
import { encodeLeaseAttrs, type Lease, type LeaseEvent } from '../../../../flanneld/lease/lease.js';
import { FlannelError } from '../../../../flanneld/runtime/errors.js';
import { seededRandom } from '../../../../flanneld/runtime/random.js';
import type { LeaseRequest } from '../../../../flanneld/subnet/subnet-manager.js';
import { FakeDatapath } from '../../../helpers/fake-datapath.js';
import { FakeSubnetManager } from '../../../helpers/fake-subnet-manager.js';
import { ManualClock } from '../../../helpers/manual-clock.js';

const ip = (text: string): IpAddress => parseIp(text) as IpAddress;
const net = (text: string): IpNet => parseCidr(text) as IpNet;
const config = (json: string): NetworkConfig => parseNetworkConfig(json).config;

const SEED = 1795;
const RESYNC_MS = 60_000;
const PUBLIC = '192.168.1.11';
const PUBLIC_V6 = '2001:db8::11';
const STORED_MAC = '0e:aa:bb:cc:dd:ee';
const V4 = '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}';
const DUAL = '{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"vxlan"}}';

const addressText = (addrs: readonly AddressInfo[]): string[] => addrs.map((a) => formatCidr(a.cidr)).sort();
const described = (entries: readonly DatapathEntry[]): string[] => entries.map(describeEntry).sort();

function previousLease(attrs: Partial<Lease['attrs']>): Lease {
  return { subnet: net('10.244.3.0/24'), attrs: { publicIP: ip(PUBLIC), backendType: 'vxlan', ...attrs }, reservation: false };
}

function peer(n: number, publicIP: string, mac: string): Lease {
  return {
    subnet: net(`10.244.${n}.0/24`),
    attrs: { publicIP: ip(publicIP), backendType: 'vxlan', backendData: { VNI: 1, VtepMAC: mac } },
    reservation: false,
  };
}

const running: { abort: AbortController; done: Promise<unknown> }[] = [];

afterEach(async () => {
  for (const r of running.splice(0)) {
    r.abort.abort();
    await r.done;
  }
});

function setup(opts: { mtu?: number; connected?: readonly string[]; publicIP?: string } = {}) {
  const dp = new FakeDatapath();
  const eth0 = dp.addLink({ name: 'eth0', mtu: opts.mtu ?? 1500 });
  /** As chooseExternalInterface builds it: public addresses only for the enabled families. */
  const extIface = (cfg: NetworkConfig): ExternalInterface => ({
    name: 'eth0',
    index: eth0.index,
    mtu: opts.mtu ?? 1500,
    ifaceAddr: ip(PUBLIC),
    ifaceAddrV6: ip(PUBLIC_V6),
    ...(cfg.enableIPv4 ? { publicIP: ip(opts.publicIP ?? PUBLIC) } : {}),
    ...(cfg.enableIPv6 ? { publicIPv6: ip(PUBLIC_V6) } : {}),
  });
  let connected = (opts.connected ?? []).map(net);
  let connectedCalls = 0;
  const host: HostView = {
    interfaces: () => Promise.resolve([]),
    defaultRouteInterface: () => Promise.resolve('eth0'),
    routeTo: () => Promise.resolve(undefined),
    connectedNetworks: () => {
      connectedCalls++;
      return Promise.resolve(connected);
    },
  };
  const clock = new ManualClock();
  const subnets = new FakeSubnetManager();
  subnets.acquire.otherwise((request: LeaseRequest) => ({
    subnet: net('10.244.3.0/24'),
    ...(request.attrs.backendV6Data !== undefined ? { ipv6Subnet: net('fc00:0:0:3::/64') } : {}),
    attrs: request.attrs,
    reservation: false,
    expiresAt: clock.now() + 86_400_000,
  }));
  const { log, lines } = memoryLog();
  const deps = (cfg: NetworkConfig, datapath: FakeDatapath): BackendDeps => ({
    findPreviousLease: (publicIP, signal) => subnets.findPreviousLease(publicIP, signal),
    extIface: extIface(cfg),
    peerLeases: (_own, signal) => subnets.watchLeases(signal),
    acquireLease: (attrs, signal) => subnets.acquireLease({ attrs }, signal),
    datapath,
    host,
    clock,
    random: seededRandom(SEED),
    log,
    resyncMs: RESYNC_MS,
  });
  const register = (json: string, datapath: FakeDatapath = dp): Promise<Network> => {
    const cfg = config(json);
    return createVxlanBackend(deps(cfg, datapath)).registerNetwork(cfg, new AbortController().signal);
  };

  /** Starts `run` and waits until it follows the leases, the kernel's notices and the resync timer. */
  const run = async (network: Network): Promise<void> => {
    const abort = new AbortController();
    running.push({ abort, done: network.run(abort.signal) });
    await vi.waitFor(() => {
      expect(subnets.leaseWatchers).toBe(1);
      expect(dp.eventSubscribers).toBe(1);
      expect(clock.pending).toBe(1);
    });
  };
  const push = (events: readonly LeaseEvent[]): void => subnets.pushLeases(events);

  return {
    dp, eth0, subnets, lines, register, run, push,
    link: (name: string): LinkInfo | undefined => dp.links.find((l) => l.name === name),
    leaseAttrs: () => subnets.callsTo('acquireLease').map((c) => c.request.attrs),
    connectedCalls: () => connectedCalls,
    setConnected: (nets: readonly string[]) => {
      connected = nets.map(net);
    },
  };
}

/** A spec equal to what registerNetwork asks for with the V4 config, so the device is reused. */
function wantedSpec(eth0: number, mac: string): VxlanLinkSpec {
  return { name: 'flannel.1', vni: 1, port: 0, local: ip(PUBLIC), underlayIndex: eth0, mtu: 1450, learning: false, gbp: false, mac };
}

describe('vxlan registerNetwork: devices', () => {
  it('creates flannel.<VNI> with VNI, Port, GBP and Learning from the Backend block and MTU = underlay − 50', async () => {
    const h = setup();
    const network = await h.register('{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":4096,"Port":4789,"GBP":true,"Learning":true}}');

    const link = h.link('flannel.4096');
    expect(link).toMatchObject({
      kind: 'vxlan',
      mtu: 1450,
      up: true,
      vxlan: { vni: 4096, port: 4789, local: ip(PUBLIC), underlayIndex: h.eth0.index, learning: true, gbp: true },
    });
    expect(network.mtu).toBe(1450);
    expect(h.link('flannel-v6.4096')).toBeUndefined();
  });

  it('defaults to flannel.1, kernel port, no learning, no GBP', async () => {
    const h = setup({ mtu: 9001 });
    const network = await h.register(V4);
    expect(h.link('flannel.1')).toMatchObject({
      mtu: 8951,
      vxlan: { vni: 1, port: 0, learning: false, gbp: false },
    });
    expect(network.mtu).toBe(8951);
  });

  it('takes Backend.MTU instead of the underlay MTU, minus the overhead of each family', async () => {
    const h = setup({ mtu: 1500 });
    const network = await h.register(
      '{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"vxlan","MTU":9000}}',
    );
    expect(h.link('flannel.1')?.mtu).toBe(8950);
    expect(h.link('flannel-v6.1')?.mtu).toBe(8930);
    expect(network.mtu).toBe(8930);
  });

  it('creates flannel-v6.<VNI> over the IPv6 underlay with MTU − 70 when EnableIPv6, and reports the smaller MTU', async () => {
    const h = setup();
    const network = await h.register(DUAL);

    expect(h.link('flannel.1')).toMatchObject({ mtu: 1450, vxlan: { local: ip(PUBLIC) } });
    expect(h.link('flannel-v6.1')).toMatchObject({ mtu: 1430, kind: 'vxlan', vxlan: { vni: 1, local: ip(PUBLIC_V6), underlayIndex: h.eth0.index } });
    expect(network.mtu).toBe(1430);
    const v6 = h.link('flannel-v6.1') as LinkInfo;
    expect(addressText(await h.dp.addresses(v6.index))).toEqual(['fc00:0:0:3::/128']);
  });

  it('creates only flannel-v6.<VNI> on an IPv6-only network', async () => {
    const h = setup();
    const network = await h.register('{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"vxlan"}}');
    expect(h.link('flannel.1')).toBeUndefined();
    expect(h.link('flannel-v6.1')?.mtu).toBe(1430);
    expect(network.mtu).toBe(1430);
    expect(h.leaseAttrs()[0]).not.toHaveProperty('backendData');
    expect(h.leaseAttrs()[0]).toHaveProperty('backendV6Data');
  });

  it("refuses a device whose MAC differs from the wanted one, naming both MACs, as upstream does", async () => {
    class MacLosingDatapath extends FakeDatapath {
      override async ensureVxlan(spec: VxlanLinkSpec): Promise<LinkInfo> {
        return { ...(await super.ensureVxlan(spec)), mac: '02:de:ad:be:ef:00' };
      }
    }
    const h = setup();
    h.subnets.previousLease.then(previousLease({ backendData: { VNI: 1, VtepMAC: STORED_MAC } }));
    const dp = new MacLosingDatapath();
    dp.addLink({ name: 'eth0' });

    const err: unknown = await h.register(V4, dp).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(FlannelError);
    expect(err).toMatchObject({
      code: 'ERR_DEVICE',
      message: `flannel.1's mac address wanted: ${STORED_MAC}, but got: 02:de:ad:be:ef:00`,
    });
    expect(h.subnets.callsTo('acquireLease')).toEqual([]);
  });
});

describe('vxlan registerNetwork: VTEP MAC and lease', () => {
  it("reuses the VtepMAC of this node's previous lease", async () => {
    const h = setup();
    h.subnets.previousLease.then(
      previousLease({ backendData: { VNI: 1, VtepMAC: STORED_MAC.toUpperCase() }, backendV6Data: { VNI: 1, VtepMAC: '0e:66:66:66:66:66' } }),
    );
    // An existing device with another MAC loses to the stored one.
    await h.dp.ensureVxlan(wantedSpec(h.eth0.index, '0e:12:34:56:78:9a'));

    await h.register(DUAL);

    expect(h.subnets.callsTo('findPreviousLease')).toEqual([{ method: 'findPreviousLease', publicIP: ip(PUBLIC) }]);
    expect(h.link('flannel.1')?.mac).toBe(STORED_MAC);
    expect(h.link('flannel-v6.1')?.mac).toBe('0e:66:66:66:66:66');
    expect(h.leaseAttrs()[0]).toMatchObject({
      backendData: { VNI: 1, VtepMAC: STORED_MAC },
      backendV6Data: { VNI: 1, VtepMAC: '0e:66:66:66:66:66' },
    });
  });

  it('takes the MAC of an existing vxlan device when there is no previous lease', async () => {
    const h = setup();
    // Same name, other MTU: replaced, but with its MAC kept.
    await h.dp.ensureVxlan({ ...wantedSpec(h.eth0.index, '0e:12:34:56:78:9a'), mtu: 1400 });

    await h.register(V4);

    expect(h.link('flannel.1')).toMatchObject({ mac: '0e:12:34:56:78:9a', mtu: 1450 });
    expect(h.leaseAttrs()[0]?.backendData).toEqual({ VNI: 1, VtepMAC: '0e:12:34:56:78:9a' });
  });

  it.each([
    ['no previous lease and no device', async (_h: ReturnType<typeof setup>) => undefined],
    ['the previous lease lookup fails', async (h: ReturnType<typeof setup>) => void h.subnets.previousLease.then(new Error('etcd unavailable'))],
    ['a previous lease without BackendData', async (h: ReturnType<typeof setup>) => void h.subnets.previousLease.then(previousLease({}))],
    ['a non-vxlan link of that name', async (h: ReturnType<typeof setup>) => void h.dp.addLink({ name: 'flannel.1', kind: 'dummy', mac: '0e:12:34:56:78:9a' })],
  ])('draws a random locally administered MAC with %s', async (_name, arrange) => {
    const h = setup();
    await arrange(h);

    await h.register(V4);

    const expected = randomVtepMac(seededRandom(SEED));
    expect(h.link('flannel.1')?.mac).toBe(expected);
    expect(parseInt(expected.slice(0, 2), 16) & 0x03).toBe(0x02);
    expect(h.dp.links.filter((l) => l.name === 'flannel.1')).toHaveLength(1);
  });

  it("publishes exactly upstream's lease attrs: BackendType vxlan, BackendData {VNI, VtepMAC}", async () => {
    const h = setup();
    h.subnets.previousLease.then(previousLease({ backendData: { VNI: 1, VtepMAC: STORED_MAC } }));

    const network = await h.register('{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":7}}');

    const attrs = h.leaseAttrs();
    expect(attrs).toEqual([{ publicIP: ip(PUBLIC), backendType: 'vxlan', backendData: { VNI: 7, VtepMAC: STORED_MAC } }]);
    expect(encodeLeaseAttrs(attrs[0] as Lease['attrs'])).toBe(
      `{"PublicIP":"${PUBLIC}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":7,"VtepMAC":"${STORED_MAC}"}}`,
    );
    expect(network.lease.attrs).toEqual(attrs[0]);
    expect(network.lease.subnet).toEqual(net('10.244.3.0/24'));
  });

  it('publishes the public IP, not the interface address, and BackendV6Data for the v6 device', async () => {
    const h = setup({ publicIP: '203.0.113.9' });
    await h.register(DUAL);
    const attrs = h.leaseAttrs()[0] as Lease['attrs'];
    const macs = [h.link('flannel.1')?.mac, h.link('flannel-v6.1')?.mac];
    expect(encodeLeaseAttrs(attrs)).toBe(
      `{"PublicIP":"203.0.113.9","PublicIPv6":"${PUBLIC_V6}","BackendType":"vxlan",` +
        `"BackendData":{"VNI":1,"VtepMAC":"${macs[0]}"},"BackendV6Data":{"VNI":1,"VtepMAC":"${macs[1]}"}}`,
    );
    // The device still sends from the interface address.
    expect(h.link('flannel.1')?.vxlan?.local).toEqual(ip(PUBLIC));
    expect(macs[0]).not.toBe(macs[1]);
  });

  it("puts the lease's network address /32 on the device and removes stale addresses inside the Network only", async () => {
    const h = setup();
    h.subnets.previousLease.then(previousLease({ backendData: { VNI: 1, VtepMAC: STORED_MAC } }));
    const existing = await h.dp.ensureVxlan(wantedSpec(h.eth0.index, STORED_MAC));
    const addr = (cidr: string, address: string): AddressInfo => ({ linkIndex: existing.index, cidr: net(cidr), address: ip(address) });
    h.dp.addAddress(addr('10.244.9.0/32', '10.244.9.0')); // an earlier lease's
    h.dp.addAddress(addr('10.244.3.0/24', '10.244.3.1')); // inside the Network, wrong shape
    h.dp.addAddress(addr('192.168.100.0/24', '192.168.100.1')); // not ours

    await h.register(V4);

    expect(h.dp.vxlanCreations).toBe(1); // reused, not re-created
    expect(h.link('flannel.1')?.index).toBe(existing.index);
    expect(addressText(await h.dp.addresses(existing.index))).toEqual(['10.244.3.0/32', '192.168.100.0/24']);
  });
});

describe('vxlan run', () => {
  it('with DirectRouting, routes peers on connected networks directly and encapsulates the others', async () => {
    const h = setup({ connected: ['192.168.1.0/24'] });
    const network = await h.register('{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","DirectRouting":true}}');
    await h.run(network);
    const dev = (h.link('flannel.1') as LinkInfo).index;

    h.push([
      { type: 'added', lease: peer(2, '192.168.1.12', '0e:00:00:00:00:02') },
      { type: 'added', lease: peer(4, '10.9.0.7', '0e:00:00:00:00:04') },
      { type: 'added', lease: network.lease },
    ]);

    await vi.waitFor(() =>
      expect(described(h.dp.entries)).toEqual(
        [
          'route 10.244.2.0/24 via 192.168.1.12',
          `neigh 10.244.4.0 lladdr 0e:00:00:00:00:04 dev#${dev}`,
          `fdb 0e:00:00:00:00:04 dst 10.9.0.7 dev#${dev}`,
          `route 10.244.4.0/24 via 10.244.4.0 dev#${dev} onlink`,
        ].sort(),
      ),
    );
    expect(h.dp.entry('route 10.244.2.0/24')).toEqual({ kind: 'route', dst: net('10.244.2.0/24'), via: ip('192.168.1.12') });
  });

  it('without DirectRouting, encapsulates every peer and never asks for connected networks', async () => {
    const h = setup({ connected: ['192.168.1.0/24'] });
    const network = await h.register(V4);
    await h.run(network);
    const dev = (h.link('flannel.1') as LinkInfo).index;

    h.push([{ type: 'added', lease: peer(2, '192.168.1.12', '0e:00:00:00:00:02') }]);

    await vi.waitFor(() =>
      expect(described(h.dp.entries)).toEqual(
        [
          `neigh 10.244.2.0 lladdr 0e:00:00:00:00:02 dev#${dev}`,
          `fdb 0e:00:00:00:00:02 dst 192.168.1.12 dev#${dev}`,
          `route 10.244.2.0/24 via 10.244.2.0 dev#${dev} onlink`,
        ].sort(),
      ),
    );
    expect(h.connectedCalls()).toBe(0);
  });

  it('re-creates a deleted device with the same MAC, MTU and address, and replays the peers on it', async () => {
    const h = setup();
    const network = await h.register(V4);
    const before = h.link('flannel.1') as LinkInfo;
    await h.run(network);
    h.push([{ type: 'added', lease: peer(2, '10.9.0.2', '0e:00:00:00:00:02') }]);
    await vi.waitFor(() => expect(h.dp.entries).toHaveLength(3));

    h.dp.deleteLinkBehindOurBack('flannel.1');

    await vi.waitFor(() => expect(h.dp.entries).toHaveLength(3));
    const after = h.link('flannel.1') as LinkInfo;
    expect(after.index).not.toBe(before.index);
    expect({ ...after, index: before.index }).toEqual(before);
    expect(addressText(await h.dp.addresses(after.index))).toEqual(['10.244.3.0/32']);
    expect(h.dp.entries.every((e) => e.linkIndex === after.index)).toBe(true);
  });

  it('keeps routes in the IPv6Network alone when IPv6 is not enabled', async () => {
    const h = setup();
    const network = await h.register('{"Network":"10.244.0.0/16","IPv6Network":"fc00::/48","Backend":{"Type":"vxlan"}}');
    const foreign: DatapathEntry = { kind: 'route', dst: net('fc00:0:0:5::/64'), via: ip('fe80::5'), linkIndex: h.eth0.index };
    h.dp.put(foreign);
    await h.run(network);

    h.push([{ type: 'added', lease: peer(2, '10.9.0.2', '0e:00:00:00:00:02') }]);
    // One batch carries the deletes before the replaces, so once the peer's route is in, the diff is done.
    await vi.waitFor(() => expect(h.dp.entry('route 10.244.2.0/24')).toBeDefined());

    expect(h.dp.entry(entryIdentity(foreign))).toEqual(foreign);
  });
});
