/**
 * The lab's `up --bgp` without a network: the command line (accepted with every family and --kube, refused with
 * --kubelet and --upstream naming why), what each flanneld is told, the router's BIRD configuration, birdc's routes
 * parsed, and the tables `up` and `status` print.
 */
import { describe, expect, it } from 'vitest';
import { birdPeers, parseBirdRoutes } from '../../../lab/bird-config.js';
import { LabUsageError, parseLabArgs } from '../../../lab/lab-args.js';
import { bgpFlanneldArgs, labBgpNeighbors, labBirdConfig, officeSource, routesTable } from '../../../lab/lab-bgp.js';
import { matrixTable } from '../../../lab/lab-report.js';
import type { HostRecord, PodRecord } from '../../../lab/lab-state.js';

describe('lab --bgp command line', () => {
  it('is off unless given, and takes every family, a --config and --kube', () => {
    expect(parseLabArgs([])).toMatchObject({ bgp: false });
    expect(parseLabArgs(['up', '--bgp'])).toMatchObject({ command: 'up', bgp: true, stack: 'v4', kube: false });
    expect(parseLabArgs(['up', '--bgp', '--ipv6', '--id', 'b1'])).toMatchObject({ bgp: true, stack: 'dual', id: 'b1' });
    expect(parseLabArgs(['up', '--ipv6-only', '--bgp', '--backend=host-gw'])).toMatchObject({ bgp: true, stack: 'v6', backend: 'host-gw' });
    expect(parseLabArgs(['up', '--bgp', '--kube'])).toMatchObject({ bgp: true, kube: true, kubelet: false });
    expect(parseLabArgs(['up', '--bgp', '--config', 'f.json'])).toMatchObject({ bgp: true, config: 'f.json' });
  });

  it.each([
    [['up', '--bgp', '--kubelet'], /^--bgp with --kubelet: the kubelet lab applies manifests\/kube-flannel.yml as shipped, so its flanneld gets no --bgp-as, --bgp-peers or --ip-masq-exclude; use --bgp in etcd mode or with --kube$/],
    [['up', '--upstream', 'h2', '--bgp'], /^--bgp with --upstream: upstream flannel's flanneld v0.28.9 has no BGP speaker and refuses --bgp-as/],
    [['up', '--bgp=yes'], /--bgp takes no value, got "yes"/],
  ])('refuses %j naming why', (argv, message) => {
    expect(() => parseLabArgs(argv)).toThrow(LabUsageError);
    expect(() => parseLabArgs(argv)).toThrow(message);
  });
});

describe("each flanneld's BGP flags and the router's neighbours", () => {
  it('peers with the router and excludes the office over the families of the lab', () => {
    expect(bgpFlanneldArgs('v4')).toEqual(['--bgp-as=64512', '--bgp-peers=192.0.2.250;as=64512', '--ip-masq-exclude=203.0.113.0/24']);
    expect(bgpFlanneldArgs('dual')).toEqual([
      '--bgp-as=64512', '--bgp-peers=192.0.2.250;as=64512,2001:db8:2::fa;as=64512', '--ip-masq-exclude=203.0.113.0/24,2001:db8:3::/64',
    ]);
    expect(bgpFlanneldArgs('v6')).toEqual(['--bgp-as=64512', '--bgp-peers=2001:db8:2::fa;as=64512', '--ip-masq-exclude=2001:db8:3::/64']);
  });

  it("has a neighbour for each host's address of each family, host by host", () => {
    expect(labBgpNeighbors(2, 'v4')).toEqual(['192.0.2.1', '192.0.2.2']);
    expect(labBgpNeighbors(2, 'dual')).toEqual(['192.0.2.1', '2001:db8:2::1', '192.0.2.2', '2001:db8:2::2']);
    expect(labBgpNeighbors(11, 'v6').slice(-1)).toEqual(['2001:db8:2::b']);
  });
});

describe("the lab router's BIRD configuration", () => {
  const config = labBirdConfig({ as: 64512, neighbors: ['192.0.2.1', '2001:db8:2::1'] });

  it('has a passive iBGP neighbour per host address, spoken to from the router address of its family', () => {
    expect(config).toContain([
      'protocol bgp n0 {',
      '  local 192.0.2.250 as 64512;',
      '  neighbor 192.0.2.1 as 64512;',
      '  connect delay time 1;',
      '  connect retry time 1;',
      '  error wait time 1, 5;',
      '  passive on;',
      '  graceful restart aware;',
      '  graceful restart time 120;',
      '  ipv4 { import all; export none; };',
      '  ipv6 { import all; export none; };',
      '}',
    ].join('\n'));
    expect(config).toContain('protocol bgp n1 {\n  local 2001:db8:2::fa as 64512;\n  neighbor 2001:db8:2::1 as 64512;');
    expect(config).not.toContain('password');
  });

  it("installs only BGP's routes in its kernel table, per family, under router id 192.0.2.250", () => {
    expect(config).toContain('router id 192.0.2.250;');
    expect(config).toContain('protocol kernel k4 { ipv4 { import none; export where source = RTS_BGP; }; }');
    expect(config).toContain('protocol kernel k6 { ipv6 { import none; export where source = RTS_BGP; }; }');
  });
});

/** `birdc show route all` of BIRD 2.0.12 with a dual-stack node's routes, a connected one, and a second path. */
const SHOW_ROUTE_ALL = `BIRD 2.0.12 ready.
Table master4:
10.244.57.0/24       unicast [n0 11:18:37.962] * (100) [i]
\tvia 192.0.2.1 on eth0
\tType: BGP univ
\tBGP.origin: IGP
\tBGP.as_path: 
\tBGP.next_hop: 192.0.2.1
\tBGP.local_pref: 100
                     unicast [n2 11:18:38.100] (100) [i]
\tvia 192.0.2.2 on eth0
\tType: BGP univ
\tBGP.next_hop: 192.0.2.2
192.0.2.0/24         unicast [direct1 11:18:36.389] * (240)
\tdev eth0
\tType: device univ

Table master6:
2001:db8:a:1b::/64   unicast [n1 11:18:37.962] * (100) [i]
\tvia 2001:db8:2::1 on eth0
\tType: BGP univ
\tBGP.next_hop: 2001:db8:2::1 fe80::1
`;

describe("the router's routes", () => {
  const peers = birdPeers([{ address: '192.0.2.1' }, { address: '2001:db8:2::1' }, { address: '192.0.2.2' }]);

  it('reads each BGP path as prefix via next hop from its neighbour, leaving out connected routes', () => {
    expect(parseBirdRoutes(SHOW_ROUTE_ALL, peers, new Set(['n1']))).toEqual([
      { prefix: '10.244.57.0/24', nextHop: '192.0.2.1', fromPeer: '192.0.2.1' },
      { prefix: '10.244.57.0/24', nextHop: '192.0.2.2', fromPeer: '192.0.2.2' },
      { prefix: '2001:db8:a:1b::/64', nextHop: '2001:db8:2::1', fromPeer: '2001:db8:2::1', stale: true },
    ]);
  });

  it('prints them by prefix, with the host they came from and what graceful restart keeps', () => {
    const hosts: HostRecord[] = [{ name: 'h1', ip: '192.0.2.1', ip6: '2001:db8:2::1', netns: 'ftl-x-h1', dir: '/x/h1' }];
    const table = routesTable([
      { prefix: '2001:db8:a:1b::/64', nextHop: '2001:db8:2::1', fromPeer: '2001:db8:2::1', stale: true },
      { prefix: '10.244.57.0/24', nextHop: '192.0.2.1', fromPeer: '192.0.2.1' },
    ], hosts);
    const [header, , ...rows] = table.split('\n');
    expect(header).toBe("| the router's routes (BIRD, AS 64512) | via | from | state |");
    expect(rows).toEqual([
      '| 10.244.57.0/24 | 192.0.2.1 | h1 | learnt |',
      '| 2001:db8:a:1b::/64 | 2001:db8:2::1 | h1 | stale (graceful restart) |',
    ]);
  });
});

describe('the office row of the matrix', () => {
  it('is the office namespace with the addresses of the lab\'s families', () => {
    expect(officeSource({ id: 'x', stack: 'v4' })).toEqual({ name: 'office', host: 'office', netns: 'ftl-x-office', ip: '203.0.113.10' });
    expect(officeSource({ id: 'x', stack: 'dual' })).toMatchObject({ ip: '203.0.113.10', ip6: '2001:db8:3::10' });
    expect(officeSource({ id: 'x', stack: 'v6' })).toMatchObject({ ip: '2001:db8:3::10', ip6: '2001:db8:3::10' });
  });

  it('comes last, one cell per pod', () => {
    const pods: PodRecord[] = [
      { name: 'h1-p1', host: 'h1', netns: 'ftl-x-h1-p1', ip: '10.244.1.2' },
      { name: 'h2-p1', host: 'h2', netns: 'ftl-x-h2-p1', ip: '10.244.2.2' },
    ];
    const office = officeSource({ id: 'x', stack: 'v4' });
    const reachable = new Map([['h1-p1>h2-p1', true], ['h2-p1>h1-p1', true], ['office>h1-p1', true], ['office>h2-p1', false]]);
    expect(matrixTable(pods, { family: 4, reachable, failures: 1 }, [...pods, office]).split('\n').slice(-1)).toEqual(['| office | ok | FAIL |']);
  });
});
