import { describe, expect, it } from 'vitest';
import { formatIp, parseIp, type Family, type IpAddress } from '../../../flanneld/ip/address.js';
import {
  chooseExternalInterface,
  type ExternalInterface,
  type ExternalInterfaceOptions,
  type HostInterface,
  type HostView,
} from '../../../flanneld/ip/external-interface.js';
import { FlannelError, type ErrorCode } from '../../../flanneld/runtime/errors.js';

const ip = (text: string): IpAddress => {
  const a = parseIp(text);
  if (!a) throw new Error(`bad test address ${text}`);
  return a;
};

const iface = (name: string, index: number, addrs: string[], mtu = 1500): HostInterface => ({
  name,
  index,
  mtu,
  addrs: addrs.map(ip),
});

interface FakeHost extends HostView {
  readonly routeQueries: string[];
}

/** A HostView over fixed interfaces, default routes per family and a routeTo table keyed by destination text. */
function fakeHost(
  interfaces: HostInterface[],
  defaults: { v4?: string; v6?: string } = {},
  routes: Record<string, { name: string; src?: string }> = {},
): FakeHost {
  const routeQueries: string[] = [];
  return {
    routeQueries,
    interfaces: () => Promise.resolve(interfaces),
    defaultRouteInterface: (family: Family) => Promise.resolve(family === 4 ? defaults.v4 : defaults.v6),
    routeTo(dst) {
      const key = formatIp(dst);
      routeQueries.push(key);
      const route = routes[key];
      if (!route) return Promise.resolve(undefined);
      return Promise.resolve({ name: route.name, ...(route.src ? { src: ip(route.src) } : {}) });
    },
    connectedNetworks: () => Promise.resolve([]),
  };
}

const LO = iface('lo', 1, ['127.0.0.1', '::1'], 65536);
const ETH0 = iface('eth0', 2, ['10.0.0.5', 'fe80::5', '2001:db8::5']);
const ETH1 = iface('eth1', 3, ['192.168.1.7', '10.1.0.7', 'fd00::7'], 9000);
const ENS10 = iface('ens10', 4, ['172.16.0.4']);
const HOST_IFACES = [LO, ETH0, ETH1, ENS10];

const v4Only = (o: Partial<ExternalInterfaceOptions> = {}): ExternalInterfaceOptions => ({
  iface: [],
  ifaceRegex: [],
  enableIPv4: true,
  enableIPv6: false,
  ...o,
});

/** The result as plain text, so table rows read like flanneld's log line. */
function show(ext: ExternalInterface): Record<string, string | number> {
  const out: Record<string, string | number> = { name: ext.name, index: ext.index, mtu: ext.mtu };
  if (ext.ifaceAddr) out['ifaceAddr'] = formatIp(ext.ifaceAddr);
  if (ext.ifaceAddrV6) out['ifaceAddrV6'] = formatIp(ext.ifaceAddrV6);
  if (ext.publicIP) out['publicIP'] = formatIp(ext.publicIP);
  if (ext.publicIPv6) out['publicIPv6'] = formatIp(ext.publicIPv6);
  return out;
}

async function chosenName(host: HostView, opts: ExternalInterfaceOptions): Promise<string> {
  return (await chooseExternalInterface(host, opts)).name;
}

async function failure(host: HostView, opts: ExternalInterfaceOptions, code: ErrorCode = 'ERR_INTERFACE'): Promise<FlannelError> {
  const err: unknown = await chooseExternalInterface(host, opts).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(FlannelError);
  expect((err as FlannelError).code).toBe(code);
  return err as FlannelError;
}

describe('chooseExternalInterface', () => {
  describe('--iface', () => {
    it.each<[string, string[], string]>([
      ['a name', ['eth1'], 'eth1'],
      ['an IP address', ['10.1.0.7'], 'eth1'],
      ['an IPv6 address', ['2001:db8::5'], 'eth0'],
      ['the first of several that matches', ['eth9', '172.16.0.4', 'eth0'], 'ens10'],
      ['the entries in the order given', ['eth0', 'eth1'], 'eth0'],
      ['the entries in the order given (reversed)', ['eth1', 'eth0'], 'eth1'],
    ])('picks by %s', async (_what, entries, expected) => {
      const host = fakeHost(HOST_IFACES, { v4: 'eth0' });
      expect(await chosenName(host, v4Only({ iface: entries }))).toBe(expected);
    });

    it('is tried before --iface-regex and --iface-can-reach', async () => {
      const host = fakeHost(HOST_IFACES, {}, { '8.8.8.8': { name: 'eth0' } });
      const opts = v4Only({ iface: ['ens10'], ifaceRegex: ['^eth'], ifaceCanReach: ip('8.8.8.8') });
      expect(await chosenName(host, opts)).toBe('ens10');
      expect(host.routeQueries).toEqual([]);
    });

    it('falls through to --iface-regex when no entry matches', async () => {
      const host = fakeHost(HOST_IFACES);
      expect(await chosenName(host, v4Only({ iface: ['eth9'], ifaceRegex: ['^ens'] }))).toBe('ens10');
    });
  });

  describe('--iface-regex', () => {
    it('matches addresses before names, whatever the interface order', async () => {
      // "10" is in the name ens10 (listed first here) and in eth0's address 10.0.0.5.
      const host = fakeHost([ENS10, ETH0]);
      expect(await chosenName(host, v4Only({ ifaceRegex: ['10'] }))).toBe('eth0');
    });

    it('matches names when no address matches', async () => {
      const host = fakeHost(HOST_IFACES);
      expect(await chosenName(host, v4Only({ ifaceRegex: ['^eth1$'] }))).toBe('eth1');
    });

    it('tries the patterns in the order given', async () => {
      const host = fakeHost(HOST_IFACES);
      expect(await chosenName(host, v4Only({ ifaceRegex: ['^wlan', '^192\\.168\\.', '^eth0$'] }))).toBe('eth1');
    });

    it('matches IPv6 addresses in their compressed form', async () => {
      const host = fakeHost(HOST_IFACES);
      expect(await chosenName(host, v4Only({ ifaceRegex: ['^fd00::'] }))).toBe('eth1');
    });
  });

  describe('--iface-can-reach', () => {
    it('uses the interface and source address of the route to the destination', async () => {
      const host = fakeHost(HOST_IFACES, { v4: 'eth0' }, { '10.1.2.3': { name: 'eth1', src: '10.1.0.7' } });
      const ext = await chooseExternalInterface(host, v4Only({ ifaceCanReach: ip('10.1.2.3') }));
      expect(show(ext)).toEqual({
        name: 'eth1',
        index: 3,
        mtu: 9000,
        ifaceAddr: '10.1.0.7',
        ifaceAddrV6: 'fd00::7',
        publicIP: '10.1.0.7',
      });
      expect(host.routeQueries).toEqual(['10.1.2.3']);
    });

    it('falls back to the preferred address when the route names no source', async () => {
      const host = fakeHost(HOST_IFACES, {}, { '10.1.2.3': { name: 'eth1' } });
      const ext = await chooseExternalInterface(host, v4Only({ ifaceCanReach: ip('10.1.2.3') }));
      expect(ext.ifaceAddr && formatIp(ext.ifaceAddr)).toBe('192.168.1.7');
    });

    it('is only asked after --iface and --iface-regex found nothing', async () => {
      const host = fakeHost(HOST_IFACES, {}, { '10.1.2.3': { name: 'eth1' } });
      const opts = v4Only({ iface: ['eth9'], ifaceRegex: ['^nomatch$'], ifaceCanReach: ip('10.1.2.3') });
      expect(await chosenName(host, opts)).toBe('eth1');
      expect(host.routeQueries).toEqual(['10.1.2.3']);
    });

    it('fails when there is no route to the destination', async () => {
      const host = fakeHost(HOST_IFACES, { v4: 'eth0' });
      const err = await failure(host, v4Only({ ifaceCanReach: ip('203.0.113.1') }));
      expect(err.message).toContain('--iface-can-reach=203.0.113.1');
    });
  });

  it('names everything it tried, and the interfaces it saw, when nothing matches', async () => {
    const host = fakeHost(HOST_IFACES, { v4: 'eth0' });
    const err = await failure(
      host,
      v4Only({ iface: ['eth9', '10.9.9.9'], ifaceRegex: ['^wl'], ifaceCanReach: ip('198.51.100.1') }),
    );
    expect(err.message).toContain(
      'tried --iface=eth9, --iface=10.9.9.9, --iface-regex=^wl, --iface-can-reach=198.51.100.1',
    );
    expect(err.message).toContain('interfaces: lo, eth0, eth1, ens10');
  });

  it('does not fall back to the default route when an explicit choice fails', async () => {
    const host = fakeHost(HOST_IFACES, { v4: 'eth0' });
    await failure(host, v4Only({ iface: ['eth9'] }));
  });

  describe('--public-ip', () => {
    it('selects the interface that owns it when no --iface is given', async () => {
      const host = fakeHost(HOST_IFACES, { v4: 'eth0' });
      const ext = await chooseExternalInterface(host, v4Only({ publicIP: ip('10.1.0.7') }));
      expect(show(ext)).toEqual({
        name: 'eth1',
        index: 3,
        mtu: 9000,
        ifaceAddr: '10.1.0.7',
        ifaceAddrV6: 'fd00::7',
        publicIP: '10.1.0.7',
      });
    });

    it('uses the given --public-ipv6 as the local address when the interface has several (upstream, IPv6-only, sends from another)', async () => {
      const multi = iface('eth2', 5, ['2001:db8:9::1', 'fe80::9', '2001:db8:9::2']);
      const host = fakeHost([LO, multi], { v6: 'eth2' });
      const ext = await chooseExternalInterface(host, v4Only({ enableIPv4: false, enableIPv6: true, publicIPv6: ip('2001:db8:9::2') }));
      expect(show(ext)).toMatchObject({ name: 'eth2', ifaceAddrV6: '2001:db8:9::2', publicIPv6: '2001:db8:9::2' });
      const dual = await chooseExternalInterface(fakeHost([LO, iface('eth2', 5, ['192.0.2.7', '2001:db8:9::1', '2001:db8:9::2'])], { v4: 'eth2', v6: 'eth2' }), v4Only({ iface: ['eth2'], enableIPv6: true, publicIPv6: ip('2001:db8:9::2') }));
      expect(show(dual)).toMatchObject({ ifaceAddr: '192.0.2.7', ifaceAddrV6: '2001:db8:9::2', publicIPv6: '2001:db8:9::2' });
    });

    it('takes an address given to --iface as that family\'s local address', async () => {
      const host = fakeHost([LO, iface('eth2', 5, ['192.0.2.7', '192.0.2.8', '2001:db8:9::1', '2001:db8:9::2'])]);
      const v6 = await chooseExternalInterface(host, v4Only({ iface: ['2001:db8:9::2'], enableIPv6: true }));
      expect(show(v6)).toMatchObject({ name: 'eth2', ifaceAddr: '192.0.2.7', ifaceAddrV6: '2001:db8:9::2', publicIPv6: '2001:db8:9::2' });
      const v4 = await chooseExternalInterface(host, v4Only({ iface: ['192.0.2.8'], enableIPv6: true }));
      expect(show(v4)).toMatchObject({ ifaceAddr: '192.0.2.8', ifaceAddrV6: '2001:db8:9::1' });
    });

    it('names --public-ipv6 when no interface holds that address', async () => {
      const err = await failure(fakeHost(HOST_IFACES, { v6: 'eth0' }), v4Only({ enableIPv4: false, enableIPv6: true, publicIPv6: ip('2001:db8:ff::1') }));
      expect(err.message).toContain('2001:db8:ff::1 given by --public-ipv6');
    });

    it('selects by --public-ipv6 on an IPv6-only network', async () => {
      const host = fakeHost(HOST_IFACES, { v6: 'eth0' });
      const opts = v4Only({ enableIPv4: false, enableIPv6: true, publicIPv6: ip('fd00::7') });
      const ext = await chooseExternalInterface(host, opts);
      expect(show(ext)).toMatchObject({ name: 'eth1', ifaceAddrV6: 'fd00::7', publicIPv6: 'fd00::7' });
      expect(ext.publicIP).toBeUndefined();
    });

    it('fails, naming the address, when no interface owns it', async () => {
      const host = fakeHost(HOST_IFACES, { v4: 'eth0' });
      const err = await failure(host, v4Only({ publicIP: ip('203.0.113.9') }));
      expect(err.message).toContain('203.0.113.9');
      expect(err.message).toContain('--public-ip');
    });

    it('overrides the advertised address but not the interface address (NAT)', async () => {
      const host = fakeHost(HOST_IFACES, { v4: 'eth0' });
      const ext = await chooseExternalInterface(host, v4Only({ iface: ['eth0'], publicIP: ip('203.0.113.9') }));
      expect(show(ext)).toMatchObject({ name: 'eth0', ifaceAddr: '10.0.0.5', publicIP: '203.0.113.9' });
    });
  });

  describe('default route', () => {
    it('uses the IPv4 default-route interface and advertises its address', async () => {
      const host = fakeHost(HOST_IFACES, { v4: 'eth0', v6: 'eth1' });
      const ext = await chooseExternalInterface(host, v4Only());
      expect(show(ext)).toEqual({
        name: 'eth0',
        index: 2,
        mtu: 1500,
        ifaceAddr: '10.0.0.5',
        ifaceAddrV6: '2001:db8::5',
        publicIP: '10.0.0.5',
      });
    });

    it('uses the IPv6 default route on an IPv6-only network', async () => {
      const host = fakeHost(HOST_IFACES, { v6: 'eth1' });
      const ext = await chooseExternalInterface(host, v4Only({ enableIPv4: false, enableIPv6: true }));
      expect(show(ext)).toMatchObject({ name: 'eth1', publicIPv6: 'fd00::7' });
      expect(ext.publicIP).toBeUndefined();
    });

    it('accepts dual stack when both default routes use one interface', async () => {
      const host = fakeHost(HOST_IFACES, { v4: 'eth0', v6: 'eth0' });
      const ext = await chooseExternalInterface(host, v4Only({ enableIPv6: true }));
      expect(show(ext)).toMatchObject({ name: 'eth0', publicIP: '10.0.0.5', publicIPv6: '2001:db8::5' });
    });

    it.each<[string, { v4?: string; v6?: string }, string]>([
      ['on different interfaces', { v4: 'eth0', v6: 'eth1' }, '(IPv4: eth0, IPv6: eth1)'],
      ['with only an IPv4 default route', { v4: 'eth0' }, '(IPv4: eth0, IPv6: none)'],
    ])('rejects dual stack with the default routes %s', async (_what, defaults, detail) => {
      const err = await failure(fakeHost(HOST_IFACES, defaults), v4Only({ enableIPv6: true }));
      expect(err.message).toContain(detail);
      expect(err.message).toContain('--iface');
    });

    it('fails without a default route, suggesting the flags', async () => {
      const err = await failure(fakeHost(HOST_IFACES), v4Only());
      expect(err.message).toContain('no default route');
      expect(err.message).toContain('--iface');
    });

    it('fails when the default route names an interface it cannot see', async () => {
      await failure(fakeHost(HOST_IFACES, { v4: 'tun0' }), v4Only());
    });
  });

  describe('addresses', () => {
    it.each<[string, string[], string | undefined, string | undefined]>([
      ['global IPv6 over link-local, whatever the order', ['10.0.0.1', 'fe80::1', '2001:db8::1'], '10.0.0.1', '2001:db8::1'],
      ['global IPv4 over link-local', ['169.254.3.3', '10.0.0.1'], '10.0.0.1', undefined],
      ['link-local when nothing else is there', ['169.254.3.3', 'fe80::1'], '169.254.3.3', 'fe80::1'],
      ['the first global address of several', ['10.0.0.1', '10.0.0.2'], '10.0.0.1', undefined],
      ['no loopback address', ['127.0.0.2', '10.0.0.1', '::1'], '10.0.0.1', undefined],
    ])('prefers %s', async (_what, addrs, v4, v6) => {
      const host = fakeHost([iface('eth0', 2, addrs)]);
      const ext = await chooseExternalInterface(host, v4Only({ iface: ['eth0'] }));
      expect(ext.ifaceAddr && formatIp(ext.ifaceAddr)).toBe(v4);
      expect(ext.ifaceAddrV6 && formatIp(ext.ifaceAddrV6)).toBe(v6);
      expect(ext.publicIP && formatIp(ext.publicIP)).toBe(v4);
    });

    it('fails when the interface has no IPv4 address and no --public-ip is given', async () => {
      const host = fakeHost([iface('eth0', 2, ['2001:db8::1'])]);
      const err = await failure(host, v4Only({ iface: ['eth0'] }), 'ERR_NO_ADDRESS');
      expect(err.message).toBe('interface eth0 has no IPv4 address');
    });

    it('accepts an interface without IPv4 when --public-ip supplies the advertised address', async () => {
      const host = fakeHost([iface('eth0', 2, ['2001:db8::1'])]);
      const ext = await chooseExternalInterface(host, v4Only({ iface: ['eth0'], publicIP: ip('203.0.113.9') }));
      expect(show(ext)).toEqual({
        name: 'eth0',
        index: 2,
        mtu: 1500,
        ifaceAddrV6: '2001:db8::1',
        publicIP: '203.0.113.9',
      });
    });

    it('fails on a dual-stack network when the interface has no IPv6 address', async () => {
      const host = fakeHost([iface('eth0', 2, ['10.0.0.1'])], { v4: 'eth0', v6: 'eth0' });
      const err = await failure(host, v4Only({ enableIPv6: true }), 'ERR_NO_ADDRESS');
      expect(err.message).toBe('interface eth0 has no IPv6 address');
    });

    it('advertises only the enabled families', async () => {
      const host = fakeHost(HOST_IFACES, { v4: 'eth0' });
      const ext = await chooseExternalInterface(host, v4Only({ publicIPv6: ip('2001:db8::99'), iface: ['eth0'] }));
      expect(ext.publicIPv6).toBeUndefined();
      expect(ext.publicIP && formatIp(ext.publicIP)).toBe('10.0.0.5');
    });
  });

  it.each([0, -1])('rejects an interface with MTU %i', async (mtu) => {
    const host = fakeHost([iface('eth0', 2, ['10.0.0.1'], mtu)], { v4: 'eth0' });
    const err = await failure(host, v4Only());
    expect(err.message).toBe(`interface eth0 has MTU ${mtu}`);
  });

  it('returns a frozen result', async () => {
    const ext = await chooseExternalInterface(fakeHost(HOST_IFACES, { v4: 'eth0' }), v4Only());
    expect(Object.isFrozen(ext)).toBe(true);
  });
});
