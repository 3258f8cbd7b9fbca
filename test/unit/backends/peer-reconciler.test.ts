import { memoryLog, type LogLine } from '../../helpers/test-log.js';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { ApplyReport, DatapathChange, DatapathEntry, VxlanLinkSpec } from '../../../backends/datapath/datapath.js';
import { describeEntry, entryIdentity } from '../../../backends/datapath/entry-key.js';
import { runPeerReconciler, type PeerPlan, type ReconcilerObserver } from '../../../backends/peer-reconciler.js';
import { planVxlanPeer } from '../../../backends/vxlan/vxlan-peers.js';
import { parseIp, type IpAddress } from '../../../flanneld/ip/address.js';
import { parseCidr, type IpNet } from '../../../flanneld/ip/cidr.js';
import { FlannelError } from '../../../flanneld/runtime/errors.js';
import type { Lease, LeaseEvent } from '../../../flanneld/lease/lease.js';
import { FakeDatapath } from '../../helpers/fake-datapath.js';
import { FakeSubnetManager } from '../../helpers/fake-subnet-manager.js';
import { ManualClock } from '../../helpers/manual-clock.js';

const ip = (text: string): IpAddress => parseIp(text) as IpAddress;
const net = (text: string): IpNet => parseCidr(text) as IpNet;
const hex = (n: number): string => (n & 0xff).toString(16).padStart(2, '0');

const RESYNC_MS = 60_000;
const NETWORK = '10.0.0.0/8';
const OWN_SUBNET = '10.1.1.0/24';
const ERROR = 50;
const WARN = 40;
const INFO = 30;

/** Peer n: subnet 10.<2 + n/256>.<n%256>.0/24, public IP 172.16.<n/256>.<n%256>, one MAC per n (and per version). */
const peerNet = (n: number): string => `10.${2 + (n >> 8)}.${n & 0xff}.0/24`;
const peerGateway = (n: number): string => `10.${2 + (n >> 8)}.${n & 0xff}.0`;
const peerPublic = (n: number): string => `172.16.${n >> 8}.${n & 0xff}`;
const macOf = (n: number, version = 0): string => `0e:00:00:${hex(version)}:${hex(n >> 8)}:${hex(n)}`;

function peerLease(n: number, mac = macOf(n)): Lease {
  return {
    subnet: net(peerNet(n)),
    attrs: { publicIP: ip(peerPublic(n)), backendType: 'vxlan', backendData: { VNI: 1, VtepMAC: mac } },
    reservation: false,
  };
}

const OWN: Lease = {
  subnet: net(OWN_SUBNET),
  attrs: { publicIP: ip('172.16.9.9'), backendType: 'vxlan', backendData: { VNI: 1, VtepMAC: '0e:99:99:99:99:99' } },
  reservation: false,
};

/** What planVxlanPeer wants for peer n on device `dev`, in its order: neighbour, FDB, route. */
function peerEntries(n: number, dev: number, mac = macOf(n)): DatapathEntry[] {
  return [
    { kind: 'neigh', linkIndex: dev, ip: ip(peerGateway(n)), mac },
    { kind: 'fdb', linkIndex: dev, mac, dst: ip(peerPublic(n)) },
    { kind: 'route', dst: net(peerNet(n)), via: ip(peerGateway(n)), linkIndex: dev, onlink: true },
  ];
}

const added = (...leases: Lease[]): LeaseEvent[] => leases.map((lease) => ({ type: 'added', lease }));
const removed = (...leases: Lease[]): LeaseEvent[] => leases.map((lease) => ({ type: 'removed', lease }));
const described = (entries: readonly DatapathEntry[]): string[] => entries.map(describeEntry).sort();
const changeText = (changes: readonly DatapathChange[]): string[] => changes.map((c) => `${c.op} ${describeEntry(c.entry)}`);
const settle = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

interface Seen {
  readonly applied: [number, number][];
  readonly repaired: [string, number][];
  readonly resynced: [number, number][];
  readonly peers: number[];
  readonly leaseBatchApplied: number[];
}

const running: { abort: AbortController; done: Promise<unknown> }[] = [];

afterEach(async () => {
  for (const r of running.splice(0)) {
    r.abort.abort();
    await r.done;
  }
});

/** A vxlan-like plan over FakeDatapath: device flannel.1 (re-created with a fresh index when lost), peers via planVxlanPeer. */
async function setup() {
  const dp = new FakeDatapath();
  const eth0 = dp.addLink({ name: 'eth0', mtu: 1500 });
  const spec: VxlanLinkSpec = {
    name: 'flannel.1', vni: 1, port: 0, local: ip('172.16.9.9'), underlayIndex: eth0.index, mtu: 1450, learning: false, gbp: false,
    mac: '0e:99:99:99:99:99',
  };
  let dev = (await dp.ensureVxlan(spec)).index;
  const clock = new ManualClock();
  const subnets = new FakeSubnetManager();
  const { log, lines } = memoryLog();
  const seen: Seen = { applied: [], repaired: [], resynced: [], peers: [], leaseBatchApplied: [] };
  let extra: ReconcilerObserver = {};
  const observer: ReconcilerObserver = {
    programmed: (p) => extra.programmed?.(p),
    collisions: (m) => extra.collisions?.(m),
    streamFailed: (stream, err) => extra.streamFailed?.(stream, err),
    applied: (changes, durationMs) => void seen.applied.push([changes, durationMs]),
    repaired: (kind, count) => void seen.repaired.push([kind, count]),
    resynced: (durationMs, drift) => void seen.resynced.push([durationMs, drift]),
    peers: (count) => void seen.peers.push(count),
    leaseBatchApplied: (at) => void seen.leaseBatchApplied.push(at),
  };
  let ensureCalls = 0;
  let ensureFailures = 0;
  const plan: PeerPlan = {
    scope: () => ({ routeNetworks: [net(NETWORK)], excludeRoutes: [net(OWN_SUBNET)], neighLinks: [dev] }),
    async ensureDevices() {
      ensureCalls++;
      if (ensureFailures > 0) {
        ensureFailures--;
        throw new FlannelError('ERR_DEVICE', 'create vxlan device flannel.1: EBUSY');
      }
      dev = (await dp.ensureVxlan(spec)).index;
    },
    ownsLink: (name) => name === spec.name,
    entriesFor: (peer) => planVxlanPeer(peer, { v4: { linkIndex: dev, isDirect: () => false } }),
  };
  const abort = new AbortController();
  let outcome: { resolved: true } | { error: unknown } | undefined;

  const start = async (): Promise<void> => {
    const done = runPeerReconciler(plan, OWN, subnets.watchLeases(abort.signal), { datapath: dp, clock, log, resyncMs: RESYNC_MS, observer }, abort.signal).then(
      () => {
        outcome = { resolved: true };
      },
      (error: unknown) => {
        outcome = { error };
      },
    );
    running.push({ abort, done });
    await vi.waitFor(() => {
      expect(subnets.leaseWatchers).toBe(1);
      expect(dp.eventSubscribers).toBe(1);
      expect(clock.pending).toBe(1);
    });
  };

  /** Pushes one lease batch and waits until the reconciler has programmed it. */
  const push = async (events: readonly LeaseEvent[]): Promise<void> => {
    const before = seen.leaseBatchApplied.length;
    subnets.pushLeases(events);
    await vi.waitFor(() => expect(seen.leaseBatchApplied.length).toBe(before + 1));
  };

  /** Fires the periodic resync and waits until it has run and the timer is re-armed. */
  const resync = async (): Promise<void> => {
    const before = seen.resynced.length;
    await vi.waitFor(() => expect(clock.pending).toBe(1));
    clock.advance(RESYNC_MS);
    await vi.waitFor(() => {
      expect(seen.resynced.length).toBe(before + 1);
      expect(clock.pending).toBe(1);
    });
  };

  return {
    dp, eth0, clock, subnets, lines, seen, abort, start, push, resync,
    /** More observer hooks for one test. */
    observe: (more: ReconcilerObserver) => {
      extra = more;
    },
    dev: () => dev,
    ensureCalls: () => ensureCalls,
    failEnsure: (times: number) => {
      ensureFailures = times;
    },
    outcome: () => outcome,
    kernel: () => described(dp.entries),
    logged: (level: number, msg: string) => lines.filter((l) => l.level === level && l.msg === msg),
  };
}

describe('runPeerReconciler: startup', () => {
  it('applies nothing before the first lease snapshot, whatever else arrives', async () => {
    const h = await setup();
    const stale = peerEntries(7, h.dev());
    h.dp.put(...stale);
    await h.start();

    h.dp.deleteEntryBehindOurBack(entryIdentity(stale[0] as DatapathEntry));
    h.dp.emit({ type: 'overrun' });
    h.clock.advance(RESYNC_MS);
    await vi.waitFor(() => {
      expect(h.seen.peers.length).toBeGreaterThan(0);
      expect(h.clock.pending).toBe(1);
    });
    await settle();

    expect(h.dp.applyCalls).toBe(0);
    expect(h.seen.resynced).toEqual([]);
    expect(h.seen.leaseBatchApplied).toEqual([]);
    expect(h.kernel()).toEqual(described(stale.slice(1)));
  });

  it('converges on the snapshot with one dump and diff: stale in-scope entries go, out-of-scope ones stay, missing ones come', async () => {
    const h = await setup();
    const dev = h.dev();
    const eth0 = h.eth0.index;
    const outOfScope: DatapathEntry[] = [
      { kind: 'neigh', linkIndex: eth0, ip: ip('172.16.0.1'), mac: '52:54:00:00:00:01' }, // another device
      { kind: 'route', dst: net('192.168.50.0/24'), via: ip('172.16.0.1') }, // outside the Network
      { kind: 'route', dst: net(OWN_SUBNET), linkIndex: eth0 }, // our own subnet (cni0 in real life)
      { kind: 'route', dst: net(NETWORK), linkIndex: dev }, // the whole Network is not a peer's
    ];
    const stale = peerEntries(9, dev); // a peer that left while we were down
    const correct = peerEntries(2, dev);
    const wrongRoute: DatapathEntry = { kind: 'route', dst: net(peerNet(3)), via: ip('172.16.0.99') };
    h.dp.put(...outOfScope, ...stale, ...correct, ...(peerEntries(3, dev).slice(0, 2)), wrongRoute);
    const dump = vi.spyOn(h.dp, 'dump');
    await h.start();

    await h.push(added(OWN, peerLease(2), peerLease(3), peerLease(4)));

    expect(dump).toHaveBeenCalledTimes(1);
    expect(h.dp.batches).toHaveLength(1);
    expect(changeText(h.dp.batches[0] ?? [])).toEqual([
      // Deletes first, routes before what they lean on; then replaces bottom-up.
      `delete ${describeEntry(stale[2] as DatapathEntry)}`,
      `delete ${describeEntry(stale[1] as DatapathEntry)}`,
      `delete ${describeEntry(stale[0] as DatapathEntry)}`,
      `replace ${describeEntry(peerEntries(4, dev)[0] as DatapathEntry)}`,
      `replace ${describeEntry(peerEntries(4, dev)[1] as DatapathEntry)}`,
      `replace ${describeEntry(peerEntries(3, dev)[2] as DatapathEntry)}`,
      `replace ${describeEntry(peerEntries(4, dev)[2] as DatapathEntry)}`,
    ]);
    expect(h.kernel()).toEqual(described([...outOfScope, ...correct, ...peerEntries(3, dev), ...peerEntries(4, dev)]));
    // Our own lease produced nothing: no neighbour for our gateway, our subnet's route untouched.
    expect(h.dp.entry(`neigh ${dev} 10.1.1.0`)).toBeUndefined();
    expect(h.seen.peers.at(-1)).toBe(3);
  });

  it('ignores our own lease in later batches, added or removed', async () => {
    const h = await setup();
    await h.start();
    await h.push(added(peerLease(2)));
    const before = h.kernel();

    await h.push(removed(OWN));
    await h.push(added(OWN));

    expect(h.dp.applyCalls).toBe(1);
    expect(h.kernel()).toEqual(before);
    expect(h.seen.peers.at(-1)).toBe(1);
  });
});

describe('runPeerReconciler: lease batches', () => {
  it('applies a later added and removed lease incrementally, in one apply call and without a dump', async () => {
    const h = await setup();
    await h.start();
    await h.push(added(peerLease(2), peerLease(3)));
    const dump = vi.spyOn(h.dp, 'dump');
    const dev = h.dev();

    await h.push([...added(peerLease(4)), ...removed(peerLease(2))]);

    expect(dump).not.toHaveBeenCalled();
    expect(h.dp.batches).toHaveLength(2);
    expect(changeText(h.dp.batches[1] ?? [])).toEqual([
      ...peerEntries(2, dev).reverse().map((e) => `delete ${describeEntry(e)}`),
      ...peerEntries(4, dev).map((e) => `replace ${describeEntry(e)}`),
    ]);
    expect(h.kernel()).toEqual(described([...peerEntries(3, dev), ...peerEntries(4, dev)]));
  });

  it('programs a batch of 1000 leases with one apply call', async () => {
    const h = await setup();
    await h.start();
    await h.push(added(peerLease(1)));
    const dev = h.dev();
    const many = Array.from({ length: 1000 }, (_, i) => peerLease(i + 2));

    await h.push(added(...many));
    expect(h.dp.applyCalls).toBe(2);
    expect(h.dp.batches[1]).toHaveLength(3000);
    expect(h.dp.entries).toHaveLength(3003);

    await h.push(removed(...many));
    expect(h.dp.applyCalls).toBe(3);
    expect(h.dp.batches[2]).toHaveLength(3000);
    expect(h.kernel()).toEqual(described(peerEntries(1, dev)));
  });

  it('replaces a peer whose VtepMAC changed and deletes the FDB entry of the old MAC', async () => {
    const h = await setup();
    await h.start();
    await h.push(added(peerLease(2), peerLease(3)));
    const dev = h.dev();
    const newMac = macOf(2, 1);

    await h.push(added(peerLease(2, newMac)));

    expect(changeText(h.dp.batches[1] ?? [])).toEqual([
      `delete fdb ${macOf(2)} dst ${peerPublic(2)} dev#${dev}`,
      `replace neigh ${peerGateway(2)} lladdr ${newMac} dev#${dev}`,
      `replace fdb ${newMac} dst ${peerPublic(2)} dev#${dev}`,
    ]);
    expect(h.kernel()).toEqual(described([...peerEntries(2, dev, newMac), ...peerEntries(3, dev)]));
  });

  it('warns once per skip reason, however often the lease comes back', async () => {
    const h = await setup();
    await h.start();
    const hostGw: Lease = { ...peerLease(5), attrs: { publicIP: ip(peerPublic(5)), backendType: 'host-gw' } };

    await h.push(added(hostGw, peerLease(2)));
    await h.push(added(hostGw));
    await h.resync();

    const warnings = h.lines.filter((l) => l.level === WARN);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]?.msg).toContain('ignoring non-vxlan lease 10.2.5.0/24');
    expect(h.kernel()).toEqual(described(peerEntries(2, h.dev())));
  });
});

describe('runPeerReconciler: repairs', () => {
  it('restores every kind of entry deleted behind our back', async () => {
    const h = await setup();
    await h.start();
    await h.push(added(peerLease(2), peerLease(3)));
    const dev = h.dev();
    const want = h.kernel();

    for (const entry of peerEntries(2, dev)) h.dp.deleteEntryBehindOurBack(entryIdentity(entry));

    await vi.waitFor(() => expect(h.kernel()).toEqual(want));
    expect(h.seen.repaired).toEqual(expect.arrayContaining([['neigh', 1], ['fdb', 1], ['route', 1]]));
    expect(h.logged(INFO, 'entry removed behind our back; restoring it')).toHaveLength(3);
    // Only replaces, and only of what was lost.
    expect(h.dp.batches.slice(1).flat().map((c) => c.op)).toEqual(['replace', 'replace', 'replace']);
  });

  it('restores by identity when the notice carries no values (a neighbour notice with an empty lladdr)', async () => {
    const h = await setup();
    await h.start();
    await h.push(added(peerLease(2)));
    const dev = h.dev();
    const [neigh, , route] = peerEntries(2, dev) as [DatapathEntry, DatapathEntry, DatapathEntry];

    h.dp.removeSilently(entryIdentity(neigh));
    h.dp.emit({ type: 'entry-deleted', entry: { kind: 'neigh', linkIndex: dev, ip: ip(peerGateway(2)), mac: '' } });
    await vi.waitFor(() => expect(h.dp.entry(entryIdentity(neigh))).toEqual(neigh));

    h.dp.removeSilently(entryIdentity(route));
    h.dp.emit({ type: 'entry-deleted', entry: { kind: 'route', dst: net(peerNet(2)) } });
    await vi.waitFor(() => expect(h.dp.entry(entryIdentity(route))).toEqual(route));

    expect(h.kernel()).toEqual(described(peerEntries(2, dev)));
  });

  it('ignores deletion notices for entries nobody wants or that lie outside the scope', async () => {
    const h = await setup();
    const eth0Neigh: DatapathEntry = { kind: 'neigh', linkIndex: h.eth0.index, ip: ip('172.16.0.1'), mac: '52:54:00:00:00:01' };
    h.dp.put(eth0Neigh);
    await h.start();
    await h.push(added(peerLease(2)));

    h.dp.deleteEntryBehindOurBack(entryIdentity(eth0Neigh));
    h.dp.emit({ type: 'entry-deleted', entry: peerEntries(8, h.dev())[0] as DatapathEntry });
    // A notice that is handled afterwards proves the two above went through the loop.
    const [neigh] = peerEntries(2, h.dev()) as [DatapathEntry];
    h.dp.deleteEntryBehindOurBack(entryIdentity(neigh));
    await vi.waitFor(() => expect(h.dp.entry(entryIdentity(neigh))).toEqual(neigh));

    expect(h.dp.changeCount).toBe(3 + 1);
    expect(h.dp.entry(entryIdentity(eth0Neigh))).toBeUndefined();
  });

  it('re-creates a deleted device and replays every peer against the new device index', async () => {
    const h = await setup();
    const eth0Neigh: DatapathEntry = { kind: 'neigh', linkIndex: h.eth0.index, ip: ip('172.16.0.1'), mac: '52:54:00:00:00:01' };
    h.dp.put(eth0Neigh);
    const veth = h.dp.addLink({ name: 'veth0' });
    await h.start();
    await h.push(added(peerLease(2), peerLease(3), peerLease(4)));
    const oldDev = h.dev();

    h.dp.deleteLinkBehindOurBack(veth.index); // not ours: ignored
    h.dp.deleteLinkBehindOurBack('flannel.1');

    await vi.waitFor(() => expect(h.dp.entries).toHaveLength(10));
    const newDev = h.dev();
    expect(newDev).not.toBe(oldDev);
    expect(h.ensureCalls()).toBe(2);
    expect(h.kernel()).toEqual(described([eth0Neigh, ...peerEntries(2, newDev), ...peerEntries(3, newDev), ...peerEntries(4, newDev)]));
    expect(h.dp.links.find((l) => l.name === 'flannel.1')?.index).toBe(newDev);
    expect(h.logged(WARN, 'device removed behind our back; re-creating it')).toEqual([expect.objectContaining({ device: 'flannel.1' })]);

    // Later lease events use the new device too.
    await h.push(removed(peerLease(3)));
    expect(h.kernel()).toEqual(described([eth0Neigh, ...peerEntries(2, newDev), ...peerEntries(4, newDev)]));
  });

  it('survives a failed device re-creation: logs it once, retries with backoff on the clock, then replays every peer', async () => {
    const h = await setup();
    await h.start();
    await h.push(added(peerLease(2), peerLease(3)));
    const errors = (): LogLine[] => h.logged(ERROR, 'cannot set up devices; will retry');
    h.failEnsure(2);

    h.dp.deleteLinkBehindOurBack('flannel.1');
    await vi.waitFor(() => expect(errors()).toHaveLength(1));
    expect(errors()[0]).toMatchObject({ why: 'flannel.1 removed', err: expect.stringContaining('EBUSY'), retryInMs: 1000 });
    expect(h.dp.entries).toEqual([]);

    // First retry after 1 s (upstream's backoff start): it fails the same way, which is not logged again.
    await vi.waitFor(() => expect(h.clock.pending).toBe(2));
    h.clock.advance(1000);
    await vi.waitFor(() => expect(h.ensureCalls()).toBe(3));
    expect(errors()).toHaveLength(1);
    expect(h.outcome()).toBeUndefined();

    // Second retry after 2 more seconds succeeds and replays every peer against the new device.
    await vi.waitFor(() => expect(h.clock.pending).toBe(2));
    h.clock.advance(2000);
    await vi.waitFor(() => expect(h.ensureCalls()).toBe(4));
    const dev = h.dev();
    await vi.waitFor(() => expect(h.kernel()).toEqual(described([...peerEntries(2, dev), ...peerEntries(3, dev)])));
    await h.push(added(peerLease(4)));
    expect(h.kernel()).toEqual(described([...peerEntries(2, dev), ...peerEntries(3, dev), ...peerEntries(4, dev)]));
  });

  it('retries devices that could not be set up at start before the first snapshot is applied', async () => {
    const h = await setup();
    h.failEnsure(1);
    await h.start();
    expect(h.logged(ERROR, 'cannot set up devices; will retry')).toEqual([expect.objectContaining({ why: 'start' })]);

    await h.push(added(peerLease(2)));

    expect(h.ensureCalls()).toBe(2);
    expect(h.kernel()).toEqual(described(peerEntries(2, h.dev())));
  });

  it('repairs silent drift on the periodic resync, in one apply, and leaves a converged kernel alone', async () => {
    const h = await setup();
    await h.start();
    await h.push(added(peerLease(2), peerLease(3)));
    const dev = h.dev();
    const want = h.kernel();

    const [, fdb3] = peerEntries(3, dev) as [DatapathEntry, DatapathEntry];
    h.dp.removeSilently(entryIdentity(fdb3));
    h.dp.put({ kind: 'route', dst: net(peerNet(2)), via: ip('172.16.0.99') }); // changed under us
    h.dp.put(...peerEntries(40, dev)); // someone's leftovers inside our scope
    await h.resync();

    expect(h.kernel()).toEqual(want);
    expect(h.dp.applyCalls).toBe(2);
    expect(h.seen.resynced.at(-1)?.[1]).toBe(5);
    expect(h.logged(INFO, 'datapath drifted from the leases; converging').at(-1)).toMatchObject({ why: 'periodic', changes: 5 });

    await h.resync();
    expect(h.dp.applyCalls).toBe(2);
    expect(h.seen.resynced.at(-1)?.[1]).toBe(0);
  });

  it('resyncs fully when the notification socket overran', async () => {
    const h = await setup();
    await h.start();
    await h.push(added(peerLease(2)));
    const want = h.kernel();
    const [neigh] = peerEntries(2, h.dev()) as [DatapathEntry];

    h.dp.removeSilently(entryIdentity(neigh));
    h.dp.emit({ type: 'overrun' });

    await vi.waitFor(() => expect(h.kernel()).toEqual(want));
    expect(h.logged(INFO, 'datapath drifted from the leases; converging').at(-1)).toMatchObject({ why: 'netlink notifications overran' });
  });

  it('reports a failed notification stream, reopens it after a second and resyncs for what it missed', async () => {
    const h = await setup();
    const failures: string[] = [];
    h.observe({ streamFailed: (stream, err) => void failures.push(`${stream}: ${err}`) });
    await h.start();
    await h.push(added(peerLease(2), peerLease(3)));
    const want = h.kernel();
    const [neigh2] = peerEntries(2, h.dev()) as [DatapathEntry];

    h.dp.failEvents(new Error('socket closed'));
    await vi.waitFor(() => expect(failures).toEqual(['kernel-notifications: socket closed']));
    expect(h.logged(ERROR, 'input stream failed')).toEqual([expect.objectContaining({ stream: 'kernel-notifications', err: 'socket closed' })]);
    h.dp.removeSilently(entryIdentity(neigh2));

    await vi.waitFor(() => expect(h.clock.pending).toBe(2));
    h.clock.advance(1000);
    await vi.waitFor(() => expect(h.kernel()).toEqual(want));
    expect(h.dp.eventSubscribers).toBe(1);
    expect(h.logged(INFO, 'datapath drifted from the leases; converging').at(-1)).toMatchObject({ why: 'kernel notifications reopened', changes: 1 });

    // The reopened stream carries deletions again.
    const [, , route3] = peerEntries(3, h.dev()) as [DatapathEntry, DatapathEntry, DatapathEntry];
    h.dp.deleteEntryBehindOurBack(entryIdentity(route3));
    await vi.waitFor(() => expect(h.kernel()).toEqual(want));
  });

  it('reports a lease stream that fails and keeps the entries it has', async () => {
    const h = await setup();
    const failures: string[] = [];
    h.observe({ streamFailed: (stream, err) => void failures.push(`${stream}: ${err}`) });
    await h.start();
    await h.push(added(peerLease(2)));
    const want = h.kernel();

    h.subnets.failLeases(new Error('etcd watch cancelled'));
    await vi.waitFor(() => expect(failures).toEqual(['leases: etcd watch cancelled']));
    expect(h.kernel()).toEqual(want);
  });
});

describe('runPeerReconciler: failures', () => {
  it('retries a failing entry on a 1 s doubling backoff, logs it once per errno, and logs the recovery', async () => {
    const h = await setup();
    const route2 = entryIdentity(peerEntries(2, h.dev())[2] as DatapathEntry);
    h.dp.failEntry(route2, 'ENETUNREACH', { op: 'replace' });
    await h.start();
    await h.push(added(peerLease(2), peerLease(3)));
    const errors = (): LogLine[] => h.logged(ERROR, 'cannot program entry');
    /** Advances to the next retry and waits until it has run. */
    const retryAfter = async (ms: number): Promise<void> => {
      const before = h.seen.resynced.length;
      h.clock.advance(ms - 1);
      await new Promise((r) => setTimeout(r, 10));
      expect(h.seen.resynced.length).toBe(before); // not a moment early
      h.clock.advance(1);
      await vi.waitFor(() => expect(h.seen.resynced.length).toBe(before + 1));
    };

    expect(errors()).toEqual([
      expect.objectContaining({ entry: `route ${peerNet(2)} via ${peerGateway(2)} dev#${h.dev()} onlink`, err: 'ENETUNREACH' }),
    ]);
    expect(h.dp.entries).toHaveLength(5);

    await retryAfter(1000);
    await retryAfter(2000);
    expect(h.dp.applyCalls).toBe(3); // retried each time...
    expect(errors()).toHaveLength(1); // ...but logged once
    expect(h.seen.repaired).toEqual([]); // a retry is not drift

    h.dp.failEntry(route2, 'EINVAL', { op: 'replace' });
    await retryAfter(4000);
    expect(errors()).toHaveLength(2);
    expect(errors()[1]).toMatchObject({ err: 'EINVAL' });

    h.dp.clearFailures();
    await retryAfter(8000);
    expect(h.dp.entries).toHaveLength(6);
    expect(h.logged(INFO, 'entry programmed after earlier failures')).toEqual([
      expect.objectContaining({ entry: `route ${peerNet(2)} via ${peerGateway(2)} dev#${h.dev()} onlink` }),
    ]);

    // Nothing failing: no retry armed, only the periodic resync, which changes nothing.
    await h.resync();
    expect(errors()).toHaveLength(2);
    expect(h.logged(INFO, 'entry programmed after earlier failures')).toHaveLength(1);
  });

  it('takes ESRCH and ENOENT on a delete as success', async () => {
    const h = await setup();
    await h.start();
    await h.push(added(peerLease(2), peerLease(3)));
    for (const entry of peerEntries(2, h.dev())) h.dp.removeSilently(entryIdentity(entry));
    const apply = vi.spyOn(h.dp, 'apply');

    await h.push(removed(peerLease(2)));
    const report = await (apply.mock.results[0]?.value as Promise<ApplyReport>);
    expect(report.failures.map((f) => `${f.change.op} ${f.change.entry.kind}: ${f.errno}`)).toEqual([
      'delete route: ESRCH',
      'delete fdb: ENOENT',
      'delete neigh: ENOENT',
    ]);

    await h.push(added(peerLease(2)));
    expect(h.lines.filter((l) => l.level >= WARN)).toEqual([]);
    expect(h.logged(INFO, 'entry programmed after earlier failures')).toEqual([]);
    expect(h.kernel()).toEqual(described([...peerEntries(2, h.dev()), ...peerEntries(3, h.dev())]));
  });
});

describe('runPeerReconciler: entries owned by more than one peer, and routes held by others', () => {
  it("keeps an entry two peers want until neither does, and never lets a second peer overwrite the first's values", async () => {
    const h = await setup();
    await h.start();
    const first = peerLease(2, '0e:00:00:00:00:aa');
    // Same MAC (the guard refuses this upstream of here; the reconciler must still never drop the first's entry).
    const second: Lease = { ...peerLease(3, '0e:00:00:00:00:aa'), attrs: { ...peerLease(3).attrs, publicIP: ip('172.16.7.7'), backendData: { VNI: 1, VtepMAC: '0e:00:00:00:00:aa' } } };
    await h.push(added(first, second));
    const fdbOf = (): string[] => h.kernel().filter((e) => e.startsWith('fdb '));
    expect(fdbOf()).toEqual([`fdb 0e:00:00:00:00:aa dst ${peerPublic(2)} dev#${h.dev()}`]);
    expect(h.lines.filter((l) => l.msg.startsWith('peer wants an entry another live peer holds'))).toHaveLength(1);
    await h.push(removed(second));
    expect(fdbOf()).toEqual([`fdb 0e:00:00:00:00:aa dst ${peerPublic(2)} dev#${h.dev()}`]);
    await h.push(removed(first));
    expect(fdbOf()).toEqual([]);
  });

  it("reports a route the kernel holds for someone else (EEXIST) as that peer's collision, without failing readiness", async () => {
    const h = await setup();
    const problems: (string | undefined)[] = [];
    const collided: ReadonlyMap<string, string>[] = [];
    const route2 = entryIdentity(peerEntries(2, h.dev())[2] as DatapathEntry);
    h.dp.failEntry(route2, 'EEXIST', { op: 'replace' });
    h.observe({ programmed: (p) => void problems.push(p), collisions: (m) => void collided.push(m) });
    await h.start();
    await h.push(added(peerLease(2), peerLease(3)));
    expect(problems.at(-1)).toBeUndefined();
    expect([...(collided.at(-1) ?? new Map()).keys()]).toEqual([`${peerNet(2).replace('/', '-')}`]);
    expect(h.lines.filter((l) => l.level === WARN && l.msg.startsWith('peer refused:'))).toHaveLength(1);
    h.dp.clearFailures();
    await h.resync();
    expect([...(collided.at(-1) ?? new Map()).keys()]).toEqual([]);
  });

  it("names the entry and the peer when this node's own programming fails", async () => {
    const h = await setup();
    const problems: (string | undefined)[] = [];
    h.observe({ programmed: (p) => void problems.push(p) });
    h.dp.failEntry(entryIdentity(peerEntries(2, h.dev())[2] as DatapathEntry), 'EINVAL', { op: 'replace' });
    await h.start();
    await h.push(added(peerLease(2)));
    expect(problems.at(-1)).toBe(`1 datapath entries cannot be programmed, e.g. route ${peerNet(2)} via ${peerGateway(2)} dev#${h.dev()} onlink for peer ${peerNet(2).replace('/', '-')}: EINVAL`);
  });
});

describe('runPeerReconciler: lifecycle and observer', () => {
  it('ends cleanly on abort, releasing the lease watch, the event subscription and the timer', async () => {
    const h = await setup();
    await h.start();
    await h.push(added(peerLease(2)));

    h.abort.abort();

    await vi.waitFor(() => expect(h.outcome()).toEqual({ resolved: true }));
    expect(h.subnets.leaseWatchers).toBe(0);
    expect(h.dp.eventSubscribers).toBe(0);
    expect(h.clock.pending).toBe(0);
    expect(h.kernel()).toEqual(described(peerEntries(2, h.dev()))); // entries stay for the next run
  });

  it('ends cleanly on an abort before the first snapshot', async () => {
    const h = await setup();
    await h.start();
    h.abort.abort();
    await vi.waitFor(() => expect(h.outcome()).toEqual({ resolved: true }));
    expect(h.dp.applyCalls).toBe(0);
  });

  it('reports applies, repairs, resyncs, peer counts and when each lease batch arrived', async () => {
    const h = await setup();
    // Each apply takes 7 ms on the manual clock.
    const realApply = h.dp.apply.bind(h.dp);
    vi.spyOn(h.dp, 'apply').mockImplementation((changes) => {
      h.clock.advance(7);
      return realApply(changes);
    });
    await h.start();
    const t0 = h.clock.now();

    h.clock.advance(1000);
    await h.push(added(peerLease(2), peerLease(3)));
    expect(h.seen.leaseBatchApplied).toEqual([t0 + 1000]);
    expect(h.seen.applied).toEqual([[6, 7]]);
    // Programming the first snapshot is not drift: no repairs, drift 0.
    expect(h.seen.resynced).toEqual([[7, 0]]);
    expect(h.seen.repaired).toEqual([]);
    expect(h.seen.peers.at(-1)).toBe(2);

    h.clock.advance(500);
    const arrived = h.clock.now();
    await h.push(removed(peerLease(3)));
    expect(h.seen.leaseBatchApplied).toEqual([t0 + 1000, arrived]);
    expect(h.seen.applied.at(-1)).toEqual([3, 7]);
    expect(h.seen.peers.at(-1)).toBe(1);
    expect(h.seen.resynced).toHaveLength(1); // incremental, no resync

    h.seen.repaired.length = 0;
    h.dp.deleteEntryBehindOurBack(entryIdentity(peerEntries(2, h.dev())[1] as DatapathEntry));
    await vi.waitFor(() => expect(h.seen.repaired).toEqual([['fdb', 1]]));

    h.dp.removeSilently(entryIdentity(peerEntries(2, h.dev())[0] as DatapathEntry));
    await h.resync();
    expect(h.seen.repaired).toEqual([['fdb', 1], ['neigh', 1]]);
    expect(h.seen.resynced.at(-1)).toEqual([7, 1]);
  });
});
