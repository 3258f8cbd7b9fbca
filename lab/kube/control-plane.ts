/**
 * A real Kubernetes control plane in the hub namespace, as plain processes: etcd 3.6 on the hub's loopback,
 * kube-apiserver (TLS, RBAC, a service-account signing key, an audit log of flanneld's requests) on the hub's underlay
 * address, and kube-controller-manager running node IPAM only, so every Node gets its podCIDR(s) from the real range
 * allocator. Used by the lab (`up --kube`) and the real tests alike; how processes are started and stopped is theirs
 * (the `Launch` they pass), what runs and with which flags is decided here once.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { allocationRanges, parseNetworkConfig } from '../../flanneld/config/network-config.js';
import { formatCidr } from '../../flanneld/ip/cidr.js';
import type { Netns } from '../netns.js';
import { HUB_IP, HUB_IP6 } from '../underlay-addresses.js';
import { Kubectl } from './kubectl.js';
import { makeClientCert, makeControlPlanePki, pkiFiles, writeKubeconfig, type ClientCert, type ControlPlanePki } from './kube-pki.js';
import type { KubeTools } from './kube-tools.js';

export type ControlPlaneComponent = 'etcd' | 'kube-apiserver' | 'kube-controller-manager' | 'kube-scheduler';
export const CONTROL_PLANE_COMPONENTS: readonly ControlPlaneComponent[] = ['etcd', 'kube-apiserver', 'kube-controller-manager', 'kube-scheduler'];

/** What a control plane runs, in start order: the scheduler only when kubelets run pods. */
export const componentsOf = (spec: Pick<ControlPlaneSpec, 'kubelets'>): ControlPlaneComponent[] =>
  CONTROL_PLANE_COMPONENTS.filter((c) => c !== 'kube-scheduler' || spec.kubelets === true);

/** Which families the cluster has: IPv4 only, dual-stack (IPv4 primary) or IPv6 only, as the lab's stacks. */
export type ClusterStack = 'v4' | 'dual' | 'v6';

export interface ControlPlaneSpec {
  /** Keys, data and logs of this control plane. */
  readonly dir: string;
  readonly hub: Netns;
  readonly stack: ClusterStack;
  /** kube-controller-manager --cluster-cidr: the flannel Network and/or IPv6Network, IPv4 first. */
  readonly clusterCidrs: readonly string[];
  /** The node CIDR mask size per entry of clusterCidrs: flannel's SubnetLen / IPv6SubnetLen. */
  readonly nodeMaskSizes: readonly number[];
  readonly tools: KubeTools;
  /**
   * Real kubelets run pods (`up --kubelet`): the scheduler runs, and the controller manager runs the controllers
   * pods and DaemonSets need besides node IPAM.
   */
  readonly kubelets?: boolean;
}

export const API_PORT = 6443;
/**
 * Service ranges: no kube-proxy runs, so these addresses are never routed anywhere; the apiserver only allocates
 * the `kubernetes` Service's ClusterIP from them. Documentation ranges, clear of the underlays and the pod networks.
 */
const SERVICE_CIDR4 = '203.0.113.0/24';
const SERVICE_CIDR6 = '2001:db8:5e::/112';
const ETCD_CLIENT_URL = 'http://127.0.0.1:2379';
/** The group every service account of the kube-flannel namespace is in: the audit log records their requests. */
export const FLANNEL_SA_GROUP = 'system:serviceaccounts:kube-flannel';

/** The address hosts reach the apiserver at: the hub's IPv4 address, or its IPv6 one when hosts have no IPv4. */
export const apiUrlFor = (stack: ClusterStack): string => `https://${stack === 'v6' ? `[${HUB_IP6}]` : HUB_IP}:${API_PORT}`;

function serviceCidrs(stack: ClusterStack): string {
  return stack === 'v4' ? SERVICE_CIDR4 : stack === 'v6' ? SERVICE_CIDR6 : `${SERVICE_CIDR4},${SERVICE_CIDR6}`;
}

/**
 * Node IPAM's settings for a net-conf.json: the cluster CIDR per family enabled (IPv4 first) and the node mask as
 * flannel's SubnetLen/IPv6SubnetLen (with flannel's defaults), so the podCIDRs node IPAM hands out are the subnets
 * flanneld would have leased.
 */
export function nodeIpamFor(netConf: string): Pick<ControlPlaneSpec, 'clusterCidrs' | 'nodeMaskSizes'> {
  const ranges = allocationRanges(parseNetworkConfig(netConf).config);
  const families = [ranges.v4, ranges.v6].filter((r) => r !== undefined);
  return { clusterCidrs: families.map((r) => formatCidr(r.network)), nodeMaskSizes: families.map((r) => r.subnetLen) };
}

/** The files a control plane keeps in its folder. */
export interface ControlPlaneFiles {
  readonly pki: ControlPlanePki;
  /** An admin (system:masters) kubeconfig for the hub's address. */
  readonly adminKubeconfig: string;
  readonly auditLog: string;
  readonly auditPolicy: string;
  readonly etcdData: string;
  /** The apiserver's client certificate towards kubelets (logs, exec, port-forward): system:masters. */
  readonly kubeletClient: ClientCert;
}

export function etcdArgv(spec: ControlPlaneSpec, files: ControlPlaneFiles): string[] {
  const peer = 'http://127.0.0.1:2380';
  return [spec.tools.etcd, '--name', 'control-plane', '--data-dir', files.etcdData,
    '--listen-client-urls', ETCD_CLIENT_URL, '--advertise-client-urls', ETCD_CLIENT_URL,
    '--listen-peer-urls', peer, '--initial-advertise-peer-urls', peer, '--initial-cluster', `control-plane=${peer}`,
    '--log-level', 'warn'];
}

export function apiserverArgv(spec: ControlPlaneSpec, files: ControlPlaneFiles): string[] {
  const { pki } = files;
  return [spec.tools.kubeApiserver,
    `--etcd-servers=${ETCD_CLIENT_URL}`,
    // Both families, so IPv6-only hosts reach it too; the hub always has its IPv4 address.
    '--bind-address=::', `--secure-port=${API_PORT}`,
    `--advertise-address=${spec.stack === 'v6' ? HUB_IP6 : HUB_IP}`,
    `--tls-cert-file=${pki.serverCert}`, `--tls-private-key-file=${pki.serverKey}`, `--client-ca-file=${pki.caCert}`,
    `--token-auth-file=${pki.tokenFile}`,
    '--authorization-mode=Node,RBAC',
    '--service-account-issuer=https://kubernetes.default.svc.cluster.local',
    `--service-account-key-file=${pki.serviceAccountPub}`, `--service-account-signing-key-file=${pki.serviceAccountKey}`,
    `--service-cluster-ip-range=${serviceCidrs(spec.stack)}`,
    `--audit-policy-file=${files.auditPolicy}`, `--audit-log-path=${files.auditLog}`, '--audit-log-maxsize=50', '--audit-log-maxbackup=1',
    // Open watches (every flanneld holds one) would otherwise keep a graceful stop waiting for the HTTP server's
    // 60 s shutdown timeout; with a grace period the apiserver ends them itself and exits in about a second.
    '--shutdown-watch-termination-grace-period=2s',
    `--kubelet-client-certificate=${files.kubeletClient.cert}`, `--kubelet-client-key=${files.kubeletClient.key}`,
    // A lab kubelet's hostname (h1, …) resolves nowhere; its underlay address does.
    '--kubelet-preferred-address-types=InternalIP',
    '--profiling=false'];
}

export function controllerManagerArgv(spec: ControlPlaneSpec, files: ControlPlaneFiles): string[] {
  const dual = spec.clusterCidrs.length > 1;
  const masks = dual
    ? [`--node-cidr-mask-size-ipv4=${spec.nodeMaskSizes[0]}`, `--node-cidr-mask-size-ipv6=${spec.nodeMaskSizes[1]}`]
    : [`--node-cidr-mask-size=${spec.nodeMaskSizes[0]}`];
  return [spec.tools.kubeControllerManager,
    `--kubeconfig=${files.adminKubeconfig}`,
    `--controllers=${(spec.kubelets ? KUBELET_CONTROLLERS : ['node-ipam-controller']).join(',')}`,
    `--root-ca-file=${files.pki.caCert}`,
    '--allocate-node-cidrs=true', `--cluster-cidr=${spec.clusterCidrs.join(',')}`, ...masks,
    `--service-cluster-ip-range=${serviceCidrs(spec.stack)}`,
    '--leader-elect=false', '--secure-port=0'];
}

/**
 * Without kubelets, node IPAM alone: no node-lifecycle controller, so Nodes without a kubelet are neither tainted
 * nor evicted. With kubelets, what pods need: node lifecycle (it lifts the not-ready taint the apiserver puts on
 * every new Node), DaemonSets, the default ServiceAccount and the kube-root-ca.crt ConfigMap every pod mounts, and
 * garbage collection of the pods of a deleted Node or DaemonSet.
 */
const KUBELET_CONTROLLERS = ['node-ipam-controller', 'node-lifecycle-controller', 'daemonset-controller', 'serviceaccount-controller',
  'root-ca-certificate-publisher-controller', 'garbage-collector-controller', 'pod-garbage-collector-controller'];

export function schedulerArgv(spec: ControlPlaneSpec, files: ControlPlaneFiles): string[] {
  return [spec.tools.kubeScheduler, `--kubeconfig=${files.adminKubeconfig}`, '--leader-elect=false', '--secure-port=0'];
}

export function argvOf(component: ControlPlaneComponent, spec: ControlPlaneSpec, files: ControlPlaneFiles): string[] {
  switch (component) {
    case 'etcd': return etcdArgv(spec, files);
    case 'kube-apiserver': return apiserverArgv(spec, files);
    case 'kube-controller-manager': return controllerManagerArgv(spec, files);
    case 'kube-scheduler': return schedulerArgv(spec, files);
  }
}

/** Where a control plane keeps its files: fixed names under spec.dir, so later commands find them. */
export function controlPlaneFiles(spec: Pick<ControlPlaneSpec, 'dir'>): ControlPlaneFiles {
  return {
    pki: pkiFiles(join(spec.dir, 'pki')),
    adminKubeconfig: join(spec.dir, 'kubeconfig'),
    auditLog: join(spec.dir, 'audit.log'),
    auditPolicy: join(spec.dir, 'audit-policy.yaml'),
    etcdData: join(spec.dir, 'etcd'),
    kubeletClient: { cert: join(spec.dir, 'pki', 'kubelet-client.crt'), key: join(spec.dir, 'pki', 'kubelet-client.key') },
  };
}

/** Keys, the admin kubeconfig and the audit policy; everything a first start needs besides the processes. */
export async function prepareControlPlane(spec: ControlPlaneSpec): Promise<ControlPlaneFiles> {
  const files = controlPlaneFiles(spec);
  mkdirSync(join(spec.dir, 'pki'), { recursive: true });
  const adminToken = await makeControlPlanePki(join(spec.dir, 'pki'), [HUB_IP, HUB_IP6, '127.0.0.1', '::1', '203.0.113.1', '2001:db8:5e::1'],
    ['kubernetes', 'kubernetes.default', 'kubernetes.default.svc', 'kubernetes.default.svc.cluster.local', 'localhost']);
  writeKubeconfig(files.adminKubeconfig, apiUrlFor(spec.stack), files.pki.caCert, 'admin', adminToken);
  await makeClientCert(join(spec.dir, 'pki'), 'kubelet-client', 'kube-apiserver-kubelet-client', ['system:masters']);
  // Metadata (who, what, answer) for flanneld's identity only: the RBAC test reads every request it made.
  writeFileSync(files.auditPolicy, [
    'apiVersion: audit.k8s.io/v1',
    'kind: Policy',
    'omitStages: ["RequestReceived"]',
    'rules:',
    '  - level: Metadata',
    `    userGroups: ["${FLANNEL_SA_GROUP}"]`,
    '  - level: None',
    '',
  ].join('\n'));
  return files;
}

/** The admin kubectl of this control plane, run in its hub. */
export const kubectlFor = (spec: ControlPlaneSpec): Kubectl => new Kubectl(spec.tools.kubectl, spec.hub, controlPlaneFiles(spec).adminKubeconfig);

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Until `ready()` answers true; fails at once when `running()` says the process is gone (with `why()`, its log),
 * and after `timeoutMs`.
 */
export async function waitUntilServing(what: string, ready: () => Promise<boolean>, running: () => boolean, why: () => string, timeoutMs = 90_000): Promise<void> {
  for (const deadline = Date.now() + timeoutMs; !(await ready()); await sleep(200)) {
    if (!running()) throw new Error(`${what} exited before it was ready:\n${why()}`);
    if (Date.now() > deadline) throw new Error(`${what} is not ready after ${timeoutMs} ms:\n${why()}`);
  }
}

/** etcd answers a health check (etcdctl 3.6 on the hub's loopback). */
export function etcdReady(spec: ControlPlaneSpec): Promise<boolean> {
  return spec.hub.exec(spec.tools.etcdctl, [`--endpoints=${ETCD_CLIENT_URL}`, '--command-timeout=2s', 'endpoint', 'health'])
    .then(() => true, () => false);
}

/** The apiserver's /readyz says ok: storage, RBAC bootstrap roles and every post-start hook are done. */
export function apiserverReady(kubectl: Kubectl): Promise<boolean> {
  return kubectl.run(['get', '--raw', '/readyz', '--request-timeout=2s']).then((out) => out.trim() === 'ok', () => false);
}

/** etcd's current revision, then compacts everything before it (what a long-running cluster does every 5 min). */
export async function compactEtcd(spec: ControlPlaneSpec): Promise<number> {
  const status = JSON.parse(await spec.hub.exec(spec.tools.etcdctl, [`--endpoints=${ETCD_CLIENT_URL}`, 'endpoint', 'status', '-w', 'json'])) as
    { Status?: { header?: { revision?: number } } }[];
  const revision = status[0]?.Status?.header?.revision;
  if (!revision) throw new Error('etcd reported no revision');
  await spec.hub.exec(spec.tools.etcdctl, [`--endpoints=${ETCD_CLIENT_URL}`, 'compact', String(revision)]);
  return revision;
}
