/**
 * Brings up one kubelet host inside an existing lab host (its network namespace and underlay): the mount namespace,
 * the reference CNI plugins in its /opt/cni/bin (flannel's init container adds ours), containerd with the lab's
 * images, the kubelet and kube-proxy. Processes are handed to `record` as they start, so `down` finds them even when
 * a later step fails.
 */
import { cpSync, readdirSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import type { LabImages } from '../../image/images.js';
import { makeClientCert, kubeconfigText } from '../kube/kube-pki.js';
import type { KubeTools } from '../kube/kube-tools.js';
import { isRunning, logTail, startDetached, stopProcess } from '../lab-processes.js';
import type { HostRecord, ProcessRecord } from '../lab-state.js';
import { containerdArgv, containerdServing, importImage, killAllTasks, writeContainerdConfig } from './containerd.js';
import { kubeProxyArgv, writeKubeProxyConfig } from './kube-proxy.js';
import { kubeletArgv, writeKubeletFiles } from './kubelet.js';
import { createNodeMounts, mountNsFileOf, privateDirOf, removeNodeMounts, type NodeMounts } from './node-mounts.js';
import { mountNsId, processTree } from './node-processes.js';

/** Debian's reference plugins (bridge, host-local, portmap, loopback, …), which 10-flannel.conflist delegates to. */
const REFERENCE_PLUGINS = '/usr/lib/cni';

export interface KubeletHostDeps {
  readonly tools: KubeTools;
  readonly images: LabImages;
  /** The control plane's PKI folder (its CA signs each host's client certificates). */
  readonly pkiDir: string;
  readonly caCert: string;
  readonly apiUrl: string;
  /** The cluster's pod networks, IPv4 first (kube-proxy tells cluster traffic from the rest by them). */
  readonly clusterCidrs: readonly string[];
}

/** The processes of a kubelet host, by role; state.processes keys them as `<host>/<role>`. */
export const KUBELET_HOST_ROLES = ['containerd', 'kubelet', 'kube-proxy'] as const;
export type KubeletHostRole = (typeof KUBELET_HOST_ROLES)[number];
export const processKey = (host: string, role: KubeletHostRole): string => `${host}/${role}`;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export const nodeMountsOf = (host: Pick<HostRecord, 'netns' | 'dir'>): NodeMounts =>
  ({ mountNs: mountNsFileOf(host.netns), netns: host.netns, root: join(host.dir, 'node') });

async function waitFor(what: string, ready: () => Promise<boolean>, record: ProcessRecord, timeoutMs: number): Promise<void> {
  for (const deadline = Date.now() + timeoutMs; !(await ready()); await sleep(200)) {
    if (!isRunning(record)) throw new Error(`${what} exited; the end of ${record.log}:\n${logTail(record.log, 15)}`);
    if (Date.now() > deadline) throw new Error(`${what} is not ready after ${timeoutMs} ms; the end of ${record.log}:\n${logTail(record.log, 15)}`);
  }
}

/** Starts one role of a host in its namespaces. */
function startRole(host: HostRecord, node: NodeMounts, role: KubeletHostRole, argv: readonly string[]): ProcessRecord {
  return startDetached(host.netns, argv, join(host.dir, `${role}.log`), node.mountNs);
}

export async function startKubeletHost(host: HostRecord, deps: KubeletHostDeps, record: (key: string, r: ProcessRecord) => void): Promise<void> {
  const node = await createNodeMounts(host.name, host.netns, nodeMountsOf(host).root);
  cpSync(REFERENCE_PLUGINS, privateDirOf(node.root, '/opt/cni/bin'), { recursive: true });

  const containerd = startRole(host, node, 'containerd', containerdArgv(writeContainerdConfig(node, deps.images.pause.reference)));
  record(processKey(host.name, 'containerd'), containerd);
  await waitFor(`containerd on ${host.name}`, () => containerdServing(node), containerd, 30_000);
  for (const image of [deps.images.pause, deps.images.pod, deps.images.flannel]) await importImage(node, image);

  const kubeletCert = await makeClientCert(deps.pkiDir, `kubelet-${host.name}`, `system:node:${host.name}`, ['system:nodes']);
  const kubeletFiles = writeKubeletFiles(node, deps.caCert, kubeconfigText(deps.apiUrl, deps.caCert, `system:node:${host.name}`, kubeletCert));
  const nodeIps = [...new Set([host.ip, ...(host.ip6 ? [host.ip6] : [])])];
  record(processKey(host.name, 'kubelet'), startRole(host, node, 'kubelet', kubeletArgv(deps.tools.kubelet, host.name, nodeIps, kubeletFiles)));

  const proxyCert = await makeClientCert(deps.pkiDir, `kube-proxy-${host.name}`, 'system:kube-proxy');
  const proxyConfig = writeKubeProxyConfig(node, host.name, kubeconfigText(deps.apiUrl, deps.caCert, 'system:kube-proxy', proxyCert), deps.clusterCidrs);
  record(processKey(host.name, 'kube-proxy'), startRole(host, node, 'kube-proxy', kubeProxyArgv(deps.tools.kubeProxy, proxyConfig)));
}

/**
 * Stops a kubelet host: the kubelet and kube-proxy first (so nothing restarts containers), every container through
 * containerd, containerd, then whatever is left in the host's mount namespace and below it; finally the runc
 * cgroups those containers leave behind and the namespace file. Safe to repeat and to run after a crash.
 */
export async function stopKubeletHost(host: HostRecord, records: Partial<Record<KubeletHostRole, ProcessRecord>>): Promise<number> {
  const node = nodeMountsOf(host);
  let stopped = 0;
  for (const role of ['kube-proxy', 'kubelet'] as const) if (records[role] && (await stopProcess(records[role]))) stopped++;
  if (records.containerd && isRunning(records.containerd)) await killAllTasks(node);
  if (records.containerd && (await stopProcess(records.containerd))) stopped++;
  let nsId: string | undefined;
  try {
    nsId = mountNsId(node.mountNs);
  } catch {
    nsId = undefined;
  }
  if (nsId) {
    for (const pid of processTree(nsId)) {
      try {
        process.kill(pid, 'SIGKILL');
        stopped++;
      } catch {
        // Gone already.
      }
    }
  }
  removeContainerCgroups(node);
  const left = await removeNodeMounts(node.mountNs);
  if (left) process.stderr.write(`lab: ${host.name}: ${left}\n`);
  return stopped;
}

/**
 * runc makes /sys/fs/cgroup/<controller>/k8s.io/<container id> for each container and removes it when containerd
 * deletes the container; a container killed with its shim leaves the empty folder. Only the ids this host's
 * containerd knew (its task state folders) are removed.
 */
function removeContainerCgroups(node: NodeMounts): void {
  const taskDir = join(privateDirOf(node.root, '/run/containerd'), 'io.containerd.runtime.v2.task', 'k8s.io');
  let ids: string[] = [];
  try {
    ids = readdirSync(taskDir);
  } catch {
    return;
  }
  let controllers: string[] = [];
  try {
    controllers = readdirSync('/sys/fs/cgroup');
  } catch {
    return;
  }
  for (const controller of controllers) {
    for (const id of ids) {
      try {
        rmdirSync(join('/sys/fs/cgroup', controller, 'k8s.io', id));
      } catch {
        // Not there (runc removed it), or not a cgroup hierarchy.
      }
    }
  }
}
