/**
 * The kube subnet manager's policy against an in-memory NodeApi on a manual clock: how it waits for node IPAM, what
 * it publishes per address family, how it retries the NetworkUnavailable condition, what renewal re-publishes, and
 * how the node watch turns into lease batches across server timeouts, dropped connections, 410 Gone and failing
 * lists. The HTTP-level behaviour (paging, patch content type, client-node errors) is in kube-subnet-manager.test.ts.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { formatIp, parseIPv4, parseIPv6 } from '../../../../flanneld/ip/address.js';
import { formatCidr } from '../../../../flanneld/ip/cidr.js';
import type { LeaseAttrs, LeaseEvent } from '../../../../flanneld/lease/lease.js';
import { FlannelError } from '../../../../flanneld/runtime/errors.js';
import { seededRandom } from '../../../../flanneld/runtime/random.js';
import { annotationNames } from '../../../../flanneld/subnet/kube/annotations.js';
import { KubeSubnetManager, waitForNodeName } from '../../../../flanneld/subnet/kube/kube-subnet-manager.js';
import { WatchGoneError } from '../../../../flanneld/subnet/kube/node-api.js';
import { ManualClock } from '../../../helpers/manual-clock.js';
import { MemoryNodeApi } from '../../../helpers/memory-node-api.js';
import { memoryLog, type LogLine } from '../../../helpers/test-log.js';

const P = 'flannel.alpha.coreos.com/';
const NET_CONF = '/etc/kube-flannel/net-conf.json';
const NET_CONFS = {
  ipv4: '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}',
  dual: '{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"2001:db8:a::/48","Backend":{"Type":"vxlan"}}',
  ipv6: '{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"2001:db8:a::/48","Backend":{"Type":"vxlan"}}',
} as const;
type Family = keyof typeof NET_CONFS;

const attrs: LeaseAttrs = {
  backendType: 'vxlan',
  publicIP: parseIPv4('192.0.2.1')!,
  backendData: { VNI: 1, VtepMAC: 'aa:aa:aa:aa:aa:01' },
  publicIPv6: parseIPv6('2001:db8:2::1')!,
  backendV6Data: { VNI: 1, VtepMAC: 'aa:aa:aa:aa:06:01' },
};
const peer = (ip: string): Record<string, string> => ({
  [`${P}kube-subnet-manager`]: 'true',
  [`${P}backend-type`]: 'vxlan',
  [`${P}backend-data`]: '{"VNI":1,"VtepMAC":"aa:aa:aa:aa:aa:02"}',
  [`${P}public-ip`]: ip,
});

const stops: AbortController[] = [];
afterEach(() => {
  for (const s of stops.splice(0)) s.abort();
});

function setup(opts: { family?: Family; setNodeNetworkUnavailable?: boolean; readFile?: (path: string) => Promise<string> } = {}) {
  const api = new MemoryNodeApi();
  const clock = new ManualClock();
  const { log, lines } = memoryLog();
  const reads: string[] = [];
  const watchStates: boolean[] = [];
  const manager = new KubeSubnetManager({
    api,
    nodeName: 'n1',
    annotations: annotationNames('flannel.alpha.coreos.com'),
    netConfPath: NET_CONF,
    readFile: opts.readFile ?? (async (path) => {
      reads.push(path);
      return NET_CONFS[opts.family ?? 'ipv4'];
    }),
    setNodeNetworkUnavailable: opts.setNodeNetworkUnavailable ?? true,
    clock,
    random: seededRandom(11),
    log,
    onWatchState: (up) => void watchStates.push(up),
  });
  const stop = new AbortController();
  stops.push(stop);
  return { api, clock, lines, reads, watchStates, manager, signal: stop.signal, stop };
}

/** Lets queued promise reactions run, one macrotask turn at a time, until `probe` holds (bounded, no timers). */
async function until<T>(what: string, probe: () => T | undefined | false): Promise<T> {
  for (let turn = 0; turn < 200; turn++) {
    const value = probe();
    if (value !== undefined && value !== false) return value;
    await new Promise((resolve) => setImmediate(resolve));
  }
  throw new Error(`never happened: ${what}`);
}

/** Waits until something sleeps on the clock and returns how long it asked for. */
async function parkedFor(clock: ManualClock): Promise<number> {
  const deadline = await until('a sleep on the clock', () => clock.nextDeadline());
  return deadline - clock.now();
}

/** Lets `count` sleeps on the clock run out one after another; returns how long each one was. */
async function sleeps(clock: ManualClock, count: number): Promise<number[]> {
  const delays: number[] = [];
  for (let i = 0; i < count; i++) {
    const ms = await parkedFor(clock);
    delays.push(ms);
    clock.advance(ms);
  }
  return delays;
}

/** Each delay is its base give or take `jitter` (a fraction), as Backoff spreads them. */
function expectBackoff(delays: readonly number[], bases: readonly number[], jitter: number): void {
  expect(delays).toHaveLength(bases.length);
  for (const [i, base] of bases.entries()) expect(Math.abs(delays[i]! - base)).toBeLessThanOrEqual(base * jitter);
}

const logged = (lines: readonly LogLine[], pattern: RegExp): LogLine[] => lines.filter((l) => pattern.test(l.msg));

/** Every batch watchLeases yields, described as "added|removed <subnet> <public ip>", collected in the background. */
function collect(manager: KubeSubnetManager, signal: AbortSignal): string[][] {
  const batches: string[][] = [];
  const describeEvent = (e: LeaseEvent): string => `${e.type} ${formatCidr(e.lease.subnet!)} ${formatIp(e.lease.attrs.publicIP!)}`;
  void (async () => {
    for await (const batch of manager.watchLeases(signal)) batches.push(batch.map(describeEvent).sort());
  })().catch(() => undefined);
  return batches;
}

describe('KubeSubnetManager.acquireLease', () => {
  it('polls once a second while the Node is missing or has no podCIDR, and takes the one node IPAM sets', async () => {
    const { api, clock, lines, manager, signal } = setup();
    const start = clock.now();
    const acquiring = manager.acquireLease({ attrs }, signal);
    expect(await parkedFor(clock)).toBe(1000);
    clock.advance(999);
    await until('no early poll', () => clock.pending === 1);
    expect(api.count('getNode')).toBe(1);
    api.setNode('n1');
    for (let poll = 2; poll <= 4; poll++) {
      clock.advance(1000 - (clock.now() - start) % 1000);
      await until(`poll ${poll}`, () => api.count('getNode') === poll && clock.pending === 1);
    }
    api.setNode('n1', { podCIDRs: ['10.244.7.0/24'] });
    clock.advance(1000);
    const lease = await acquiring;
    expect(formatCidr(lease.subnet!)).toBe('10.244.7.0/24');
    expect(clock.now() - start).toBe(4000);
    expect(api.count('getNode')).toBe(5);
    // One message per state, not one per poll.
    expect(logged(lines, /does not exist in the API yet/)).toHaveLength(1);
    expect(logged(lines, /has no spec.podCIDR yet/)).toHaveLength(1);
    expect(api.count('patchNodeStatus')).toBe(1);
  });

  it('stops waiting when its signal aborts, having published nothing', async () => {
    const { api, clock, manager, signal, stop } = setup();
    api.setNode('n1');
    const acquiring = manager.acquireLease({ attrs }, signal);
    await parkedFor(clock);
    stop.abort();
    await expect(acquiring).rejects.toThrow(/abort/i);
    expect(api.patches).toEqual([]);
  });

  it.each([
    ['ipv4', ['10.244.1.0/24'], '10.244.1.0/24', undefined, [`${P}backend-data`, `${P}public-ip`]],
    ['dual', ['10.244.1.0/24', '2001:db8:a:1::/64'], '10.244.1.0/24', '2001:db8:a:1::/64', [`${P}backend-data`, `${P}public-ip`, `${P}backend-v6-data`, `${P}public-ipv6`]],
    ['ipv6', ['2001:db8:a:1::/64'], undefined, '2001:db8:a:1::/64', [`${P}backend-v6-data`, `${P}public-ipv6`]],
  ] as const)('%s: takes a subnet per enabled family and publishes only that family\'s annotations', async (family, podCIDRs, v4, v6, familyKeys) => {
    const { api, manager, reads, signal } = setup({ family });
    api.setNode('n1', { podCIDRs, annotations: { 'example.com/other': 'kept' } });
    const lease = await manager.acquireLease({ attrs }, signal);
    expect([lease.subnet && formatCidr(lease.subnet), lease.ipv6Subnet && formatCidr(lease.ipv6Subnet)]).toEqual([v4, v6]);
    expect(api.patches).toHaveLength(1);
    const published = (api.patches[0]!.patch as { metadata: { annotations: Record<string, string> } }).metadata.annotations;
    expect(Object.keys(published).sort()).toEqual([`${P}kube-subnet-manager`, `${P}backend-type`, ...familyKeys].sort());
    expect(published).toMatchObject({ [`${P}kube-subnet-manager`]: 'true', [`${P}backend-type`]: 'vxlan' });
    if (v4) expect(published[`${P}public-ip`]).toBe('192.0.2.1');
    if (v6) expect(published[`${P}backend-v6-data`]).toBe('{"VNI":1,"VtepMAC":"aa:aa:aa:aa:06:01"}');
    expect(api.node('n1')?.annotations['example.com/other']).toBe('kept');
    await manager.getNetworkConfig();
    expect(reads).toEqual([NET_CONF]);
  });

  it('names the net-conf path when it cannot be read, before asking the API anything', async () => {
    const { api, manager, signal } = setup({
      readFile: async () => {
        throw new Error('ENOENT: no such file or directory');
      },
    });
    await expect(manager.acquireLease({ attrs }, signal)).rejects.toMatchObject({
      code: 'ERR_CONFIG_NOT_FOUND',
      message: `failed to read net conf ${NET_CONF}: ENOENT: no such file or directory`,
    });
    expect(api.calls).toEqual([]);
  });
});

describe('KubeSubnetManager.completeLease', () => {
  it('sets NetworkUnavailable=False on nodes/status with the clock\'s time, once', async () => {
    const { api, clock, manager, signal } = setup();
    api.setNode('n1', { podCIDRs: ['10.244.1.0/24'] });
    const lease = await manager.acquireLease({ attrs }, signal);
    clock.advance(1234);
    await manager.completeLease(lease, signal);
    expect(api.patches).toHaveLength(2);
    expect(api.conditions.get('n1')).toEqual([{
      type: 'NetworkUnavailable', status: 'False', reason: 'FlannelIsUp', message: 'Flannel is running on this node',
      lastTransitionTime: '2026-01-01T00:00:01Z', lastHeartbeatTime: '2026-01-01T00:00:01Z',
    }]);
  });

  it('does nothing without --set-node-network-unavailable', async () => {
    const { api, manager, signal } = setup({ setNodeNetworkUnavailable: false });
    await manager.completeLease({ attrs, reservation: false }, signal);
    expect(api.calls).toEqual([]);
  });

  it('retries a refused patch 1 s doubling to 30 s (±10 %), then stops once it succeeds', async () => {
    const { api, clock, lines, manager, signal } = setup();
    api.setNode('n1', { podCIDRs: ['10.244.1.0/24'] });
    api.failNext('patchNodeStatus', new Error('patch node n1 status: HTTP 403: forbidden'), 7);
    const completing = manager.completeLease({ attrs, reservation: false }, signal);
    expectBackoff(await sleeps(clock, 7), [1000, 2000, 4000, 8000, 16_000, 30_000, 30_000], 0.1);
    await completing;
    expect(api.count('patchNodeStatus')).toBe(8);
    expect(api.conditions.get('n1')?.[0]).toMatchObject({ status: 'False' });
    expect(logged(lines, /cannot set the NetworkUnavailable condition; retrying/)).toHaveLength(7);
    expect(clock.pending).toBe(0);
  });

  it('gives up quietly when stopped during the backoff', async () => {
    const { api, clock, manager, signal, stop } = setup();
    api.failNext('patchNodeStatus', new Error('connect ECONNREFUSED'), 100);
    const completing = manager.completeLease({ attrs, reservation: false }, signal);
    await parkedFor(clock);
    stop.abort();
    await expect(completing).resolves.toBeUndefined();
    expect(api.count('patchNodeStatus')).toBe(1);
  });
});

describe('KubeSubnetManager.renewLease', () => {
  async function acquired() {
    const s = setup();
    s.api.setNode('n1', { podCIDRs: ['10.244.1.0/24'] });
    const lease = await s.manager.acquireLease({ attrs }, s.signal);
    s.api.patches.length = 0;
    return { ...s, lease };
  }

  it('re-publishes only what someone removed or changed, and nothing when all is in place', async () => {
    const { api, manager, lease } = await acquired();
    api.annotate('n1', { 'example.com/unrelated': 'x' });
    await manager.renewLease(lease);
    expect(api.patches).toEqual([]);
    api.annotate('n1', { [`${P}backend-type`]: null, [`${P}public-ip`]: '192.0.2.66' });
    await manager.renewLease(lease);
    expect(api.patches.map((p) => p.patch)).toEqual([{ metadata: { annotations: { [`${P}backend-type`]: 'vxlan', [`${P}public-ip`]: '192.0.2.1' } } }]);
  });

  it('fails as the store being unavailable when its Node is gone', async () => {
    const { api, manager, lease } = await acquired();
    api.deleteNode('n1');
    const renewing = manager.renewLease(lease);
    await expect(renewing).rejects.toBeInstanceOf(FlannelError);
    await expect(renewing).rejects.toMatchObject({ code: 'ERR_STORE_UNAVAILABLE' });
  });

  it('an operator setting public-ip-overwrite later wakes the own-lease watch, and renewal publishes that address', async () => {
    const { api, manager, lease, signal } = await acquired();
    collect(manager, signal);
    await until('the node watch', () => api.openWatches === 1);
    const own = manager.watchOwnLease(lease, signal)[Symbol.asyncIterator]();
    const woken = own.next();
    api.annotate('n1', { [`${P}public-ip-overwrite`]: '203.0.113.7' });
    await woken;
    await manager.renewLease(lease);
    expect(api.patches.map((p) => p.patch)).toEqual([{ metadata: { annotations: { [`${P}public-ip`]: '203.0.113.7' } } }]);
  });
});

describe('KubeSubnetManager.watchLeases', () => {
  it('yields one batch at start even when empty; a re-list that changes nothing yields none', async () => {
    const { api, manager, signal } = setup();
    const batches = collect(manager, signal);
    await until('the first batch', () => batches.length === 1);
    expect(batches).toEqual([[]]);
    await until('the watch', () => api.openWatches === 1);
    api.dropWatches(new WatchGoneError('410'));
    await until('the re-list', () => api.count('listNodes') === 2 && api.openWatches === 1);
    expect(batches).toEqual([[]]);
  });

  it('Nodes without the kube-subnet-manager annotation are no peers until they get it, and stop being peers when it goes', async () => {
    const { api, manager, signal } = setup();
    api.setNode('n2', { podCIDRs: ['10.244.2.0/24'], annotations: peer('192.0.2.2') });
    api.setNode('plain', { podCIDRs: ['10.244.3.0/24'], annotations: { ...peer('192.0.2.3'), [`${P}kube-subnet-manager`]: 'false' } });
    const batches = collect(manager, signal);
    await until('the first batch', () => batches[0]);
    expect(batches[0]).toEqual(['added 10.244.2.0/24 192.0.2.2']);
    api.annotate('plain', { 'example.com/touched': 'yes' });
    api.annotate('plain', { [`${P}kube-subnet-manager`]: 'true' });
    await until('plain joins', () => batches[1]);
    api.annotate('n2', { [`${P}kube-subnet-manager`]: null });
    await until('n2 leaves', () => batches[2]);
    expect(batches.slice(1)).toEqual([['added 10.244.3.0/24 192.0.2.3'], ['removed 10.244.2.0/24 192.0.2.2']]);
  });

  it('resumes a stream the server ended from the last version seen (bookmarks too), at once and without listing', async () => {
    const { api, clock, manager, signal } = setup();
    const batches = collect(manager, signal);
    await until('the watch', () => api.openWatches === 1);
    api.setNode('n2', { podCIDRs: ['10.244.2.0/24'], annotations: peer('192.0.2.2') });
    api.setNode('quiet', {});
    api.bookmark();
    await until('n2', () => batches[1]);
    api.endWatches();
    await until('the resumed watch', () => api.openWatches === 1);
    // The server's watch timeout: a stream it closes after a while with nothing in it is resumed at once too.
    clock.advance(60_000);
    api.endWatches();
    await until('the resumed watch', () => api.openWatches === 1);
    const watches = api.calls.filter((c) => c.method === 'watchNodes').map((c) => c.arg);
    expect(watches).toEqual(['1', '4', '4']);
    expect(api.count('listNodes')).toBe(1);
    expect(clock.pending).toBe(0);
  });

  // A watch that ends at once with no event used to be re-opened at once: a server or proxy that closes every watch
  // made the daemon hammer the API in a loop that never yielded to a timer.
  it('backs off when the server ends every watch as soon as it opens, instead of re-opening it in a tight loop', async () => {
    const { api, clock, manager, signal } = setup();
    api.endNextWatchesAtOnce(50);
    collect(manager, signal);
    await until('a pause, or the 50 closed watches used up', () => clock.pending > 0 || api.openWatches === 1);
    expect(api.count('watchNodes')).toBeLessThanOrEqual(2);
  });

  it('a dropped connection: reports down, backs off 100 ms doubling, resumes from its version, reports up on the first event', async () => {
    const { api, clock, lines, watchStates, manager, signal } = setup();
    const batches = collect(manager, signal);
    await until('the watch', () => api.openWatches === 1);
    expect(watchStates).toEqual([true]);
    api.failNext('watchNodes', new Error('watch nodes: ECONNREFUSED'), 2);
    api.dropWatches();
    expectBackoff(await sleeps(clock, 3), [100, 200, 400], 0.2);
    await until('the watch again', () => api.openWatches === 1);
    expect(watchStates).toEqual([true, false, false, false]);
    // A Node added while the connection was down arrives from the watch's own history, not from a re-list.
    api.setNode('n2', { podCIDRs: ['10.244.2.0/24'], annotations: peer('192.0.2.2') });
    await until('n2', () => batches[1]);
    expect(watchStates).toEqual([true, false, false, false, true]);
    expect(api.count('listNodes')).toBe(1);
    expect(logged(lines, /watching nodes failed; retrying/).map((l) => l['err'])).toEqual(['watch nodes: socket hang up', 'watch nodes: ECONNREFUSED']);
    expect(logged(lines, /reachable again/)).toHaveLength(1);
  });

  it('410 Gone: lists again at once and yields only the difference', async () => {
    const { api, clock, lines, manager, signal } = setup();
    api.setNode('n2', { podCIDRs: ['10.244.2.0/24'], annotations: peer('192.0.2.2') });
    api.setNode('n3', { podCIDRs: ['10.244.3.0/24'], annotations: peer('192.0.2.3') });
    const batches = collect(manager, signal);
    await until('the watch', () => api.openWatches === 1);
    api.dropWatches();
    await parkedFor(clock);
    api.deleteNode('n2');
    api.annotate('n3', { [`${P}public-ip`]: '192.0.2.33' });
    api.setNode('n4', { podCIDRs: ['10.244.4.0/24'], annotations: peer('192.0.2.4') });
    api.compact();
    clock.advance(await parkedFor(clock));
    await until('the re-list', () => batches[1]);
    expect(batches).toEqual([
      ['added 10.244.2.0/24 192.0.2.2', 'added 10.244.3.0/24 192.0.2.3'],
      ['added 10.244.3.0/24 192.0.2.33', 'added 10.244.4.0/24 192.0.2.4', 'removed 10.244.2.0/24 192.0.2.2'],
    ]);
    expect(api.count('listNodes')).toBe(2);
    expect(logged(lines, /410 Gone/)).toHaveLength(1);
  });

  it('a failing list is retried on the watch backoff up to 5 s, warned once per distinct error, reported down then up', async () => {
    const { api, clock, lines, watchStates, manager, signal } = setup();
    api.failNext('listNodes', new Error('list nodes: connect ECONNREFUSED'), 8);
    api.failNext('listNodes', new Error('list nodes: HTTP 503: unavailable'), 1);
    const batches = collect(manager, signal);
    expectBackoff(await sleeps(clock, 9), [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000], 0.2);
    await until('the first batch', () => batches[0]);
    expect(watchStates).toEqual([...Array(9).fill(false), true]);
    expect(logged(lines, /listing nodes failed/).map((l) => l['err'])).toEqual(['list nodes: connect ECONNREFUSED', 'list nodes: HTTP 503: unavailable']);
  });

  it('warns about a malformed peer once per reason, and again once it was fixed and broke anew', async () => {
    const { api, lines, manager, signal } = setup();
    api.setNode('bad', { podCIDRs: ['10.244.9.0/24'], annotations: { ...peer('192.0.2.9'), [`${P}public-ip`]: 'nonsense' } });
    const batches = collect(manager, signal);
    await until('the first batch', () => batches[0]);
    api.annotate('bad', { 'example.com/touched': '1' });
    api.annotate('bad', { [`${P}public-ip`]: '192.0.2.9', [`${P}backend-data`]: '{not json' });
    api.annotate('bad', { 'example.com/touched': '2' });
    api.annotate('bad', { [`${P}backend-data`]: '{}' });
    await until('the fixed peer', () => batches[1]);
    api.annotate('bad', { [`${P}public-ip`]: 'nonsense' });
    await until('the broken peer removed', () => batches[2]);
    const reasons = logged(lines, /do not parse/).map((l) => String(l['reason']));
    expect(reasons).toHaveLength(3);
    expect(reasons[0]).toMatch(/public-ip is not an address: "nonsense"/);
    expect(reasons[1]).toMatch(/backend-data is not JSON/);
    expect(reasons[2]).toMatch(/public-ip is not an address: "nonsense"/);
    expect(batches.slice(1)).toEqual([['added 10.244.9.0/24 192.0.2.9'], ['removed 10.244.9.0/24 192.0.2.9']]);
  });
});

describe('KubeSubnetManager: addresses the operator stored on the Node', () => {
  it('reads node-public-ip and node-public-ipv6, ignoring (with a warning) one that is not an address of its family', async () => {
    const { api, lines, manager } = setup();
    expect(await manager.storedPublicIPs()).toEqual({});
    api.setNode('n1', { annotations: { [`${P}node-public-ip`]: '198.51.100.9', [`${P}node-public-ipv6`]: '2001:db8::9' } });
    const both = await manager.storedPublicIPs();
    expect([formatIp(both.publicIP!), formatIp(both.publicIPv6!)]).toEqual(['198.51.100.9', '2001:db8::9']);
    api.annotate('n1', { [`${P}node-public-ip`]: '2001:db8::9' });
    expect(Object.keys(await manager.storedPublicIPs())).toEqual(['publicIPv6']);
    expect(logged(lines, /not an address/).map((l) => l['annotation'])).toEqual([`${P}node-public-ip`]);
  });
});

describe('waitForNodeName', () => {
  it('asks again on 1 s doubling while the pod cannot be read, and fails at once on a bad environment', async () => {
    const { api, clock } = setup();
    const { log, lines } = memoryLog();
    const env = { POD_NAME: 'kube-flannel-ds-x7k2p', POD_NAMESPACE: 'kube-flannel' };
    const deps = { clock, random: seededRandom(5), log };
    api.addPod('kube-flannel', 'kube-flannel-ds-x7k2p', 'worker-3');
    api.failNext('getPodNodeName', new Error('get pod kube-flannel/kube-flannel-ds-x7k2p: connect ECONNREFUSED'), 3);
    const found = waitForNodeName(env, api, deps, new AbortController().signal);
    expectBackoff(await sleeps(clock, 3), [1000, 2000, 4000], 0.1);
    expect(await found).toBe('worker-3');
    expect(api.count('getPodNodeName')).toBe(4);
    await expect(waitForNodeName({ POD_NAME: 'x' }, api, deps, new AbortController().signal)).rejects.toMatchObject({ code: 'ERR_CONFIG_INVALID' });
    expect(logged(lines, /cannot find the node name yet; retrying/)).toHaveLength(3);
  });
});
