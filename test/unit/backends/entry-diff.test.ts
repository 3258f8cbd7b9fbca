import { describe, expect, it } from 'vitest';
import { ipAddress, parseIp, type IpAddress } from '../../../flanneld/ip/address.js';
import { ipNet, parseCidr, type IpNet } from '../../../flanneld/ip/cidr.js';
import type { DatapathChange, DatapathEntry, DatapathScope } from '../../../backends/datapath/datapath.js';
import { describeEntry, entryIdentity } from '../../../backends/datapath/entry-key.js';
import { diffEntries, entriesByIdentity, entrySatisfies, inScope } from '../../../backends/entry-diff.js';

const ip = (text: string): IpAddress => parseIp(text)!;
const net = (text: string): IpNet => parseCidr(text)!;

const route = (dst: string, via?: string, linkIndex?: number, onlink?: boolean): DatapathEntry => ({
  kind: 'route',
  dst: net(dst),
  ...(via !== undefined ? { via: ip(via) } : {}),
  ...(linkIndex !== undefined ? { linkIndex } : {}),
  ...(onlink !== undefined ? { onlink } : {}),
});
const neigh = (addr: string, mac: string, linkIndex = 7): DatapathEntry => ({ kind: 'neigh', linkIndex, ip: ip(addr), mac });
const fdb = (mac: string, dst: string, linkIndex = 7): DatapathEntry => ({ kind: 'fdb', linkIndex, mac, dst: ip(dst) });

const show = (changes: readonly DatapathChange[]): string[] => changes.map((c) => `${c.op} ${describeEntry(c.entry)}`);

const MAC_A = '0e:00:00:00:00:0a';
const MAC_B = '0e:00:00:00:00:0b';
const peerEntries = (n: number, mac = MAC_A): DatapathEntry[] => [
  neigh(`10.244.${n}.0`, mac),
  fdb(mac, `192.168.1.${n}`),
  route(`10.244.${n}.0/24`, `10.244.${n}.0`, 7, true),
];

describe('entrySatisfies', () => {
  it.each([
    ['identical route', route('10.244.2.0/24', '10.244.2.0', 7, true), route('10.244.2.0/24', '10.244.2.0', 7, true), true],
    ['unset device matches any', route('10.244.2.0/24', '192.168.1.2'), route('10.244.2.0/24', '192.168.1.2', 2), true],
    ['unset onlink matches onlink', route('10.244.2.0/24', '10.244.2.0', 7), route('10.244.2.0/24', '10.244.2.0', 7, true), true],
    ['unset gateway matches any', route('10.244.2.0/24', undefined, 7), route('10.244.2.0/24', '10.244.2.0', 7), true],
    ['onlink false matches absent onlink', route('10.244.2.0/24', '10.244.2.0', 7, false), route('10.244.2.0/24', '10.244.2.0', 7), true],
    ['wanted onlink missing', route('10.244.2.0/24', '10.244.2.0', 7, true), route('10.244.2.0/24', '10.244.2.0', 7), false],
    ['other gateway', route('10.244.2.0/24', '10.244.2.0', 7, true), route('10.244.2.0/24', '192.168.1.2', 7, true), false],
    ['gateway wanted, none there', route('10.244.2.0/24', '10.244.2.0'), route('10.244.2.0/24', undefined, 7), false],
    ['other device', route('10.244.2.0/24', '10.244.2.0', 7, true), route('10.244.2.0/24', '10.244.2.0', 8, true), false],
    ['other prefix', route('10.244.2.0/24', '10.244.2.0'), route('10.244.2.0/25', '10.244.2.0'), false],
    ['same neighbour', neigh('10.244.2.0', MAC_A), neigh('10.244.2.0', MAC_A), true],
    ['neighbour with other MAC', neigh('10.244.2.0', MAC_A), neigh('10.244.2.0', MAC_B), false],
    ['same fdb', fdb(MAC_A, '192.168.1.2'), fdb(MAC_A, '192.168.1.2'), true],
    ['fdb with other dst', fdb(MAC_A, '192.168.1.2'), fdb(MAC_A, '192.168.1.3'), false],
    ['fdb on other device', fdb(MAC_A, '192.168.1.2', 7), fdb(MAC_A, '192.168.1.2', 8), false],
    ['other kind', neigh('10.244.2.0', MAC_A), fdb(MAC_A, '10.244.2.0'), false],
  ])('%s -> %s', (_name, desired, actual, expected) => {
    expect(entrySatisfies(desired, actual)).toBe(expected);
  });
});

describe('inScope', () => {
  const scope: DatapathScope = {
    routeNetworks: [net('10.244.0.0/16'), net('fd00::/48')],
    excludeRoutes: [net('10.244.1.0/24')],
    neighLinks: [7],
  };
  it.each([
    [route('10.244.2.0/24', '10.244.2.0', 7, true), true],
    // The route for the whole network (udp's TUN route) is not a peer's.
    [route('10.244.0.0/16', undefined, 7), false],
    [route('fd00:0:0:2::/64', 'fd00:0:0:2::', 8, true), true],
    [route('10.244.1.0/24', undefined, 3), false],
    [route('10.244.1.128/25', undefined, 3), false],
    [route('10.0.0.0/8', '192.168.1.1'), false],
    [route('192.168.1.0/24', undefined, 2), false],
    [neigh('10.244.2.0', MAC_A, 7), true],
    [neigh('192.168.1.1', MAC_A, 2), false],
    [fdb(MAC_A, '192.168.1.2', 7), true],
    [fdb(MAC_A, '192.168.1.2', 8), false],
  ])('%# %s', (entry, expected) => {
    expect(inScope(entry, scope)).toBe(expected);
  });
});

describe('entriesByIdentity', () => {
  it('keys entries by identity, the later of two with one identity winning', () => {
    const byId = entriesByIdentity([neigh('10.244.2.0', MAC_A), route('10.244.2.0/24', '10.244.2.0'), neigh('10.244.2.0', MAC_B)]);
    expect([...byId.keys()]).toEqual(['neigh 7 10.244.2.0', 'route 10.244.2.0/24']);
    expect(byId.get('neigh 7 10.244.2.0')).toEqual(neigh('10.244.2.0', MAC_B));
  });
});

describe('diffEntries', () => {
  it('changes nothing when the kernel already matches', () => {
    expect(diffEntries(peerEntries(2), peerEntries(2))).toEqual([]);
    expect(diffEntries([], [])).toEqual([]);
  });

  it('adds a new peer neighbour first, then FDB, then route', () => {
    expect(show(diffEntries([...peerEntries(2)].reverse(), []))).toEqual([
      `replace neigh 10.244.2.0 lladdr ${MAC_A} dev#7`,
      `replace fdb ${MAC_A} dst 192.168.1.2 dev#7`,
      'replace route 10.244.2.0/24 via 10.244.2.0 dev#7 onlink',
    ]);
  });

  it('removes a departed peer route first, then FDB, then neighbour', () => {
    expect(show(diffEntries([], peerEntries(2)))).toEqual([
      'delete route 10.244.2.0/24 via 10.244.2.0 dev#7 onlink',
      `delete fdb ${MAC_A} dst 192.168.1.2 dev#7`,
      `delete neigh 10.244.2.0 lladdr ${MAC_A} dev#7`,
    ]);
  });

  it('follows a changed VTEP MAC and deletes the stale FDB entry', () => {
    expect(show(diffEntries(peerEntries(2, MAC_B), peerEntries(2, MAC_A)))).toEqual([
      `delete fdb ${MAC_A} dst 192.168.1.2 dev#7`,
      `replace neigh 10.244.2.0 lladdr ${MAC_B} dev#7`,
      `replace fdb ${MAC_B} dst 192.168.1.2 dev#7`,
    ]);
  });

  it('switches a peer to a direct route: neighbour and FDB go, the route is replaced', () => {
    const direct = route('10.244.2.0/24', '192.168.1.2');
    expect(show(diffEntries([direct], peerEntries(2)))).toEqual([
      `delete fdb ${MAC_A} dst 192.168.1.2 dev#7`,
      `delete neigh 10.244.2.0 lladdr ${MAC_A} dev#7`,
      'replace route 10.244.2.0/24 via 192.168.1.2',
    ]);
  });

  it('accepts a kernel route that filled in the device a direct route left open', () => {
    expect(diffEntries([route('10.244.2.0/24', '192.168.1.2')], [route('10.244.2.0/24', '192.168.1.2', 2)])).toEqual([]);
  });

  it('orders every delete before every replace, each kind in input order', () => {
    const desired = [route('10.244.5.0/24', '10.244.5.0', 7, true), fdb(MAC_B, '192.168.1.5'), neigh('10.244.5.0', MAC_B), route('10.244.6.0/24', '10.244.6.0', 7, true)];
    const actual = [neigh('10.244.3.0', MAC_A), route('10.244.3.0/24', '10.244.3.0', 7, true), fdb(MAC_A, '192.168.1.3'), route('10.244.4.0/24', '10.244.4.0', 7, true)];
    expect(diffEntries(desired, actual).map((c) => `${c.op} ${entryIdentity(c.entry)}`)).toEqual([
      'delete route 10.244.3.0/24',
      'delete route 10.244.4.0/24',
      `delete fdb 7 ${MAC_A}`,
      'delete neigh 7 10.244.3.0',
      'replace neigh 7 10.244.5.0',
      `replace fdb 7 ${MAC_B}`,
      'replace route 10.244.5.0/24',
      'replace route 10.244.6.0/24',
    ]);
  });

  it('uses the later of two desired entries with one identity', () => {
    const changes = diffEntries([neigh('10.244.2.0', MAC_A), neigh('10.244.2.0', MAC_B)], [neigh('10.244.2.0', MAC_A)]);
    expect(show(changes)).toEqual([`replace neigh 10.244.2.0 lladdr ${MAC_B} dev#7`]);
  });

  it('diffs 5000 peers (15000 entries each side) exactly', () => {
    const PEERS = 5000;
    const mac = (n: number, salt = 0): string =>
      ['0e', salt.toString(16).padStart(2, '0'), '00', '00', ((n >> 8) & 0xff).toString(16).padStart(2, '0'), (n & 0xff).toString(16).padStart(2, '0')].join(':');
    const peer = (n: number, salt = 0): DatapathEntry[] => {
      const subnet = ipNet(4, (10n << 24n) | (BigInt(n) << 8n), 24);
      const gw = ipAddress(4, subnet.ip);
      const m = mac(n, salt);
      return [
        { kind: 'neigh', linkIndex: 7, ip: gw, mac: m },
        { kind: 'fdb', linkIndex: 7, mac: m, dst: ipAddress(4, (172n << 24n) | BigInt(n)) },
        { kind: 'route', dst: subnet, via: gw, linkIndex: 7, onlink: true },
      ];
    };
    const desired: DatapathEntry[] = [];
    const actual: DatapathEntry[] = [];
    for (let n = 0; n < PEERS; n++) {
      desired.push(...peer(n));
      if (n % 50 === 0) continue; // 100 peers not programmed yet
      actual.push(...peer(n, n % 50 === 1 ? 1 : 0)); // 100 peers with an old MAC
    }
    for (let n = PEERS; n < PEERS + 200; n++) actual.push(...peer(n)); // 200 departed peers
    expect(desired).toHaveLength(15000);

    const changes = diffEntries(desired, actual);
    const count = (op: string, kind: string): number => changes.filter((c) => c.op === op && c.entry.kind === kind).length;
    expect({
      deleteRoute: count('delete', 'route'),
      deleteFdb: count('delete', 'fdb'),
      deleteNeigh: count('delete', 'neigh'),
      replaceNeigh: count('replace', 'neigh'),
      replaceFdb: count('replace', 'fdb'),
      replaceRoute: count('replace', 'route'),
    }).toEqual({ deleteRoute: 200, deleteFdb: 300, deleteNeigh: 200, replaceNeigh: 200, replaceFdb: 200, replaceRoute: 100 });
    const firstReplace = changes.findIndex((c) => c.op === 'replace');
    expect(changes.slice(firstReplace).every((c) => c.op === 'replace')).toBe(true);
    expect(changes.slice(0, 200).every((c) => c.entry.kind === 'route')).toBe(true);

    const after = entriesByIdentity(actual);
    for (const c of changes) {
      if (c.op === 'delete') after.delete(entryIdentity(c.entry));
      else after.set(entryIdentity(c.entry), c.entry);
    }
    expect(diffEntries(desired, [...after.values()])).toEqual([]);
  });
});
