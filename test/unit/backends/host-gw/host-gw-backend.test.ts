import { afterEach, describe, expect, it, vi } from 'vitest';
import { backendHarness, type BackendHarness } from '../../../helpers/backend-harness.js';
import type { Network } from '../../../../backends/backend.js';
import type { DatapathEntry } from '../../../../backends/datapath/datapath.js';
import { describeEntry } from '../../../../backends/datapath/entry-key.js';
import { createHostGwBackend } from '../../../../backends/host-gw/host-gw-backend.js';
import { parseNetworkConfig } from '../../../../flanneld/config/network-config.js';
import type { NetworkConfig } from '../../../../flanneld/config/network-config-types.js';
import { parseIp, type IpAddress } from '../../../../flanneld/ip/address.js';
import { parseCidr, type IpNet } from '../../../../flanneld/ip/cidr.js';
import type { ExternalInterface } from '../../../../flanneld/ip/external-interface.js';
import { encodeLeaseAttrs, type Lease, type LeaseEvent } from '../../../../flanneld/lease/lease.js';
import { FlannelError } from '../../../../flanneld/runtime/errors.js';
import { seededRandom } from '../../../../flanneld/runtime/random.js';

const ip = (text: string): IpAddress => parseIp(text) as IpAddress;
const net = (text: string): IpNet => parseCidr(text) as IpNet;
const config = (json: string): NetworkConfig => parseNetworkConfig(json).config;

const RESYNC_MS = 60_000;
const WARN = 40;
const IFACE_IP = '192.168.1.11';
const IFACE_IP6 = '2001:db8::11';
const V4 = '{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}';
const DUAL = '{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"host-gw"}}';
const NAT_MESSAGE =
  "your PublicIP differs from interface IP, meaning that probably you're on a NAT, which is not supported by host-gw backend";

function peer(n: number, publicIP: string, publicIPv6?: string): Lease {
  return {
    subnet: net(`10.244.${n}.0/24`),
    ...(publicIPv6 ? { ipv6Subnet: net(`fc00:0:0:${n}::/64`) } : {}),
    attrs: { publicIP: ip(publicIP), ...(publicIPv6 ? { publicIPv6: ip(publicIPv6) } : {}), backendType: 'host-gw' },
    reservation: false,
  };
}

const added = (...leases: Lease[]): LeaseEvent[] => leases.map((lease) => ({ type: 'added', lease }));
const described = (entries: readonly DatapathEntry[]): string[] => entries.map(describeEntry).sort();

const harnesses: BackendHarness[] = [];
afterEach(async () => {
  for (const h of harnesses.splice(0)) await h.stopAll();
});

interface SetupOptions {
  readonly mtu?: number;
  readonly connected?: readonly string[];
  readonly publicIP?: string;
  readonly publicIPv6?: string;
}

function setup(opts: SetupOptions = {}) {
  const harness = backendHarness({
    ...(opts.mtu !== undefined ? { mtu: opts.mtu } : {}),
    connected: opts.connected ?? ['192.168.1.0/24'],
    subnet: '10.244.3.0/24',
    ipv6Subnet: 'fc00:0:0:3::/64',
    resyncMs: RESYNC_MS,
  });
  harnesses.push(harness);
  const { dp, eth0, subnets, lines, progress } = harness;
  /** As chooseExternalInterface builds it: public addresses (--public-ip or the interface's) for enabled families. */
  const extIface = (cfg: NetworkConfig): ExternalInterface => ({
    name: 'eth0',
    index: eth0.index,
    mtu: harness.mtu,
    ifaceAddr: ip(IFACE_IP),
    ifaceAddrV6: ip(IFACE_IP6),
    ...(cfg.enableIPv4 ? { publicIP: ip(opts.publicIP ?? IFACE_IP) } : {}),
    ...(cfg.enableIPv6 ? { publicIPv6: ip(opts.publicIPv6 ?? IFACE_IP6) } : {}),
  });

  const register = (json: string): Promise<Network> => {
    const cfg = config(json);
    return createHostGwBackend({ ...harness.deps(extIface(cfg)), random: seededRandom(3) }).registerNetwork(cfg, new AbortController().signal);
  };

  const run = async (network: Network): Promise<void> => {
    await harness.run(network, { kernelEvents: false });
  };

  const { push, resync } = progress;

  return {
    dp, eth0, subnets, lines, register, run, push, resync,
    kernel: () => described(dp.entries),
    warnings: () => lines.filter((l) => l.level === WARN),
  };
}

describe('host-gw registerNetwork', () => {
  it.each([
    ['IPv4', V4, { publicIP: '203.0.113.9' }],
    ['IPv6', DUAL, { publicIPv6: '2001:db8:ffff::9' }],
  ] as const)('refuses an %s public IP that differs from the interface IP, with upstream\'s message', async (_family, json, opts) => {
    const h = setup(opts);

    const err: unknown = await h.register(json).catch((e: unknown) => e);

    expect(err).toBeInstanceOf(FlannelError);
    expect(err).toMatchObject({ code: 'ERR_CONFIG_INVALID', message: NAT_MESSAGE });
    expect(h.subnets.callsTo('acquireLease')).toEqual([]);
  });

  it.each([1500, 9001])('reports the interface MTU (%i) unchanged', async (mtu) => {
    const h = setup({ mtu });
    const network = await h.register(V4);
    expect(network.mtu).toBe(mtu);
    expect(h.dp.links.map((l) => l.name)).toEqual(['eth0']); // no device of its own
  });

  it('publishes BackendType host-gw and the public addresses, without BackendData', async () => {
    const h = setup();
    await h.register(V4);
    await h.register(DUAL);
    const [v4, dual] = h.subnets.callsTo('acquireLease').map((c) => encodeLeaseAttrs(c.request.attrs));
    expect(v4).toBe(`{"PublicIP":"${IFACE_IP}","PublicIPv6":null,"BackendType":"host-gw"}`);
    expect(dual).toBe(`{"PublicIP":"${IFACE_IP}","PublicIPv6":"${IFACE_IP6}","BackendType":"host-gw"}`);
  });
});

describe('host-gw run', () => {
  it("routes each peer's subnet via its PublicIP on the external interface", async () => {
    const h = setup();
    const network = await h.register(V4);
    await h.run(network);

    await h.push(added(peer(2, '192.168.1.12'), peer(4, '192.168.1.14'), network.lease));

    expect(h.dp.entries).toEqual([
      { kind: 'route', dst: net('10.244.2.0/24'), via: ip('192.168.1.12'), linkIndex: h.eth0.index },
      { kind: 'route', dst: net('10.244.4.0/24'), via: ip('192.168.1.14'), linkIndex: h.eth0.index },
    ]);
    expect(h.warnings()).toEqual([]);

    await h.push([{ type: 'removed', lease: peer(2, '192.168.1.12') }]);
    expect(h.kernel()).toEqual([`route 10.244.4.0/24 via 192.168.1.14 dev#${h.eth0.index}`]);
  });

  it('routes both families of a dual-stack peer', async () => {
    const h = setup({ connected: ['192.168.1.0/24', '2001:db8::/64'] });
    const network = await h.register(DUAL);
    await h.run(network);

    await h.push(added(peer(2, '192.168.1.12', '2001:db8::12')));

    expect(h.kernel()).toEqual(
      [`route 10.244.2.0/24 via 192.168.1.12 dev#${h.eth0.index}`, `route fc00:0:0:2::/64 via 2001:db8::12 dev#${h.eth0.index}`].sort(),
    );
  });

  it('skips a peer that is not on a connected network with one warning naming it, and programs the others', async () => {
    const h = setup({ connected: ['192.168.1.0/24'] });
    const network = await h.register(V4);
    await h.run(network);
    const far = peer(5, '10.9.0.7');

    await h.push(added(peer(2, '192.168.1.12'), far, peer(4, '192.168.1.14')));

    expect(h.kernel()).toEqual(
      [`route 10.244.2.0/24 via 192.168.1.12 dev#${h.eth0.index}`, `route 10.244.4.0/24 via 192.168.1.14 dev#${h.eth0.index}`].sort(),
    );
    expect(h.warnings()).toEqual([expect.objectContaining({ peer: '10.244.5.0-24' })]);
    expect(h.warnings()[0]?.msg).toContain('host-gw peer 10.9.0.7 is not on a directly connected network (this node has 192.168.1.0/24)');

    // Neither a resync nor the same lease again repeats the warning.
    await h.resync();
    await h.push(added(far));
    expect(h.warnings()).toHaveLength(1);
    expect(h.dp.entry('route 10.244.5.0/24')).toBeUndefined();
  });

  it('ignores a peer of another backend type with a warning', async () => {
    const h = setup();
    const network = await h.register(V4);
    await h.run(network);
    const vxlanPeer: Lease = { ...peer(6, '192.168.1.16'), attrs: { publicIP: ip('192.168.1.16'), backendType: 'vxlan' } };

    await h.push(added(vxlanPeer, peer(2, '192.168.1.12')));

    expect(h.kernel()).toEqual([`route 10.244.2.0/24 via 192.168.1.12 dev#${h.eth0.index}`]);
    expect(h.warnings()).toHaveLength(1);
    expect(h.warnings()[0]?.msg).toContain('ignoring non-host-gw lease 10.244.6.0/24');
  });

  it('restores a route deleted behind our back', async () => {
    const h = setup();
    const network = await h.register(V4);
    await h.run(network);
    await h.push(added(peer(2, '192.168.1.12')));
    const want = h.kernel();

    h.dp.deleteEntryBehindOurBack('route 10.244.2.0/24');

    await vi.waitFor(() => expect(h.kernel()).toEqual(want));
  });
});
