import { describe, expect, it } from 'vitest';
import { parseIp, type IpAddress } from '../../../flanneld/ip/address.js';
import { formatCidr } from '../../../flanneld/ip/cidr.js';
import { defaultRouteDev, lookupRoute, parseProcRoutes, type ProcRoute } from '../../../flanneld/ip/proc-routes.js';

/**
 * /proc/net/route as the kernel prints it: tab-separated, each line padded with spaces to 127 columns, addresses as
 * the network-order u32 printed in host (little-endian) order, flags %04X, metric in decimal.
 */
const V4 = [
  'Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT',
  // default via 10.0.0.1 dev eth0 metric 100 (RTF_UP|RTF_GATEWAY)
  'eth0\t00000000\t0100000A\t0003\t0\t0\t100\t00000000\t0\t0\t0',
  // default via 192.168.1.1 dev wlan0 metric 600
  'wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0',
  // 10.0.0.0/24 dev eth0 proto kernel scope link metric 100
  'eth0\t0000000A\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0',
  // 10.0.0.99 dev eth3 (host route: RTF_UP|RTF_HOST)
  'eth3\t6300000A\t00000000\t0005\t0\t0\t0\tFFFFFFFF\t0\t0\t0',
  // 192.168.1.0/24 dev wlan0 metric 600
  'wlan0\t0001A8C0\t00000000\t0001\t0\t0\t600\t00FFFFFF\t0\t0\t0',
  // 10.244.0.0/16 dev cni0
  'cni0\t0000F40A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0',
  // 10.244.3.0/24 via 10.244.3.0 dev flannel.1 onlink
  'flannel.1\t0003F40A\t0003F40A\t0003\t0\t0\t0\t00FFFFFF\t0\t0\t0',
  // 172.16.0.0/12 twice: dev eth0 metric 200 and dev eth1 metric 50
  'eth0\t000010AC\t00000000\t0001\t0\t0\t200\t0000F0FF\t0\t0\t0',
  'eth1\t000010AC\t00000000\t0001\t0\t0\t50\t0000F0FF\t0\t0\t0',
  // 8.8.8.0/24 dev eth2 with RTF_UP clear (current kernels set RTF_UP on every IPv4 line; this checks the guard)
  'eth2\t00080808\t00000000\t0000\t0\t0\t0\t00FFFFFF\t0\t0\t0',
]
  .map((line) => line.padEnd(127))
  .join('\n')
  .concat('\n');

/**
 * /proc/net/ipv6_route: dst, dst prefix (hex), src, src prefix, gateway, then metric, refcnt, use and flags as
 * %08x, and the device as %8s (right-aligned). No header line.
 */
const Z = '00000000000000000000000000000000';
const V6 = [
  // fe80::/64 dev eth0 metric 256
  `fe800000000000000000000000000000 40 ${Z} 00 ${Z} 00000100 00000001 00000000 00000001     eth0`,
  // 2001:db8::/64 dev eth0 metric 256
  `20010db8000000000000000000000000 40 ${Z} 00 ${Z} 00000100 00000002 00000000 00000001     eth0`,
  // 2001:db8::/48 dev eth1 metric 256 (shorter than the /64 above)
  `20010db8000000000000000000000000 30 ${Z} 00 ${Z} 00000100 00000001 00000000 00000001     eth1`,
  // fd00:10::/64 twice: dev eth0 metric 1024 and dev eth1 metric 100
  `fd000010000000000000000000000000 40 ${Z} 00 ${Z} 00000400 00000001 00000000 00000001     eth0`,
  `fd000010000000000000000000000000 40 ${Z} 00 ${Z} 00000064 00000001 00000000 00000001     eth1`,
  // default via fe80::1 dev eth0 proto ra metric 1024 expires (RTF_UP|RTF_GATEWAY|RTF_DEFAULT|RTF_ADDRCONF|RTF_EXPIRES)
  `${Z} 00 ${Z} 00 fe800000000000000000000000000001 00000400 00000001 00000000 00450003     eth0`,
  // default via fe80::2 dev wlan0 metric 600
  `${Z} 00 ${Z} 00 fe800000000000000000000000000002 00000258 00000001 00000000 00000003    wlan0`,
  // unreachable 2001:db8:dead::/48 (RTF_UP|RTF_REJECT|RTF_NONEXTHOP, on lo)
  `20010db8dead00000000000000000000 30 ${Z} 00 ${Z} 00000400 00000001 00000000 00200201       lo`,
  // local ::1 dev lo table local (RTF_UP|RTF_NONEXTHOP|RTF_LOCAL)
  `00000000000000000000000000000001 80 ${Z} 00 ${Z} 00000000 00000003 00000000 80200001       lo`,
  // the kernel's catch-all: unreachable ::/0 dev lo metric 0xffffffff, not up
  `${Z} 00 ${Z} 00 ${Z} ffffffff 00000001 00000000 00200200       lo`,
  // a route that is down (no RTF_UP)
  `fd00dead000000000000000000000000 40 ${Z} 00 ${Z} 00000100 00000001 00000000 00000000     eth2`,
]
  .join('\n')
  .concat('\n');

const ip = (text: string): IpAddress => {
  const a = parseIp(text);
  if (!a) throw new Error(`bad test address ${text}`);
  return a;
};

const show = (r: ProcRoute | undefined): string | undefined => r && `${formatCidr(r.dst)} dev ${r.dev} metric ${r.metric}`;

describe('parseProcRoutes', () => {
  const routes = parseProcRoutes(V4, V6);

  it('decodes IPv4 routes: little-endian addresses, masks as prefix lengths, decimal metrics', () => {
    expect(routes.filter((r) => r.dst.family === 4).map(show)).toEqual([
      '0.0.0.0/0 dev eth0 metric 100',
      '0.0.0.0/0 dev wlan0 metric 600',
      '10.0.0.0/24 dev eth0 metric 100',
      '10.0.0.99/32 dev eth3 metric 0',
      '192.168.1.0/24 dev wlan0 metric 600',
      '10.244.0.0/16 dev cni0 metric 0',
      '10.244.3.0/24 dev flannel.1 metric 0',
      '172.16.0.0/12 dev eth0 metric 200',
      '172.16.0.0/12 dev eth1 metric 50',
    ]);
  });

  it('decodes IPv6 routes: 32-digit addresses, hex prefix lengths, hex metrics', () => {
    expect(routes.filter((r) => r.dst.family === 6).map(show)).toEqual([
      'fe80::/64 dev eth0 metric 256',
      '2001:db8::/64 dev eth0 metric 256',
      '2001:db8::/48 dev eth1 metric 256',
      'fd00:10::/64 dev eth0 metric 1024',
      'fd00:10::/64 dev eth1 metric 100',
      '::/0 dev eth0 metric 1024',
      '::/0 dev wlan0 metric 600',
    ]);
  });

  it('skips routes without RTF_UP in both files', () => {
    expect(routes.some((r) => r.dev === 'eth2')).toBe(false);
  });

  it('skips IPv6 reject routes and routes on lo', () => {
    expect(routes.some((r) => r.dev === 'lo')).toBe(false);
    const rejectOffLo = `fd00beef000000000000000000000000 40 ${Z} 00 ${Z} 00000100 00000001 00000000 00000201     eth0`;
    expect(parseProcRoutes('', rejectOffLo)).toEqual([]);
    const upOnLo = `fd00beef000000000000000000000000 40 ${Z} 00 ${Z} 00000100 00000001 00000000 00000001       lo`;
    expect(parseProcRoutes('', upOnLo)).toEqual([]);
  });

  it('reads nothing from empty or header-only files', () => {
    expect(parseProcRoutes('', '')).toEqual([]);
    expect(parseProcRoutes(V4.split('\n')[0] as string, '\n')).toEqual([]);
  });

  it('ignores short and blank lines', () => {
    const v4 = `${V4.split('\n')[0]}\n\neth0\t0000000A\n`;
    expect(parseProcRoutes(v4, '\n   \nfe80 40\n')).toEqual([]);
  });
});

describe('lookupRoute', () => {
  const routes = parseProcRoutes(V4, V6);

  it.each([
    ['10.244.3.5', '10.244.3.0/24 dev flannel.1 metric 0'],
    ['10.244.7.1', '10.244.0.0/16 dev cni0 metric 0'],
    ['10.0.0.99', '10.0.0.99/32 dev eth3 metric 0'],
    ['10.0.0.42', '10.0.0.0/24 dev eth0 metric 100'],
    ['192.168.1.20', '192.168.1.0/24 dev wlan0 metric 600'],
    ['172.20.1.1', '172.16.0.0/12 dev eth1 metric 50'],
    ['8.8.8.8', '0.0.0.0/0 dev eth0 metric 100'],
    ['2001:db8::1', '2001:db8::/64 dev eth0 metric 256'],
    ['2001:db8:0:1::1', '2001:db8::/48 dev eth1 metric 256'],
    ['fd00:10::1', 'fd00:10::/64 dev eth1 metric 100'],
    ['2001:db8:dead::1', '::/0 dev wlan0 metric 600'],
    ['fd00:dead::1', '::/0 dev wlan0 metric 600'],
  ])('routes %s by longest prefix, then lowest metric: %s', (dst, expected) => {
    expect(show(lookupRoute(routes, ip(dst)))).toBe(expected);
  });

  it('keeps the first of equal routes', () => {
    const twice = [...routes.filter((r) => r.dev === 'cni0'), { ...routes.find((r) => r.dev === 'cni0')!, dev: 'cni1' }];
    expect(lookupRoute(twice, ip('10.244.9.9'))?.dev).toBe('cni0');
  });

  it('never matches across families', () => {
    const v4 = parseProcRoutes(V4, '');
    expect(lookupRoute(v4, ip('::1'))).toBeUndefined();
    expect(lookupRoute(parseProcRoutes('', V6), ip('10.0.0.1'))).toBeUndefined();
  });

  it('finds nothing without a covering route', () => {
    const noDefault = parseProcRoutes(V4, '').filter((r) => r.dst.prefixLen > 0);
    expect(lookupRoute(noDefault, ip('8.8.8.8'))).toBeUndefined();
  });
});

describe('defaultRouteDev', () => {
  const routes = parseProcRoutes(V4, V6);

  it('picks the default route with the lowest metric per family', () => {
    expect(defaultRouteDev(routes, 4)).toBe('eth0');
    expect(defaultRouteDev(routes, 6)).toBe('wlan0');
  });

  it('is undefined without a default route', () => {
    expect(defaultRouteDev(routes.filter((r) => r.dst.prefixLen > 0), 4)).toBeUndefined();
    expect(defaultRouteDev(parseProcRoutes(V4, ''), 6)).toBeUndefined();
  });

  it('ignores the kernel catch-all IPv6 unreachable default on lo', () => {
    const onlyCatchAll = `${Z} 00 ${Z} 00 ${Z} ffffffff 00000001 00000000 00200201       lo\n`;
    expect(defaultRouteDev(parseProcRoutes('', onlyCatchAll), 6)).toBeUndefined();
  });
});
