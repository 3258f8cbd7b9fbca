#!/usr/bin/env -S node --max-semi-space-size=4
/**
 * The shebang caps V8's young generation: listing thousands of leases at start-up makes short-lived garbage, and
 * the default 16 MiB semi-spaces would keep ~30 MB more resident for nothing.
 *
 * flanneld's composition root: the only place that reads argv and env, installs signal handlers, builds the real
 * clients and decides the exit code. Everything it wires is injected into runDaemon.
 */
import { readFile } from 'node:fs/promises';
import { NetlinkDatapath } from '../backends/datapath/netlink-datapath.js';
import { builtInBackends } from '../backends/index.js';
import { loadOptions, type FlanneldOptions } from './config/options.js';
import { runDaemon } from './daemon.js';
import { systemHostView } from './ip/system-host-view.js';
import { systemClock } from './runtime/clock.js';
import { createRootLogger } from './runtime/logger.js';
import { mathRandom } from './runtime/random.js';
import { abortOnSignals } from './runtime/signals.js';
import { createEtcdClient, planEtcdClient } from './subnet/etcd/etcd-client.js';
import { EtcdLeaseStore } from './subnet/etcd/etcd-lease-store.js';
import { EtcdSubnetManager } from './subnet/etcd/etcd-subnet-manager.js';
import { writeSubnetFile } from './subnet/subnet-env.js';
import { execCommand } from './runtime/exec.js';
import { IptablesTrafficManager } from './traffic/iptables-manager.js';
import { NftablesTrafficManager } from './traffic/nftables-manager.js';
import { readVersion } from './version.js';
import type { Logger } from 'pino';
import { formatIp } from './ip/address.js';
import { startHealthServer, type HealthView } from './health/health-server.js';
import { Registry } from 'prom-client';
import { DaemonStatus } from './health/daemon-status.js';
import { LoopMonitor } from './health/loop-monitor.js';
import { Readiness } from './health/readiness.js';
import { createMetrics } from './metrics/metrics.js';
import { countSubnetErrors } from './metrics/subnet-errors.js';
import { runStatusCommand } from './status/status-command.js';
import { bgpSpeakerFromOptions } from './bgp/bgp-from-options.js';
import { tcpConnector } from './bgp/bgp-tcp.js';
import { formatCidr } from './ip/cidr.js';
import { createRawSocketPinger } from './probe/pinger.js';
import { PeerProber } from './probe/peer-prober.js';
import { annotationNames } from './subnet/kube/annotations.js';
import { KubeSubnetManager, waitForNodeName } from './subnet/kube/kube-subnet-manager.js';
import type { SubnetManager } from './subnet/subnet-manager.js';

/** How long the lease watch may neither hold a connection nor retry before /healthz reports it: twice this. */
const LEASE_WATCH_PERIOD_MS = 30_000;

async function main(argv: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  if (argv[0] === 'status') return runStatusCommand(argv.slice(1), env, (s) => process.stdout.write(s));
  const loaded = loadOptions(argv, env);
  switch (loaded.kind) {
    case 'help':
      process.stdout.write(loaded.text);
      return 0;
    case 'version':
      process.stdout.write(`${readVersion()}\n`);
      return 0;
    case 'error':
      process.stderr.write(`flanneld: ${loaded.message}\n\n${loaded.usage}`);
      return 2;
    case 'run':
      break;
  }
  const options: FlanneldOptions = loaded.options;
  // Every line names its component; lines from this composition root are "main".
  const root = createRootLogger(options.v);
  const log = root.child({ component: 'main' });
  log.info({ version: readVersion() }, 'starting flanneld');
  for (const warning of loaded.warnings) log.warn(warning);
  const stop = abortOnSignals((name) => log.info({ signal: name }, 'shutting down'));
  const registry = new Registry();
  const metrics = createMetrics(registry);
  const loops = new LoopMonitor(systemClock);
  const readiness = new Readiness();
  readiness.onChange((ready) => metrics.ready.set(ready ? 1 : 0));
  metrics.ready.set(0);
  const status = new DaemonStatus(() => systemClock.now());
  const healthView = (): HealthView => ({ ready: readiness.ready(), notReady: readiness.reasons(), stalled: loops.stalled() });
  const health = options.healthzPort > 0
    ? await startHealthServer({
        host: formatIp(options.healthzIp),
        port: options.healthzPort,
        health: healthView,
        metrics: async () => ({ contentType: registry.contentType, body: await registry.metrics() }),
        status: () => status.report(healthView()),
        metricsAllowFrom: options.metricsAllowFrom,
        log: root.child({ component: 'health' }),
      })
    : undefined;
  const datapath = new NetlinkDatapath();
  metrics.trackNetlinkOverruns(() => {
    const stats = datapath.netlinkStats();
    return { notification: stats.notificationOverruns, request: stats.requestOverruns };
  });
  let store: { subnets: SubnetManager; close(): void };
  // The watch is the lease-watcher loop: alive while connected or retrying, stalled when it does neither.
  // Watched from its first attempt on, so waiting for the config at start-up does not count as a stall.
  let watching = false;
  const onWatchState = (up: boolean): void => {
    if (!watching) loops.register('lease-watcher', LEASE_WATCH_PERIOD_MS);
    watching = true;
    loops.setUp('lease-watcher', up);
  };
  try {
    store = options.kubeSubnetMgr ? await kubeStore(options, env, root, stop.signal, onWatchState) : etcdStore(options, root, onWatchState);
  } catch (err) {
    await health?.close();
    datapath.close();
    if (stop.signal.aborted) return 0;
    log.error({ err }, 'fatal');
    return 1;
  }
  const subnets = countSubnetErrors(store.subnets, (op) => metrics.subnetManagerErrors.inc({ op }));
  const pinger = options.peerProbeInterval > 0 ? createRawSocketPinger() : undefined;
  const prober = pinger
    ? new PeerProber({
        pinger,
        clock: systemClock,
        log: root.child({ component: 'probe' }),
        intervalMs: options.peerProbeInterval * 1000,
        onResult: (r) => {
          if (r.rttMs !== undefined) metrics.probeRtt.observe(r.rttMs / 1000);
          metrics.peerReachable.set({ peer: formatCidr(r.target.subnet) }, r.reachable ? 1 : 0);
        },
      })
    : undefined;
  const announcer = bgpSpeakerFromOptions(options, { connect: tcpConnector(), clock: systemClock, random: mathRandom, log: root.child({ component: 'bgp' }) });
  if (announcer) {
    status.bgpSessions = () => announcer.status();
    metrics.trackBgpSessions(() => announcer.status(), () => systemClock.now());
  }
  try {
    const result = await runDaemon(
      {
        subnets,
        backends: builtInBackends({ wireguardImplementation: options.wireguardImplementation }),
        host: systemHostView(),
        datapath,
        traffic: {
          iptables: new IptablesTrafficManager({ exec: execCommand, log: root.child({ component: 'iptables' }) }),
          nftables: new NftablesTrafficManager({ exec: execCommand, log: root.child({ component: 'nftables' }) }),
        },
        clock: systemClock,
        random: mathRandom,
        rootLog: root,
        readFile: (path) => readFile(path, 'utf8').catch(() => undefined),
        writeFile: writeSubnetFile,
        ops: { loops, readiness, status, metrics, ...(prober ? { prober } : {}) },
        ...(announcer ? { announcer } : {}),
      },
      {
        subnetFile: options.subnetFile,
        ipMasq: options.ipMasq,
        ipMasqFullyRandomDisable: options.ipMasqFullyRandomDisable,
        ipMasqExclude: options.ipMasqExclude,
        iptablesForwardRules: options.iptablesForwardRules,
        iptablesResyncMs: options.iptablesResync * 1000,
        ipBlackholeRoute: options.ipBlackholeRoute,
        renewMarginMs: options.subnetLeaseRenewMargin * 60_000,
        datapathResyncMs: options.datapathResync * 1000,
        iface: options.iface,
        ifaceRegex: options.ifaceRegex,
        ifaceCanReach: options.ifaceCanReach,
        publicIP: options.publicIp,
        publicIPv6: options.publicIpv6,
      },
      stop.signal,
    );
    if (result.kind === 'lease-lost') {
      log.error({ reason: result.message }, 'lease lost to another node; exiting');
      return 1;
    }
    // verbatim upstream: flannel main.go, the last log line of a clean shutdown
    log.info('Exiting cleanly...');
    return 0;
  } catch (err) {
    if (stop.signal.aborted) {
      // verbatim upstream: flannel main.go, the last log line of a clean shutdown
      log.info('Exiting cleanly...');
      return 0;
    }
    log.error({ err }, 'fatal');
    return 1;
  } finally {
    store.close();
    pinger?.close();
    datapath.close();
    await health?.close();
  }
}

function etcdStore(options: FlanneldOptions, log: Logger, onWatchState: (up: boolean) => void): { subnets: SubnetManager; close(): void } {
  const plan = planEtcdClient({
    endpoints: options.etcdEndpoints,
    keyFile: options.etcdKeyfile,
    certFile: options.etcdCertfile,
    caFile: options.etcdCafile,
    username: options.etcdUsername,
    password: options.etcdPassword,
  });
  if (plan.insecure) log.warn({ component: 'subnet-etcd', endpoints: options.etcdEndpoints }, 'talking to etcd without TLS');
  else log.info({ component: 'subnet-etcd', endpoints: options.etcdEndpoints, clientCertificate: plan.clientCertificate }, 'talking to etcd over TLS');
  const client = createEtcdClient(plan);
  const etcdLog = log.child({ component: 'subnet-etcd' });
  const subnets = new EtcdSubnetManager({
    store: new EtcdLeaseStore(client, options.etcdPrefix, { log: etcdLog }),
    prefix: options.etcdPrefix,
    clock: systemClock,
    random: mathRandom,
    log: etcdLog,
    onWatchState,
  });
  return { subnets, close: () => client.close() };
}

/** --kube-subnet-mgr: finding our node needs the API when only POD_NAME is known, so that waits for the API. */
async function kubeStore(
  options: FlanneldOptions,
  env: NodeJS.ProcessEnv,
  log: Logger,
  signal: AbortSignal,
  onWatchState: (up: boolean) => void,
): Promise<{ subnets: SubnetManager; close(): void }> {
  const kubeLog = log.child({ component: 'subnet-kube' });
  // Loaded only in this mode: @kubernetes/client-node adds ~300 ms and ~55 MB to a start, which etcd-mode daemons
  // would pay for nothing.
  const [{ kubeConfigFor }, { KubeNodeApi }] = await Promise.all([
    import('./subnet/kube/kube-config.js'),
    import('./subnet/kube/kube-node-api.js'),
  ]);
  const annotations = annotationNames(options.kubeAnnotationPrefix);
  const api = new KubeNodeApi(kubeConfigFor({ kubeconfigFile: options.kubeconfigFile, apiUrl: options.kubeApiUrl, env }));
  const nodeName = await waitForNodeName(env, api, { clock: systemClock, random: mathRandom, log: kubeLog }, signal);
  kubeLog.info({ node: nodeName, netConf: options.netConfigPath }, 'using the Kubernetes API for subnets');
  const subnets = new KubeSubnetManager({
    api,
    nodeName,
    annotations,
    netConfPath: options.netConfigPath,
    readFile: (path) => readFile(path, 'utf8'),
    setNodeNetworkUnavailable: options.setNodeNetworkUnavailable,
    clock: systemClock,
    random: mathRandom,
    log: kubeLog,
    onWatchState,
  });
  return { subnets, close: () => undefined };
}

main(process.argv.slice(2), process.env).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`flanneld: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
