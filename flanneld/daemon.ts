/**
 * flanneld's startup sequence and run phase (upstream main.go's order, docs/compatibility.md#start-up-order) over
 * injected deps: no process access here, so the whole daemon runs in tests against real etcd with a ManualClock.
 */
import type { Logger } from 'pino';
import type { BackendFactory } from '../backends/backend.js';
import type { Datapath } from '../backends/datapath/datapath.js';
import type { NetworkConfig } from './config/network-config-types.js';
import { chooseExternalInterface, type ExternalInterfaceOptions, type HostView } from './ip/external-interface.js';
import { networkConflict } from './ip/network-conflicts.js';
import { formatIp } from './ip/address.js';
import { formatCidr } from './ip/cidr.js';
import type { Lease, LeaseAttrs, LeaseEvent } from './lease/lease.js';
import { allocationRanges } from './config/network-config.js';
import { PeerGuard, guardedLeases, type PeerGuardObserver } from './subnet/peer-guard.js';
import { formatSubnetKey } from './lease/subnet-key.js';
import { Backoff } from './runtime/backoff.js';
import type { Clock } from './runtime/clock.js';
import { ConfigError, FlannelError, LeaseLostError, errorMessage } from './runtime/errors.js';
import type { Random } from './runtime/random.js';
import { keepLease } from './subnet/lease-keeper.js';
import { keepRules } from './traffic/keep-rules.js';
import { repeatEvery } from './runtime/repeat.js';
import { trafficPlan, type TrafficOptions } from './traffic/plans.js';
import type { TrafficManager, TrafficPlan } from './traffic/traffic-manager.js';
import { previousSubnets, renderSubnetEnv } from './subnet/subnet-env.js';
import type { StoredPublicIPs, SubnetManager } from './subnet/subnet-manager.js';
import { daemonEvents, type DaemonOps } from './daemon-events.js';
import type { LeaseAnnouncer } from './bgp/bgp-speaker.js';

export interface DaemonOptions extends Omit<ExternalInterfaceOptions, 'enableIPv4' | 'enableIPv6'>, TrafficOptions {
  readonly subnetFile: string;
  /** --iptables-resync: traffic-rule check period, also the blackhole-route period. */
  readonly iptablesResyncMs: number;
  readonly ipBlackholeRoute: boolean;
  readonly renewMarginMs: number;
  /** Full datapath resync period (--datapath-resync), in ms. */
  readonly datapathResyncMs: number;
}

export interface DaemonDeps {
  readonly subnets: SubnetManager;
  readonly backends: ReadonlyMap<string, BackendFactory>;
  readonly host: HostView;
  readonly datapath: Datapath;
  /** Both firewall modes: the one not selected by EnableNFTables is cleaned up at start. */
  readonly traffic: { readonly iptables: TrafficManager; readonly nftables: TrafficManager };
  readonly clock: Clock;
  readonly random: Random;
  /**
   * The process's root logger: the daemon's own lines carry component "daemon" and each part it starts its own
   * name, each a child of this one (a child of a child would carry two component keys).
   */
  readonly rootLog: Logger;
  readonly readFile: (path: string) => Promise<string | undefined>;
  readonly writeFile: (path: string, text: string) => Promise<void>;
  /** Called once subnet.env is written (readiness). */
  readonly onReady?: (lease: Lease) => void;
  /** Health, readiness, metrics and status; absent in tests that do not look at them. */
  readonly ops?: DaemonOps;
  /** Tells routers where this node's pods are (BGP), when configured. */
  readonly announcer?: LeaseAnnouncer;
}

export type DaemonResult = { readonly kind: 'stopped' } | { readonly kind: 'lease-lost'; readonly message: string };

const STARTUP_RETRY = { initialMs: 1000, maxMs: 30_000, jitter: 0.1 };

export async function runDaemon(deps: DaemonDeps, opts: DaemonOptions, signal: AbortSignal): Promise<DaemonResult> {
  const log = deps.rootLog.child({ component: 'daemon' });
  const events = daemonEvents(deps.ops, deps.clock, opts.renewMarginMs);
  const config = await retryUntilDone(deps, log, signal, 'network config', () => deps.subnets.getNetworkConfig(signal));
  log.info({ backend: config.backend.type, network: describeNetworks(config) }, 'network config loaded');
  await refuseNetworkConflicts(deps.host, config);

  const readStored = deps.subnets.storedPublicIPs?.bind(deps.subnets);
  const stored: StoredPublicIPs = readStored ? await retryUntilDone(deps, log, signal, 'public IPs recorded for this node', () => readStored(signal)) : {};
  if (stored.publicIP || stored.publicIPv6) {
    log.info({ publicIP: stored.publicIP && formatIp(stored.publicIP), publicIPv6: stored.publicIPv6 && formatIp(stored.publicIPv6) }, 'using the public IP recorded for this node');
  }
  const extIface = await chooseExternalInterface(deps.host, {
    ...opts,
    ...(stored.publicIP ? { publicIP: stored.publicIP } : {}),
    ...(stored.publicIPv6 ? { publicIPv6: stored.publicIPv6 } : {}),
    enableIPv4: config.enableIPv4,
    enableIPv6: config.enableIPv6,
  });
  log.info(
    {
      iface: extIface.name,
      publicIP: extIface.publicIP && formatIp(extIface.publicIP),
      publicIPv6: extIface.publicIPv6 && formatIp(extIface.publicIPv6),
    },
    'using external interface',
  );

  const factory = deps.backends.get(config.backend.type);
  if (!factory) {
    throw new ConfigError('Backend.Type', config.backend.type, `unknown backend type (known: ${[...deps.backends.keys()].join(', ')})`);
  }
  const previousText = await deps.readFile(opts.subnetFile);
  const previous = previousText ? previousSubnets(previousText) : undefined;
  const acquireLease = (attrs: LeaseAttrs, acquireSignal: AbortSignal): Promise<Lease> =>
    retryUntilDone(deps, log, acquireSignal, 'subnet lease', () =>
      deps.subnets.acquireLease({ attrs, ...(previous ? { previous } : {}) }, acquireSignal),
    );
  const observer = events.reconciler(opts.datapathResyncMs);
  const backend = factory({
    ...(observer ? { observer } : {}),
    extIface,
    findPreviousLease: (publicIP, findSignal) => deps.subnets.findPreviousLease(publicIP, findSignal),
    acquireLease,
    trackDrops: (source) => events.userspaceDrops(source),
    deviceProcess: (device, problem) => events.deviceProcess(device, problem),
    peerLeases: (own, peerSignal) => validPeerLeases(deps, events.peerGuard, config, own, peerSignal),
    datapath: deps.datapath,
    host: deps.host,
    clock: deps.clock,
    random: deps.random,
    resyncMs: opts.datapathResyncMs,
    log: deps.rootLog.child({ component: `backend-${config.backend.type}` }),
  });
  const network = await backend.registerNetwork(config, signal);
  log.info({ subnet: formatSubnetKey(network.lease), mtu: network.mtu }, 'lease acquired');
  events.networkUp(network, config.backend.type);

  const phase = new AbortController();
  const stopPhase = (): void => phase.abort(signal.reason);
  signal.addEventListener('abort', stopPhase, { once: true });
  // Routers hear of the lease while the rules go in, not after them: a restarted node's routes are fresh sooner.
  // A router being away is not a broken node: the sessions retry on their own and never end the phase.
  deps.announcer?.announce(network.lease);
  const announcing = deps.announcer?.run(phase.signal).catch((err: unknown) => log.warn({ err }, 'BGP speaker stopped'));

  // Upstream's order: clean up the other mode, install ours, then write subnet.env (readiness means rules are in).
  const { rules, plan } = await installRules(deps.traffic, config, network.lease, opts, signal).catch(async (err: unknown) => {
    phase.abort(err);
    await announcing;
    signal.removeEventListener('abort', stopPhase);
    throw err;
  });
  log.info({ manager: rules.kind, masquerade: plan.masquerade, forward: plan.forward }, 'traffic rules in place');
  events.rulesInPlace(rules.kind, opts.iptablesResyncMs);

  const envText = renderSubnetEnv({
    ...(config.enableIPv4 && config.network ? { network: config.network } : {}),
    ...(network.lease.subnet ? { subnet: network.lease.subnet } : {}),
    ...(config.enableIPv6 && config.ipv6Network ? { ipv6Network: config.ipv6Network } : {}),
    ...(network.lease.ipv6Subnet ? { ipv6Subnet: network.lease.ipv6Subnet } : {}),
    mtu: network.mtu,
    ipMasq: opts.ipMasq,
  });
  try {
    await deps.writeFile(opts.subnetFile, envText);
    log.info({ file: opts.subnetFile }, 'wrote subnet file');
    events.subnetFileWritten();
    deps.onReady?.(network.lease);
  } catch (err) {
    // Upstream keeps running without becoming ready; pods on this node cannot start until this is fixed.
    log.warn({ err, file: opts.subnetFile }, 'failed to write subnet file');
  }

  let lost: LeaseLostError | undefined;
  const keeper = keepLease(
    network.lease,
    {
      subnets: deps.subnets,
      clock: deps.clock,
      random: deps.random,
      log: deps.rootLog.child({ component: 'lease-keeper' }),
      renewMarginMs: opts.renewMarginMs,
    },
    phase.signal,
    (renewed) => {
      events.leaseRenewed(renewed);
      deps.announcer?.announce(renewed);
    },
  ).catch((err: unknown) => {
    if (phase.signal.aborted) return;
    if (err instanceof LeaseLostError) {
      events.leaseLost(err.message);
      lost = err;
    }
    else log.error({ err }, 'lease keeper failed');
    phase.abort(err);
  });
  const running = network.run(phase.signal).catch((err: unknown) => {
    if (!phase.signal.aborted) log.error({ err }, 'backend stopped');
    phase.abort(err);
  });
  const keeping = keepRules(plan, {
    manager: rules,
    clock: deps.clock,
    log: deps.rootLog.child({ component: 'traffic' }),
    periodMs: opts.iptablesResyncMs,
    onRepair: () => events.rulesRepaired(rules.kind),
    onChecked: () => events.rulesChecked(),
  }, phase.signal);
  const probing = events.runProber(phase.signal).catch((err: unknown) => log.warn({ err }, 'peer prober stopped'));
  const blackholes = opts.ipBlackholeRoute ? keepBlackholes(deps, log, network.lease, opts.iptablesResyncMs, phase.signal) : Promise.resolve();
  const completing = deps.subnets.completeLease?.(network.lease, phase.signal).catch((err: unknown) => {
    if (!phase.signal.aborted) log.warn({ err }, 'cannot complete the lease');
  });
  await Promise.allSettled([keeper, running, keeping, blackholes, completing, probing, announcing]);
  signal.removeEventListener('abort', stopPhase);
  return lost ? { kind: 'lease-lost', message: lost.message } : { kind: 'stopped' };
}

/** Refuses a Network (or IPv6Network) that takes in this host's own addresses or connected networks. */
async function refuseNetworkConflicts(host: HostView, config: NetworkConfig): Promise<void> {
  const [interfaces, connected] = await Promise.all([host.interfaces(), host.connectedNetworks()]);
  for (const [key, network] of [['Network', config.enableIPv4 ? config.network : undefined], ['IPv6Network', config.enableIPv6 ? config.ipv6Network : undefined]] as const) {
    const conflict = network && networkConflict(network, interfaces, connected);
    if (network && conflict) throw new ConfigError(key, formatCidr(network), `overlaps this host's own network: ${conflict}`);
  }
}

/**
 * The store's peer leases through the peer guard: this host's addresses and connected networks are read once, when
 * the watch starts, as what a peer's lease must not cover.
 */
async function* validPeerLeases(deps: DaemonDeps, observer: PeerGuardObserver, config: NetworkConfig, own: Lease, signal: AbortSignal): AsyncIterable<readonly LeaseEvent[]> {
  const [interfaces, connectedNetworks] = await Promise.all([deps.host.interfaces(), deps.host.connectedNetworks()]);
  const rules = {
    ranges: allocationRanges(config),
    // etcd leases are carved by flannel itself, so anything but SubnetLen is forged; node IPAM may use other sizes.
    exactSubnetLength: deps.subnets.name === 'etcd',
    own,
    host: { addresses: interfaces.flatMap((i) => i.addrs), connectedNetworks },
  };
  const guard = new PeerGuard(rules, deps.rootLog.child({ component: 'peer-guard' }), observer);
  yield* guardedLeases(deps.subnets.watchLeases(signal), guard);
}




/** --ip-blackhole-route: keeps a blackhole route for our own subnet(s), re-checked every period. */
function keepBlackholes(deps: DaemonDeps, log: Logger, lease: Lease, periodMs: number, signal: AbortSignal): Promise<void> {
  const subnets = [lease.subnet, lease.ipv6Subnet].filter((n) => n !== undefined);
  return repeatEvery({ clock: deps.clock, periodMs, log, failure: 'cannot add blackhole route', immediately: true }, async () => {
    for (const subnet of subnets) await deps.datapath.ensureBlackhole(subnet);
  }, signal);
}

/**
 * Retries `fn` with backoff until it succeeds or `signal` aborts. Config errors and store outages alike are
 * conditions an operator fixes while the daemon waits, so none of them ends the process; each distinct error is
 * logged once at warn level, repeats at debug.
 */
async function retryUntilDone<T>(deps: DaemonDeps, log: Logger, signal: AbortSignal, what: string, fn: () => Promise<T>): Promise<T> {
  const backoff = new Backoff(STARTUP_RETRY, deps.random);
  let lastMessage = '';
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (signal.aborted) throw err;
      const message = errorMessage(err);
      const retryInMs = backoff.next();
      const fields = { err, code: err instanceof FlannelError ? err.code : undefined, retryInMs };
      if (message !== lastMessage) log.warn(fields, `cannot get ${what} yet; retrying`);
      else log.debug(fields, `cannot get ${what} yet; retrying`);
      lastMessage = message;
      await deps.clock.sleep(retryInMs, signal);
    }
  }
}

function describeNetworks(config: NetworkConfig): string {
  return [config.network, config.ipv6Network]
    .filter((n) => n !== undefined)
    .map((n) => formatCidr(n))
    .join(',');
}

/** This mode's rules in place and the other mode's gone; fully-random only where the host can do it. */
async function installRules(
  traffic: DaemonDeps['traffic'],
  config: NetworkConfig,
  lease: Lease,
  opts: DaemonOptions,
  signal: AbortSignal,
): Promise<{ rules: TrafficManager; plan: TrafficPlan }> {
  const [rules, other] = config.enableNFTables ? [traffic.nftables, traffic.iptables] : [traffic.iptables, traffic.nftables];
  const wanted = trafficPlan(config, lease, opts);
  const plan = wanted.fullyRandom && !(await rules.supportsRandomFully(signal)) ? { ...wanted, fullyRandom: false } : wanted;
  await other.removeAll(signal);
  await rules.ensure(plan, signal);
  return { rules, plan };
}
