import { memoryLog, type LogLine } from '../helpers/test-log.js';
import { describe, expect, it, vi } from 'vitest';
import { builtInBackends } from '../../backends/index.js';
import { parseNetworkConfig } from '../../flanneld/config/network-config.js';
import type { NetworkConfig } from '../../flanneld/config/network-config-types.js';
import { runDaemon, type DaemonDeps, type DaemonOptions, type DaemonResult } from '../../flanneld/daemon.js';
import { formatIp, parseIp, type Family, type IpAddress } from '../../flanneld/ip/address.js';
import { formatCidr, parseCidr, type IpNet } from '../../flanneld/ip/cidr.js';
import type { HostInterface, HostView } from '../../flanneld/ip/external-interface.js';
import type { Lease } from '../../flanneld/lease/lease.js';
import type { LeaseAnnouncer } from '../../flanneld/bgp/bgp-speaker.js';
import { ConfigError, FlannelError, LeaseLostError, NoFreeSubnetError } from '../../flanneld/runtime/errors.js';
import { seededRandom } from '../../flanneld/runtime/random.js';
import type { LeaseRequest } from '../../flanneld/subnet/subnet-manager.js';
import { FakeSubnetManager } from '../helpers/fake-subnet-manager.js';
import { FakeDatapath } from '../helpers/fake-datapath.js';
import { FakeTrafficManager } from '../helpers/fake-traffic-manager.js';
import { ManualClock } from '../helpers/manual-clock.js';

const HOUR = 3_600_000;
const TTL = 24 * HOUR;
const SUBNET_FILE = '/run/flannel/subnet.env';
const WARN = 40;
const DEBUG = 20;

const ip = (text: string): IpAddress => parseIp(text) as IpAddress;
const net = (text: string): IpNet => parseCidr(text) as IpNet;
const config = (json: string): NetworkConfig => parseNetworkConfig(json).config;

const V4_CONFIG = config('{"Network":"10.244.0.0/16","Backend":{"Type":"alloc"}}');
const DUAL_CONFIG = config(
  '{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"alloc"}}',
);

function fakeHost(): HostView {
  const eth0: HostInterface = { name: 'eth0', index: 2, mtu: 1450, addrs: [ip('10.0.0.5'), ip('fe80::5'), ip('2001:db8::5')] };
  return {
    interfaces: () => Promise.resolve([eth0]),
    defaultRouteInterface: (_family: Family) => Promise.resolve('eth0'),
    routeTo: () => Promise.resolve(undefined),
    connectedNetworks: () => Promise.resolve([]),
  };
}

const settle = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

function setup(files: Record<string, string> = {}, backends: DaemonDeps['backends'] = builtInBackends(), announcer?: (events: string[]) => LeaseAnnouncer) {
  const clock = new ManualClock();
  const subnets = new FakeSubnetManager();
  const { log, lines } = memoryLog();
  const disk = new Map(Object.entries(files));
  const events: string[] = [];
  const ready: Lease[] = [];
  const abort = new AbortController();
  /** What the store hands out: the requested previous subnet, else 10.244.3.0/24, with a TTL on the clock. */
  const grant = (request: LeaseRequest): Lease => ({
    subnet: request.previous?.subnet ?? net('10.244.3.0/24'),
    ...(request.previous?.ipv6Subnet ? { ipv6Subnet: request.previous.ipv6Subnet } : {}),
    attrs: request.attrs,
    reservation: false,
    expiresAt: clock.now() + TTL,
  });
  let writeFails = false;
  const opts: DaemonOptions = {
    subnetFile: SUBNET_FILE, ipMasq: true, ipMasqFullyRandomDisable: false, ipMasqExclude: [], iptablesForwardRules: true,
    // The rules check is parked far beyond every renewal, so the keeper's timer is always the next one.
    iptablesResyncMs: 30 * 24 * HOUR, ipBlackholeRoute: false, renewMarginMs: HOUR, datapathResyncMs: 60_000, iface: [], ifaceRegex: [],
  };
  const traffic = { iptables: new FakeTrafficManager('iptables'), nftables: new FakeTrafficManager('nftables') };
  const datapath = new FakeDatapath();
  let result: DaemonResult | { error: unknown } | undefined;
  const start = (overrides: Partial<DaemonOptions> = {}): Promise<void> =>
    runDaemon(
      {
        subnets,
        backends,
        host: fakeHost(),
        datapath,
        traffic,
        clock,
        random: seededRandom(42),
        rootLog: log,
        readFile: (path) => Promise.resolve(disk.get(path)),
        writeFile: (path, text) => {
          events.push(`write ${path}`);
          if (writeFails) return Promise.reject(new Error('EROFS: read-only file system'));
          disk.set(path, text);
          return Promise.resolve();
        },
        onReady: (lease) => {
          events.push('ready');
          ready.push(lease);
        },
        ...(announcer ? { announcer: announcer(events) } : {}),
      },
      { ...opts, ...overrides },
      abort.signal,
    ).then(
      (r) => {
        result = r;
      },
      (error: unknown) => {
        result = { error };
      },
    );
  /** Waits for the daemon to sleep on the clock, then moves time to wake the earliest sleeper; returns how long it slept. */
  const wakeNextSleeper = async (): Promise<number> => {
    await vi.waitFor(() => expect(clock.pending).toBeGreaterThanOrEqual(1));
    const delay = (clock.nextDeadline() as number) - clock.now();
    clock.advance(delay);
    return delay;
  };
  return {
    traffic,
    datapath,
    clock,
    subnets,
    lines,
    disk,
    events,
    ready,
    abort,
    grant,
    start,
    wakeNextSleeper,
    failWrites: () => {
      writeFails = true;
    },
    result: () => result,
  };
}

const warnings = (lines: LogLine[]): LogLine[] => lines.filter((l) => l.level === WARN);

describe('runDaemon', () => {
  it('retries getNetworkConfig until the config appears, warning once per distinct error', async () => {
    const d = setup();
    const notFound = new FlannelError(
      'ERR_CONFIG_NOT_FOUND',
      'flannel config not found in etcd store at /coreos.com/network/config. Did you create your config using etcdv3 API?',
    );
    const unavailable = new FlannelError('ERR_STORE_UNAVAILABLE', 'etcd get /coreos.com/network/config: connection refused');
    d.subnets.config.then(notFound, notFound, unavailable, unavailable, V4_CONFIG);
    d.subnets.acquire.otherwise(d.grant);
    const running = d.start();

    const delays: number[] = [];
    for (let i = 0; i < 4; i++) delays.push(await d.wakeNextSleeper());
    await vi.waitFor(() => expect(d.ready).toHaveLength(1));
    expect(d.subnets.callsTo('getNetworkConfig')).toHaveLength(5);
    // Backoff doubles from 1 s with 10% jitter.
    [1000, 2000, 4000, 8000].forEach((base, i) => {
      expect(delays[i]).toBeGreaterThanOrEqual(base * 0.9);
      expect(delays[i]).toBeLessThanOrEqual(base * 1.1);
    });

    const retries = d.lines.filter((l) => l.msg === 'cannot get network config yet; retrying');
    expect(retries.map((l) => [l.level, l['code'], l['retryInMs']])).toEqual([
      [WARN, 'ERR_CONFIG_NOT_FOUND', delays[0]],
      [DEBUG, 'ERR_CONFIG_NOT_FOUND', delays[1]],
      [WARN, 'ERR_STORE_UNAVAILABLE', delays[2]],
      [DEBUG, 'ERR_STORE_UNAVAILABLE', delays[3]],
    ]);
    expect(retries[0]?.['err']).toMatchObject({ message: notFound.message });
    expect(d.result()).toBeUndefined();
    d.abort.abort();
    await running;
    expect(d.result()).toEqual({ kind: 'stopped' });
  });

  it("refuses a Network that takes in the host's own address, naming both", async () => {
    const h = setup();
    h.subnets.config.then(config('{"Network":"10.0.0.0/8","Backend":{"Type":"alloc"}}'));
    await h.start();
    const outcome = h.result() as { error: Error };
    expect(outcome.error).toBeInstanceOf(ConfigError);
    expect(outcome.error.message).toBe("Network: overlaps this host's own network: it holds 10.0.0.5, an address of this host on eth0 (got \"10.0.0.0/8\")");
  });

  it('keeps waiting on an invalid config instead of exiting', async () => {
    const d = setup();
    const invalid = new ConfigError('Network', '10.244.0.0/33', 'not a valid CIDR');
    d.subnets.config.then(invalid, V4_CONFIG);
    d.subnets.acquire.otherwise(d.grant);
    const running = d.start();
    await d.wakeNextSleeper();
    await vi.waitFor(() => expect(d.ready).toHaveLength(1));
    expect(warnings(d.lines)[0]).toMatchObject({ msg: 'cannot get network config yet; retrying', code: 'ERR_CONFIG_INVALID' });
    d.abort.abort();
    await running;
  });

  it('retries acquireLease on NoFreeSubnetError with backoff, warning once', async () => {
    const d = setup();
    d.subnets.config.then(V4_CONFIG);
    const full = (): NoFreeSubnetError =>
      new NoFreeSubnetError('no free subnet: every /24 of 10.244.0.0/16 from 10.244.1.0 to 10.244.255.0 is leased (255 leases)');
    d.subnets.acquire.then(full(), full(), full()).otherwise(d.grant);
    const running = d.start();

    const delays = [await d.wakeNextSleeper(), await d.wakeNextSleeper(), await d.wakeNextSleeper()];
    await vi.waitFor(() => expect(d.ready).toHaveLength(1));
    expect(d.subnets.callsTo('acquireLease')).toHaveLength(4);
    expect(delays[1]).toBeGreaterThan(delays[0] as number);
    expect(delays[2]).toBeGreaterThan(delays[1] as number);

    const retries = d.lines.filter((l) => l.msg === 'cannot get subnet lease yet; retrying');
    expect(retries.map((l) => [l.level, l['code']])).toEqual([
      [WARN, 'ERR_NO_FREE_SUBNET'],
      [DEBUG, 'ERR_NO_FREE_SUBNET'],
      [DEBUG, 'ERR_NO_FREE_SUBNET'],
    ]);
    expect(warnings(d.lines)).toHaveLength(1);
    d.abort.abort();
    await running;
    expect(d.result()).toEqual({ kind: 'stopped' });
  });

  it("passes the previous subnet.env's FLANNEL_SUBNET as the previous subnet, with the node's attrs", async () => {
    const d = setup({
      [SUBNET_FILE]: 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.7.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n',
    });
    d.subnets.config.then(V4_CONFIG);
    d.subnets.acquire.otherwise(d.grant);
    const running = d.start();
    await vi.waitFor(() => expect(d.ready).toHaveLength(1));

    const [call] = d.subnets.callsTo('acquireLease');
    expect(call?.request.previous?.subnet && formatCidr(call.request.previous.subnet)).toBe('10.244.7.0/24');
    expect(call?.request.previous?.ipv6Subnet).toBeUndefined();
    expect(call?.request.attrs.backendType).toBe('alloc');
    expect(call?.request.attrs.publicIP && formatIp(call.request.attrs.publicIP)).toBe('10.0.0.5');
    expect(call?.request.attrs.publicIPv6).toBeUndefined();
    expect(d.disk.get(SUBNET_FILE)).toContain('FLANNEL_SUBNET=10.244.7.1/24\n');
    d.abort.abort();
    await running;
  });

  it('asks for no previous subnet on a first start', async () => {
    const d = setup();
    d.subnets.config.then(V4_CONFIG);
    d.subnets.acquire.otherwise(d.grant);
    const running = d.start();
    await vi.waitFor(() => expect(d.ready).toHaveLength(1));
    expect(d.subnets.callsTo('acquireLease')[0]?.request).not.toHaveProperty('previous');
    d.abort.abort();
    await running;
  });

  it('writes subnet.env with the exact upstream text, then reports ready with the lease', async () => {
    const d = setup();
    d.subnets.config.then(V4_CONFIG);
    d.subnets.acquire.otherwise(d.grant);
    const running = d.start();
    await vi.waitFor(() => expect(d.ready).toHaveLength(1));

    expect(d.disk.get(SUBNET_FILE)).toBe(
      'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n',
    );
    expect(d.events).toEqual([`write ${SUBNET_FILE}`, 'ready']);
    expect(d.ready[0]?.subnet && formatCidr(d.ready[0].subnet)).toBe('10.244.3.0/24');
    d.abort.abort();
    await running;
  });

  it('writes the dual-stack keys and FLANNEL_IPMASQ=false when asked', async () => {
    const d = setup({ [SUBNET_FILE]: 'FLANNEL_SUBNET=10.244.9.1/24\nFLANNEL_IPV6_SUBNET=fc00:0:0:9::1/64\n' });
    d.subnets.config.then(DUAL_CONFIG);
    d.subnets.acquire.otherwise(d.grant);
    const running = d.start({ ipMasq: false });
    await vi.waitFor(() => expect(d.ready).toHaveLength(1));

    const request = d.subnets.callsTo('acquireLease')[0]?.request;
    expect(request?.attrs.publicIPv6 && formatIp(request.attrs.publicIPv6)).toBe('2001:db8::5');
    expect(d.disk.get(SUBNET_FILE)).toBe(
      [
        'FLANNEL_NETWORK=10.244.0.0/16',
        'FLANNEL_SUBNET=10.244.9.1/24',
        'FLANNEL_IPV6_NETWORK=fc00::/48',
        'FLANNEL_IPV6_SUBNET=fc00:0:0:9::1/64',
        'FLANNEL_MTU=1450',
        'FLANNEL_IPMASQ=false',
        '',
      ].join('\n'),
    );
    d.abort.abort();
    await running;
  });

  it('keeps running without reporting ready when subnet.env cannot be written', async () => {
    const d = setup();
    d.failWrites();
    d.subnets.config.then(V4_CONFIG);
    d.subnets.acquire.otherwise(d.grant);
    const running = d.start();
    await vi.waitFor(() => expect(d.events).toEqual([`write ${SUBNET_FILE}`]));
    await vi.waitFor(() => expect(d.clock.pending).toBe(2)); // the lease keeper's renewal timer and the rules check
    expect(d.ready).toEqual([]);
    expect(warnings(d.lines).at(-1)).toMatchObject({ msg: 'failed to write subnet file', file: SUBNET_FILE });
    expect(d.result()).toBeUndefined();
    d.abort.abort();
    await running;
    expect(d.result()).toEqual({ kind: 'stopped' });
  });

  it('keeps the lease renewed while running', async () => {
    const d = setup();
    d.subnets.config.then(V4_CONFIG);
    d.subnets.acquire.otherwise(d.grant);
    d.subnets.renew.otherwise((lease) => ({ ...lease, expiresAt: d.clock.now() + TTL }));
    const running = d.start();
    await vi.waitFor(() => expect(d.ready).toHaveLength(1));
    expect(await d.wakeNextSleeper()).toBe(TTL - HOUR);
    await vi.waitFor(() => expect(d.subnets.callsTo('renewLease')).toHaveLength(1));
    await vi.waitFor(() => expect(d.clock.pending).toBe(2));
    expect(d.result()).toBeUndefined();
    d.abort.abort();
    await running;
  });

  it('announces the lease to routers before the rules go in, again on each renewal, and ends the sessions with the daemon', async () => {
    const recording = (events: string[]): LeaseAnnouncer => ({
      announce: (lease) => void events.push(`announce ${formatCidr(lease.subnet!)}`),
      run: (signal) => {
        events.push('sessions running');
        return new Promise((resolve) => signal.addEventListener('abort', () => resolve(void events.push('sessions stopped')), { once: true }));
      },
      status: () => [],
    });
    const d = setup({}, builtInBackends(), recording);
    d.subnets.config.then(V4_CONFIG);
    d.subnets.acquire.otherwise(d.grant);
    d.subnets.renew.otherwise((lease) => ({ ...lease, expiresAt: d.clock.now() + TTL }));
    const running = d.start();
    await vi.waitFor(() => expect(d.ready).toHaveLength(1));
    expect(d.events).toEqual(['announce 10.244.3.0/24', 'sessions running', `write ${SUBNET_FILE}`, 'ready']);
    await d.wakeNextSleeper();
    await vi.waitFor(() => expect(d.events.filter((e) => e.startsWith('announce'))).toHaveLength(2));
    d.abort.abort();
    await running;
    expect(d.events.at(-1)).toBe('sessions stopped');
  });

  it('returns stopped on abort, leaving no timers or watches behind', async () => {
    const d = setup();
    d.subnets.config.then(V4_CONFIG);
    d.subnets.acquire.otherwise(d.grant);
    const running = d.start();
    await vi.waitFor(() => expect(d.ready).toHaveLength(1));
    await vi.waitFor(() => expect(d.clock.pending).toBe(2));
    await settle();
    expect(d.result()).toBeUndefined();

    d.abort.abort();
    await running;
    expect(d.result()).toEqual({ kind: 'stopped' });
    expect(d.clock.pending).toBe(0);
    expect(d.subnets.ownLeaseWatchers).toBe(0);
  });

  it('returns lease-lost when a renewal finds the subnet taken by another node', async () => {
    const d = setup();
    d.subnets.config.then(V4_CONFIG);
    d.subnets.acquire.otherwise(d.grant);
    d.subnets.renew.then(new LeaseLostError('lease 10.244.3.0-24 is now held by 10.0.0.9'));
    const running = d.start();
    await vi.waitFor(() => expect(d.ready).toHaveLength(1));
    await d.wakeNextSleeper();
    await running;
    expect(d.result()).toEqual({ kind: 'lease-lost', message: 'lease 10.244.3.0-24 is now held by 10.0.0.9' });
    expect(d.subnets.ownLeaseWatchers).toBe(0);
  });

  it('returns lease-lost when the lease vanished and another node claimed it first', async () => {
    const d = setup();
    d.subnets.config.then(V4_CONFIG);
    d.subnets.acquire.otherwise(d.grant);
    d.subnets.renew.then(new LeaseLostError('lease 10.244.3.0-24 is now held by 10.0.0.9'));
    const running = d.start();
    await vi.waitFor(() => expect(d.ready).toHaveLength(1));
    await vi.waitFor(() => expect(d.subnets.ownLeaseWatchers).toBe(1));
    d.subnets.vanish();
    await running;
    expect(d.result()).toMatchObject({ kind: 'lease-lost' });
  });

  it('stops waiting for the config when aborted during startup (main treats the rejection as a clean exit)', async () => {
    const d = setup();
    d.subnets.config.otherwise(() => {
      throw new FlannelError('ERR_STORE_UNAVAILABLE', 'etcd get /coreos.com/network/config: connection refused');
    });
    const running = d.start();
    await vi.waitFor(() => expect(d.clock.pending).toBe(1));
    d.abort.abort();
    await running;
    expect(d.result()).toMatchObject({ error: { name: 'AbortError' } });
    expect(d.subnets.callsTo('acquireLease')).toEqual([]);
    expect(d.disk.size).toBe(0);
  });

  it('cleans up the other firewall mode, installs its rules before subnet.env, and repairs them on the resync', async () => {
    const d = setup();
    d.subnets.config.then(V4_CONFIG);
    d.subnets.acquire.otherwise(d.grant);
    const running = d.start({ iptablesResyncMs: 5000 });
    await vi.waitFor(() => expect(d.ready).toHaveLength(1));
    expect(d.traffic.nftables.calls).toEqual(['removeAll']);
    expect(d.traffic.iptables.calls).toEqual(['ensure']);
    expect(d.traffic.iptables.installed).toMatchObject({ masquerade: true, forward: true, fullyRandom: true });
    expect(d.traffic.iptables.installed?.families.map((f) => [formatCidr(f.clusterCidr), formatCidr(f.podCidr)])).toEqual([
      ['10.244.0.0/16', '10.244.3.0/24'],
    ]);
    d.traffic.iptables.wipe();
    expect(await d.wakeNextSleeper()).toBe(5000);
    await vi.waitFor(() => expect(d.traffic.iptables.calls).toEqual(['ensure', 'matches', 'ensure']));
    expect(warnings(d.lines).at(-1)).toMatchObject({ msg: 'Some traffic rules are missing; deleting and recreating rules' });
    d.abort.abort();
    await running;
  });

  it('keeps a blackhole route for its subnet with --ip-blackhole-route', async () => {
    const d = setup();
    d.subnets.config.then(V4_CONFIG);
    d.subnets.acquire.otherwise(d.grant);
    const running = d.start({ ipBlackholeRoute: true });
    await vi.waitFor(() => expect(d.datapath.blackholes).toEqual(['10.244.3.0/24']));
    d.abort.abort();
    await running;
  });

  it('rejects a backend type it does not have, naming the known ones', async () => {
    // Every type the config parser knows is built in; a daemon assembled without one must still say so clearly.
    const d = setup({}, new Map([...builtInBackends()].filter(([type]) => type !== 'udp')));
    d.subnets.config.then(config('{"Network":"10.244.0.0/16","Backend":{"Type":"udp"}}'));
    await d.start();
    const outcome = d.result();
    expect(outcome).toMatchObject({ error: { code: 'ERR_CONFIG_INVALID', key: 'Backend.Type', value: 'udp' } });
    expect(String((outcome as { error: Error }).error.message)).toContain('known: alloc, vxlan, host-gw');
  });
});
