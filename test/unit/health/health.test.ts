import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { parseIPv4, parseIp } from '../../../flanneld/ip/address.js';
import { parseCidr } from '../../../flanneld/ip/cidr.js';
import type { Lease } from '../../../flanneld/lease/lease.js';
import { DaemonStatus } from '../../../flanneld/health/daemon-status.js';
import { listenHosts, startHealthServer, type HealthServer } from '../../../flanneld/health/health-server.js';
import { LoopMonitor } from '../../../flanneld/health/loop-monitor.js';
import { Readiness } from '../../../flanneld/health/readiness.js';
import { createMetrics, reconcilerMetrics } from '../../../flanneld/metrics/metrics.js';
import type { SessionStatus } from '../../../flanneld/bgp/bgp-session.js';
import { parseStatusArgs, renderStatus } from '../../../flanneld/status/status-command.js';
import { ManualClock } from '../../helpers/manual-clock.js';
import { testLog } from '../../helpers/test-log.js';

const peer = (n: number): Lease => ({
  subnet: parseCidr(`10.244.${n}.0/24`)!,
  attrs: { publicIP: parseIPv4(`192.0.2.${n}`)!, backendType: 'vxlan', backendData: { VNI: 1, VtepMAC: `aa:aa:aa:aa:aa:0${n}` } },
  reservation: false,
});

describe('loop monitor', () => {
  it('reports a loop stalled once it has not beaten for more than twice its period, naming it', () => {
    const clock = new ManualClock();
    const loops = new LoopMonitor(clock);
    loops.register('traffic-rules', 5000);
    loops.register('datapath-reconciler', 60_000);
    clock.advance(10_000);
    expect(loops.stalled()).toEqual([]);
    clock.advance(1);
    expect(loops.stalled()).toEqual(['traffic-rules stalled: no progress for 10 s (period 5 s)']);
    loops.beat('traffic-rules');
    expect(loops.stalled()).toEqual([]);
    clock.advance(120_001);
    expect(loops.stalled()).toEqual([
      'traffic-rules stalled: no progress for 120 s (period 5 s)',
      'datapath-reconciler stalled: no progress for 130 s (period 60 s)',
    ]);
  });

  it('counts a watch alive while it is connected or retrying, and stalled when it does neither', () => {
    const clock = new ManualClock();
    const loops = new LoopMonitor(clock);
    loops.register('lease-watcher', 30_000);
    loops.setUp('lease-watcher', true);
    clock.advance(3_600_000);
    expect(loops.stalled()).toEqual([]);
    loops.setUp('lease-watcher', false);
    clock.advance(50_000);
    loops.setUp('lease-watcher', false);
    clock.advance(50_000);
    expect(loops.stalled()).toEqual([]);
    clock.advance(10_001);
    expect(loops.stalled()).toEqual(['lease-watcher stalled: no progress for 60 s (period 30 s)']);
    loops.unregister('lease-watcher');
    expect(loops.stalled()).toEqual([]);
  });

  it('reports a supervised process down at once, with its reason, until it is back', () => {
    const loops = new LoopMonitor(new ManualClock());
    loops.processDown('device flannel-wg', 'wireguard-go for flannel-wg (pid 7) was killed by SIGKILL');
    expect(loops.stalled()).toEqual(['device flannel-wg down: wireguard-go for flannel-wg (pid 7) was killed by SIGKILL']);
    loops.processDown('device flannel-wg', undefined);
    expect(loops.stalled()).toEqual([]);
  });
});

describe('readiness', () => {
  it('starts unready, flips with each condition and keeps every reason', () => {
    const readiness = new Readiness();
    const flips: boolean[] = [];
    readiness.onChange((r) => flips.push(r));
    expect(readiness.reasons()).toEqual(['subnet.env not written yet']);
    readiness.set('started', undefined);
    expect(readiness.ready()).toBe(true);
    readiness.set('datapath', '2 datapath entries cannot be programmed');
    readiness.set('lease', 'lease lost: taken by 192.0.2.9');
    expect(readiness.reasons()).toEqual(['2 datapath entries cannot be programmed', 'lease lost: taken by 192.0.2.9']);
    readiness.set('datapath', undefined);
    readiness.set('lease', undefined);
    expect(flips).toEqual([true, false, true]);
  });
});

describe('health server', () => {
  let server: HealthServer | undefined;
  afterEach(async () => server?.close());

  it('serves /healthz, /readyz, /metrics and /status from the injected views', async () => {
    const clock = new ManualClock();
    const loops = new LoopMonitor(clock);
    const readiness = new Readiness();
    const registry = new Registry();
    const metrics = createMetrics(registry, { processMetrics: false });
    const status = new DaemonStatus(() => clock.now());
    const view = () => ({ ready: readiness.ready(), notReady: readiness.reasons(), stalled: loops.stalled() });
    server = await startHealthServer({
      host: '127.0.0.1', port: 0, health: view, log: testLog(),
      metrics: async () => ({ contentType: registry.contentType, body: await registry.metrics() }),
      status: () => status.report(view()),
    });
    const get = async (path: string): Promise<[number, string]> => {
      const res = await fetch(`http://127.0.0.1:${server?.port}${path}`);
      return [res.status, await res.text()];
    };
    expect(await get('/readyz')).toEqual([503, 'not ready: subnet.env not written yet\n']);
    readiness.set('started', undefined);
    expect(await get('/readyz')).toEqual([200, 'ok\n']);
    loops.register('traffic-rules', 1000);
    expect(await get('/healthz')).toEqual([200, 'ok\n']);
    clock.advance(2001);
    expect(await get('/healthz')).toEqual([503, 'traffic-rules stalled: no progress for 2 s (period 1 s)\n']);

    const observer = reconcilerMetrics(metrics, clock);
    observer.peers?.(2);
    observer.entries?.({ route: 2, neigh: 2, fdb: 2 });
    observer.repaired?.('fdb', 1);
    observer.streamFailed?.('kernel-notifications', 'socket closed');
    const [code, text] = await get('/metrics');
    expect(code).toBe(200);
    expect(text).toContain('flanneld_peers 2');
    expect(text).toContain('flanneld_datapath_entries{kind="fdb"} 2');
    expect(text).toContain('flanneld_datapath_repairs_total{kind="fdb"} 1');
    expect(text).toContain('flanneld_datapath_repairs_total{kind="route"} 0');
    expect(text).toContain('flanneld_datapath_input_stream_failures_total{stream="kernel-notifications"} 1');
    expect(text).toContain('flanneld_datapath_input_stream_failures_total{stream="leases"} 0');
    expect(text).toContain('flanneld_traffic_rules_repairs_total{manager="iptables"} 0');

    status.observer().peersChanged?.(new Map(), new Map([['10.244.2.0-24', peer(2)]]));
    status.probes = () => new Map([['10.244.2.0-24', { reachable: true, rttMs: 0.42, at: clock.now() }]]);
    const report = JSON.parse((await get('/status'))[1]) as ReturnType<DaemonStatus['report']>;
    expect(report.peers).toEqual([{ subnet: '10.244.2.0/24', publicIP: '192.0.2.2', vtepMAC: 'aa:aa:aa:aa:aa:02', probe: { reachable: true, rttMs: 0.42, at: clock.now() } }]);
    expect(report.stalled).toHaveLength(1);
    expect(await get('/nope')).toEqual([404, 'not found\n']);
  });
});

describe('health server address', () => {
  it('takes --healthz-ip 0.0.0.0 as both families, as upstream\'s Go listener does (an IPv6-only node\'s kubelet probes over IPv6)', async () => {
    expect(listenHosts('0.0.0.0')).toEqual(['::', '0.0.0.0']);
    expect(listenHosts('192.0.2.1')).toEqual(['192.0.2.1']);
    const readiness = new Readiness();
    readiness.set('started', undefined);
    const server = await startHealthServer({
      host: '0.0.0.0', port: 0, log: testLog(), health: () => ({ ready: readiness.ready(), notReady: readiness.reasons(), stalled: [] }),
    });
    try {
      for (const host of ['127.0.0.1', '[::1]']) expect((await fetch(`http://${host}:${server.port}/readyz`)).status).toBe(200);
    } finally {
      await server.close();
    }
  });
});

describe('flanneld status', () => {
  it('renders peers with probe state, and what is wrong', () => {
    const status = new DaemonStatus(() => 0);
    status.lease = { ...peer(1), expiresAt: Date.UTC(2026, 10, 24) };
    status.backend = { type: 'vxlan', mtu: 1450 };
    status.rulesManager = 'iptables';
    status.observer().peersChanged?.(new Map(), new Map([['10.244.2.0-24', peer(2)], ['10.244.3.0-24', peer(3)]]));
    status.probes = () => new Map([['10.244.2.0-24', { reachable: false, at: 0 }], ['10.244.3.0-24', { reachable: true, rttMs: 0.5, at: 0 }]]);
    const text = renderStatus(status.report({ ready: false, notReady: ['lease lost: x'], stalled: [] }));
    expect(text).toContain('| state | NOT READY: lease lost: x |');
    expect(text).toContain('| lease expires | 2026-11-24T00:00:00.000Z |');
    expect(text).toContain('| 10.244.2.0/24 | 192.0.2.2 | aa:aa:aa:aa:aa:02 | UNREACHABLE | - |');
    expect(text).toContain('| 10.244.3.0/24 | 192.0.2.3 | aa:aa:aa:aa:aa:03 | reachable | 0.50 ms |');
  });

  it('shows both families of dual-stack and IPv6-only peers', () => {
    const status = new DaemonStatus(() => 0);
    const v6 = (n: number, v4: boolean): Lease => ({
      ...(v4 ? { subnet: parseCidr(`10.244.${n}.0/24`)! } : {}),
      ipv6Subnet: parseCidr(`2001:db8:a:${n}::/64`)!,
      attrs: { ...(v4 ? { publicIP: parseIPv4(`192.0.2.${n}`)! } : {}), publicIPv6: parseIp(`2001:db8:2::${n}`)!, backendType: 'host-gw' },
      reservation: false,
    });
    status.lease = v6(1, true);
    status.observer().peersChanged?.(new Map(), new Map([['a', v6(3, false)], ['b', v6(2, true)]]));
    const text = renderStatus(status.report({ ready: true, notReady: [], stalled: [] }));
    expect(text).toContain('| lease | 10.244.1.0/24, 2001:db8:a:1::/64 |');
    expect(text).toContain('| public IP | 192.0.2.1, 2001:db8:2::1 |');
    expect(text).toContain('| 10.244.2.0/24, 2001:db8:a:2::/64 | 192.0.2.2, 2001:db8:2::2 | - |');
    expect(text).toContain('| 2001:db8:a:3::/64 | 2001:db8:2::3 | - |');
  });

  it('takes the health port from the flag, then FLANNELD_HEALTHZ_PORT, then 8081', () => {
    expect(parseStatusArgs([], {})).toEqual({ host: '127.0.0.1', port: 8081, json: false });
    expect(parseStatusArgs(['--json'], { FLANNELD_HEALTHZ_PORT: '9000' })).toEqual({ host: '127.0.0.1', port: 9000, json: true });
    expect(parseStatusArgs(['--healthz-port=70000'], {})).toMatch(/--healthz-port must be 1..65535, got "70000"/);
    expect(parseStatusArgs(['--nope'], {})).toMatch(/unknown argument --nope/);
  });
});

describe('udp drop metric', () => {
  const dropped = async (registry: Registry): Promise<Record<string, number>> => {
    const out: Record<string, number> = {};
    for (const line of (await registry.metrics()).split('\n')) {
      const m = /^flanneld_udp_dropped_packets_total\{reason="(\w+)"\} (\d+)$/.exec(line);
      if (m) out[m[1] as string] = Number(m[2]);
    }
    return out;
  };

  it('starts every reason at 0 and adds what the native counters gained, also across a proxy restart', async () => {
    const registry = new Registry();
    const metrics = createMetrics(registry, { processMetrics: false });
    let native: Record<string, number> | undefined = { no_route: 0, queue_full: 0 };
    metrics.trackUdpDrops(() => native);
    expect(await dropped(registry)).toEqual({ no_route: 0, queue_full: 0 });
    native = { no_route: 5, queue_full: 1 };
    expect(await dropped(registry)).toEqual({ no_route: 5, queue_full: 1 });
    native = undefined; // the proxy is being re-created
    expect(await dropped(registry)).toEqual({ no_route: 5, queue_full: 1 });
    native = { no_route: 2, queue_full: 0 }; // a new proxy counts from 0
    expect(await dropped(registry)).toEqual({ no_route: 7, queue_full: 1 });
  });

  it('is not exported by a daemon that does not run udp', async () => {
    const registry = new Registry();
    createMetrics(registry, { processMetrics: false });
    expect(await registry.metrics()).not.toContain('flanneld_udp_dropped_packets_total');
  });
});

describe('BGP sessions in status and metrics', () => {
  const sessions = (): SessionStatus[] => [
    { peer: '192.0.2.250', remoteAs: 64512, state: 'established', establishedAt: Date.UTC(2026, 11, 7, 10, 0, 0), prefixes: ['10.244.1.0/24'], establishments: 2 },
    { peer: '2001:db8:2::fa', remoteAs: 64513, state: 'connect', prefixes: [], lastError: 'BGP peer 2001:db8:2::fa:179: connect ECONNREFUSED', establishments: 0 },
  ];
  const now = Date.UTC(2026, 11, 7, 10, 1, 30);

  it('lists each router with its state, uptime, prefixes and last error, and never makes the node unready', () => {
    const status = new DaemonStatus(() => now);
    status.bgpSessions = sessions;
    const report = status.report({ ready: true, notReady: [], stalled: [] });
    expect(report.bgpSessions?.[0]).toMatchObject({ state: 'established', establishedAt: '2026-12-07T10:00:00.000Z', uptimeSec: 90, prefixes: ['10.244.1.0/24'] });
    const text = renderStatus(report);
    expect(text).toContain('2 BGP session(s), 1 established');
    expect(text).toContain('| 192.0.2.250 | 64512 | established | 2026-12-07T10:00:00.000Z (90 s) | 10.244.1.0/24 | - |');
    expect(text).toContain('| 2001:db8:2::fa | 64513 | connect | - | - | BGP peer 2001:db8:2::fa:179: connect ECONNREFUSED |');
    expect(text).toContain('| state | ready |');
  });

  it('has no BGP section without --bgp-as', () => {
    const status = new DaemonStatus(() => now);
    const report = status.report({ ready: true, notReady: [], stalled: [] });
    expect(report.bgpSessions).toBeUndefined();
    expect(renderStatus(report)).not.toContain('BGP');
  });

  it('exports state, uptime, prefixes and establishments per router, read at each scrape', async () => {
    const registry = new Registry();
    const metrics = createMetrics(registry, { processMetrics: false });
    let current = sessions();
    metrics.trackBgpSessions(() => current, () => now);
    const text = await registry.metrics();
    expect(text).toContain('flanneld_bgp_session_state{peer="192.0.2.250",state="established"} 1');
    expect(text).toContain('flanneld_bgp_session_state{peer="192.0.2.250",state="idle"} 0');
    expect(text).toContain('flanneld_bgp_session_state{peer="2001:db8:2::fa",state="connect"} 1');
    expect(text).toContain('flanneld_bgp_session_uptime_seconds{peer="192.0.2.250"} 90');
    expect(text).toContain('flanneld_bgp_session_uptime_seconds{peer="2001:db8:2::fa"} 0');
    expect(text).toContain('flanneld_bgp_prefixes_announced{peer="192.0.2.250"} 1');
    expect(text).toContain('flanneld_bgp_session_establishments{peer="192.0.2.250"} 2');
    current = [{ peer: '192.0.2.250', remoteAs: 64512, state: 'idle', prefixes: [], establishments: 2 }];
    const later = await registry.metrics();
    expect(later).toContain('flanneld_bgp_session_state{peer="192.0.2.250",state="established"} 0');
    expect(later).toContain('flanneld_bgp_prefixes_announced{peer="192.0.2.250"} 0');
  });

  it('is not exported by a daemon without BGP', async () => {
    const registry = new Registry();
    createMetrics(registry, { processMetrics: false });
    expect(await registry.metrics()).not.toContain('flanneld_bgp_');
  });
});
