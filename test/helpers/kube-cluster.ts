/**
 * A real Kubernetes cluster for tests: the lab's control plane (lab/kube/control-plane.ts: etcd 3.6, kube-apiserver,
 * kube-controller-manager with node IPAM, built from their Go modules by tools/build.sh) in a topology's hub, and
 * the real flanneld in --kube-subnet-mgr mode on each host, with the manifest's service account as its identity.
 * Every process is tracked by PID (test/helpers/processes.ts), so a crashed run's leftovers are swept by the next.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { V1Node } from '@kubernetes/client-node';
import {
  apiUrlFor, apiserverReady, argvOf, compactEtcd, etcdReady, kubectlFor, nodeIpamFor, prepareControlPlane, waitUntilServing,
  type ControlPlaneComponent, type ControlPlaneFiles, type ControlPlaneSpec,
} from '../../lab/kube/control-plane.js';
import { FLANNEL_USER, writeFlannelKubeconfig } from '../../lab/kube/flannel-identity.js';
import type { Kubectl } from '../../lab/kube/kubectl.js';
import { kubeTools } from '../../lab/kube/kube-tools.js';
import { startFlanneld, startUpstreamFlanneld } from './flanneld-process.js';
import type { NetnsRun } from './netns.js';
import { spawnTracked, waitFor, type TrackedProcess } from './processes.js';
import { buildTopology, type Topology, type TopologyOptions } from './topology.js';

export const FLANNEL_ANNOTATION = 'flannel.alpha.coreos.com/';

/** One request in the apiserver's audit log (the fields the tests read). */
export interface AuditEvent {
  readonly auditID: string;
  readonly stage: string;
  readonly verb: string;
  readonly user: { readonly username: string };
  readonly objectRef?: { readonly resource?: string; readonly subresource?: string; readonly name?: string };
  readonly responseStatus?: { readonly code?: number };
  readonly requestURI: string;
}

export interface KubeCluster {
  readonly topology: Topology;
  readonly kubectl: Kubectl;
  readonly apiUrl: string;
  readonly dir: string;
  readonly spec: ControlPlaneSpec;
  readonly files: ControlPlaneFiles;
  /** The kubeconfig every flanneld uses: the manifest's service account token. */
  readonly flannelKubeconfig: string;
  /** A host's Node is named like the host: h1, h2, … */
  nodeOf(host: string): string;
  envFile(host: string): string;
  /** The host's subnet.env, or undefined while flanneld has not written it. */
  readEnv(host: string): string | undefined;
  /** Registers the host's Node (as its kubelet would) with its underlay address(es). */
  registerNode(host: string): Promise<void>;
  node(host: string): Promise<V1Node | undefined>;
  /**
   * Creates a Node no flanneld runs for: its flannel annotations (keys without the prefix) describe a peer, and
   * node IPAM gives it its podCIDR(s).
   */
  createPeerNode(name: string, annotations: Readonly<Record<string, string>>): Promise<void>;
  /** flanneld's annotations on the host's Node. */
  annotations(host: string): Promise<Record<string, string>>;
  /**
   * Starts flanneld for `host` (NODE_NAME = its Node) with the cluster's flags and `extraArgs`, after removing the
   * host's subnet.env (so its reappearance means this daemon wrote it); does not wait.
   */
  start(host: string, extraArgs?: readonly string[]): TrackedProcess;
  /** Upstream flannel's flanneld (tools/build.sh flannel) on `host`, with the same kube arguments as ours. */
  startUpstream(host: string, extraArgs?: readonly string[]): TrackedProcess;
  daemon(host: string): TrackedProcess | undefined;
  /** Waits for the host's subnet.env; fails at once, with the daemon's output, if its flanneld exits. */
  waitForSubnetEnv(host: string, timeoutMs?: number): Promise<string>;
  /** Starts a control plane component and waits until it serves. */
  startComponent(component: ControlPlaneComponent): Promise<void>;
  stopComponent(component: ControlPlaneComponent): Promise<void>;
  /** Compacts etcd's history up to now; returns the revision. */
  compact(): Promise<number>;
  /** Every request flanneld's service account made so far, one event each (watches still open included). */
  flannelRequests(): AuditEvent[];
  /** Stops every daemon and component (by PID) and removes the namespaces and files. */
  stop(): Promise<void>;
}

export interface KubeClusterOptions extends TopologyOptions {
  /** Written to net-conf.json, which every flanneld reads; node IPAM follows its Network(s) and subnet lengths. */
  readonly netConf: object;
  /** Flags every flanneld gets besides the kube ones. */
  readonly flanneldArgs?: readonly string[];
  /** Start kube-controller-manager (node IPAM) with the rest (default true). */
  readonly nodeIpam?: boolean;
}

export async function startKubeCluster(run: NetnsRun, opts: KubeClusterOptions): Promise<KubeCluster> {
  const { netConf, flanneldArgs = [], nodeIpam = true, ...topologyOptions } = opts;
  const dir = mkdtempSync(join(tmpdir(), 'flannel-ts-kube-'));
  const netConfPath = join(dir, 'net-conf.json');
  const netConfText = JSON.stringify(netConf);
  writeFileSync(netConfPath, netConfText);
  const tools = kubeTools();
  const topology = await buildTopology(run, topologyOptions);
  const spec: ControlPlaneSpec = { dir, hub: topology.hub, stack: topology.stack, tools, ...nodeIpamFor(netConfText) };
  const files = await prepareControlPlane(spec);
  const kubectl = kubectlFor(spec);
  const apiUrl = apiUrlFor(spec.stack);
  const components = new Map<ControlPlaneComponent, TrackedProcess>();
  const daemons = new Map<string, TrackedProcess>();
  const flannelKubeconfig = join(dir, 'flanneld.kubeconfig');
  const envFile = (host: string): string => join(dir, `${host}.env`);
  const readEnv = (host: string): string | undefined => (existsSync(envFile(host)) ? readFileSync(envFile(host), 'utf8') : undefined);

  const kubeArgs = (host: string): string[] => ['--kube-subnet-mgr', `--kubeconfig-file=${flannelKubeconfig}`,
    `--net-config-path=${netConfPath}`, `--subnet-file=${envFile(host)}`];
  const ready: Record<ControlPlaneComponent, () => Promise<boolean>> = {
    'etcd': () => etcdReady(spec),
    'kube-apiserver': () => apiserverReady(kubectl),
    // It has no port of its own here (--secure-port=0): running a moment without exiting is as ready as it says.
    'kube-controller-manager': async () => true,
    'kube-scheduler': async () => true,
  };
  const startComponent = async (component: ControlPlaneComponent): Promise<void> => {
    const [binary, ...args] = argvOf(component, spec, files);
    const proc = spawnTracked('ip', ['netns', 'exec', topology.hub.name, binary as string, ...args], {}, binary);
    components.set(component, proc);
    await waitUntilServing(component, ready[component], () => proc.child.exitCode === null && proc.child.signalCode === null,
      () => proc.output().slice(-3000));
  };
  const stopComponent = async (component: ControlPlaneComponent): Promise<void> => {
    await components.get(component)?.stop();
    components.delete(component);
  };
  const stopAll = async (): Promise<void> => {
    if (process.env['DEBUG_KUBE']) for (const [h, d] of daemons) console.log(h, d.output().slice(-4000));
    for (const d of daemons.values()) await d.stop();
    for (const c of ['kube-controller-manager', 'kube-apiserver', 'etcd'] as const) await stopComponent(c);
    await run.cleanup();
    rmSync(dir, { recursive: true, force: true });
  };

  try {
    await startComponent('etcd');
    await startComponent('kube-apiserver');
    await writeFlannelKubeconfig(kubectl, flannelKubeconfig, apiUrl, files.pki.caCert);
    if (nodeIpam) await startComponent('kube-controller-manager');
  } catch (err) {
    await stopAll();
    throw err;
  }

  const cluster: KubeCluster = {
    topology, kubectl, apiUrl, dir, spec, files, flannelKubeconfig,
    nodeOf: (host) => host,
    envFile,
    readEnv,
    async registerNode(host) {
      const h = topology.host(host);
      await kubectl.registerNode(host, [...new Set([h.ip, ...(h.ip6 ? [h.ip6] : [])])]);
    },
    node: (host) => kubectl.node(host),
    async createPeerNode(name, annotations) {
      const prefixed = Object.fromEntries(Object.entries(annotations).map(([k, v]) => [`${FLANNEL_ANNOTATION}${k}`, v]));
      await kubectl.run(['create', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'Node', metadata: { name, annotations: prefixed } }));
    },
    async annotations(host) {
      const all = (await kubectl.node(host))?.metadata?.annotations ?? {};
      return Object.fromEntries(Object.entries(all).filter(([k]) => k.startsWith(FLANNEL_ANNOTATION)));
    },
    start(host, extraArgs = []) {
      rmSync(envFile(host), { force: true });
      const proc = startFlanneld(topology.host(host).ns.name, [...kubeArgs(host), ...flanneldArgs, ...extraArgs], { NODE_NAME: host, WIREGUARD_KEY_FILE: join(dir, `${host}.wgkey`) });
      daemons.set(host, proc);
      return proc;
    },
    startUpstream(host, extraArgs = []) {
      rmSync(envFile(host), { force: true });
      const proc = startUpstreamFlanneld(topology.host(host).ns.name, [...kubeArgs(host), '--iface=eth0', ...extraArgs], { NODE_NAME: host });
      daemons.set(host, proc);
      return proc;
    },
    daemon: (host) => daemons.get(host),
    async waitForSubnetEnv(host, timeoutMs = 30_000) {
      const proc = daemons.get(host);
      try {
        return await waitFor(`${host} subnet.env`, () => {
          if (proc && proc.child.exitCode !== null) throw new Error(`flanneld on ${host} exited`);
          return readEnv(host);
        }, timeoutMs);
      } catch (err) {
        throw new Error(`${(err as Error).message}; flanneld output:\n${proc?.output().slice(-3000)}`, { cause: err });
      }
    },
    startComponent,
    stopComponent,
    compact: () => compactEtcd(spec),
    flannelRequests() {
      if (!existsSync(files.auditLog)) return [];
      // A watch logs ResponseStarted when it opens and ResponseComplete when it ends: one entry per request.
      const byId = new Map<string, AuditEvent>();
      for (const line of readFileSync(files.auditLog, 'utf8').split('\n')) {
        if (!line) continue;
        const event = JSON.parse(line) as AuditEvent;
        if (event.user.username === FLANNEL_USER) byId.set(event.auditID, event);
      }
      return [...byId.values()];
    },
    stop: stopAll,
  };
  return cluster;
}
