/**
 * The lab in Kubernetes mode (`up --kube`): the real control plane of lab/kube in the hub namespace (its files in
 * `.lab/<id>/`, the admin kubeconfig at `.lab/<id>/kubeconfig`), each host registering its Node as a kubelet would,
 * and flanneld with --kube-subnet-mgr holding only the manifest's RBAC. The subnets come from node IPAM.
 */
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { V1Node } from '@kubernetes/client-node';
import {
  apiUrlFor, apiserverReady, argvOf, controlPlaneFiles, etcdReady, kubectlFor, nodeIpamFor, prepareControlPlane, waitUntilServing,
  componentsOf, CONTROL_PLANE_COMPONENTS, type ControlPlaneComponent, type ControlPlaneSpec,
} from './kube/control-plane.js';
import { writeFlannelKubeconfig } from './kube/flannel-identity.js';
import type { Kubectl } from './kube/kubectl.js';
import { kubeTools } from './kube/kube-tools.js';
import { Netns } from './netns.js';
import { isRunning, logTail, startDetached } from './lab-processes.js';
import { markdownTable } from './lab-report.js';
import { labDir, labNetns, type HostRecord, type LabState, type ProcessRecord } from './lab-state.js';

const ANNOTATION = 'flannel.alpha.coreos.com/';

export const isControlPlaneComponent = (name: string): name is ControlPlaneComponent =>
  (CONTROL_PLANE_COMPONENTS as readonly string[]).includes(name);

/** The control plane of a lab: files under `.lab/<id>/`, node IPAM following the lab's network config. */
export function labControlPlane(state: Pick<LabState, 'id' | 'stack' | 'networkConfig' | 'kubelet'>): ControlPlaneSpec {
  return {
    dir: labDir(state.id),
    hub: new Netns(labNetns(state.id, 'hub')),
    stack: state.stack,
    tools: kubeTools(),
    ...nodeIpamFor(state.networkConfig),
    ...(state.kubelet ? { kubelets: true } : {}),
  };
}

const flannelKubeconfig = (id: string): string => join(labDir(id), 'flanneld.kubeconfig');
const netConfPath = (id: string): string => join(labDir(id), 'net-conf.json');

/** Until the component serves (etcd healthy, the apiserver's /readyz ok, the controller manager still running). */
export async function waitForComponent(spec: ControlPlaneSpec, component: ControlPlaneComponent, record: ProcessRecord): Promise<void> {
  const kubectl = kubectlFor(spec);
  const sleep = (ms: number): Promise<boolean> => new Promise((r) => setTimeout(() => r(true), ms));
  const ready: Record<ControlPlaneComponent, () => Promise<boolean>> = {
    'etcd': () => etcdReady(spec),
    'kube-apiserver': () => apiserverReady(kubectl),
    // No port of its own (--secure-port=0): still running a moment after its start is as ready as it tells.
    'kube-controller-manager': () => sleep(500),
    'kube-scheduler': () => sleep(500),
  };
  await waitUntilServing(component, ready[component], () => isRunning(record), () => logTail(record.log, 12));
}

/**
 * Starts etcd 3.6, kube-apiserver and kube-controller-manager in the hub (recorded in `state.processes`, saved by
 * `save` as each starts), applies the manifest's RBAC and writes flanneld's kubeconfig and net-conf.json.
 */
export async function startLabControlPlane(state: LabState, save: () => void): Promise<ControlPlaneSpec> {
  const spec = labControlPlane(state);
  const files = await prepareControlPlane(spec);
  writeFileSync(netConfPath(state.id), state.networkConfig);
  for (const component of componentsOf(spec)) {
    const record = startDetached(spec.hub.name, argvOf(component, spec, files), join(spec.dir, `${component}.log`));
    state.processes[component] = record;
    save();
    await waitForComponent(spec, component, record);
    if (component === 'kube-apiserver') await writeFlannelKubeconfig(kubectlFor(spec), flannelKubeconfig(state.id), apiUrlFor(spec.stack), files.pki.caCert);
  }
  return spec;
}

export function describeControlPlane(state: Pick<LabState, 'stack' | 'networkConfig'>): string {
  const ipam = nodeIpamFor(state.networkConfig);
  const ranges = ipam.clusterCidrs.map((c, i) => `${c} /${ipam.nodeMaskSizes[i]}`).join(' + ');
  return `Kubernetes control plane: etcd 3.6, kube-apiserver on ${apiUrlFor(state.stack)}, node IPAM (${ranges} per node)`;
}

/** The host's Node, as its kubelet would register it: its name and underlay address(es). */
export async function registerLabNode(kubectl: Kubectl, host: HostRecord): Promise<void> {
  await kubectl.registerNode(host.name, [...new Set([host.ip, ...(host.ip6 ? [host.ip6] : [])])]);
}

/** flanneld in Kubernetes mode, as the DaemonSet runs it: NODE_NAME set, the manifest's net-conf.json path given. */
export function kubeFlanneldArgv(flanneld: string, state: Pick<LabState, 'id'>, host: HostRecord, healthzPort: number): string[] {
  // env execs in place, like `ip netns exec`, so the recorded PID stays the daemon's own.
  return ['env', `NODE_NAME=${host.name}`, flanneld, '--kube-subnet-mgr', `--kubeconfig-file=${flannelKubeconfig(state.id)}`,
    `--net-config-path=${netConfPath(state.id)}`, '--ip-masq', `--subnet-file=${join(host.dir, 'subnet.env')}`,
    '--healthz-ip=127.0.0.1', `--healthz-port=${healthzPort}`];
}

/** One row per Node: what node IPAM gave it and what its flanneld published. */
export function nodesTable(nodes: readonly V1Node[]): string {
  const rows = nodes.map((node) => {
    const a = node.metadata?.annotations ?? {};
    const mac = (key: string): string | undefined => {
      try {
        return (JSON.parse(a[`${ANNOTATION}${key}`] ?? '{}') as { VtepMAC?: string }).VtepMAC;
      } catch {
        return undefined;
      }
    };
    const cond = node.status?.conditions?.find((c) => c.type === 'NetworkUnavailable');
    const cells = (...values: (string | undefined)[]): string => values.filter(Boolean).join(', ') || '-';
    return [node.metadata?.name ?? '-', cells(...(node.spec?.podCIDRs ?? [node.spec?.podCIDR])),
      cells(a[`${ANNOTATION}public-ip`], a[`${ANNOTATION}public-ipv6`]), a[`${ANNOTATION}backend-type`] || '-',
      cells(mac('backend-data'), mac('backend-v6-data')), cond ? `${cond.status} (${cond.reason ?? '-'})` : '-'];
  });
  return markdownTable(['node', 'podCIDR (node IPAM)', 'public-ip', 'backend-type', 'VtepMAC', 'NetworkUnavailable'], rows);
}

/** `npm run lab -- kubectl -- ARGS`: the built kubectl, admin kubeconfig, in the hub; its exit status is ours. */
export function runKubectl(state: LabState, args: readonly string[]): number {
  if (!state.kube) throw new Error(`lab ${state.id} is not a Kubernetes lab (bring one up with: npm run lab -- up --kube --id ${state.id})`);
  const spec = labControlPlane(state);
  const run = spawnSync('ip', ['netns', 'exec', spec.hub.name, spec.tools.kubectl, `--kubeconfig=${controlPlaneFiles(spec).adminKubeconfig}`, ...args], { stdio: 'inherit' });
  if (run.error) throw run.error;
  return run.status ?? 1;
}
