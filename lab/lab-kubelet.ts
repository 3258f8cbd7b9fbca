/**
 * The lab in kubelet mode (`up --kubelet`): every host a kubelet node of the lab's control plane (containerd,
 * kubelet, kube-proxy in its namespaces), flannel-ts deployed with `kubectl apply -f manifests/kube-flannel.yml`
 * from the image `npm run image` builds, and the lab's pods real Kubernetes pods.
 */
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import type { V1Pod } from '@kubernetes/client-node';
import { buildLabImages, type LabImages } from '../image/images.js';
import { apiUrlFor, controlPlaneFiles, kubectlFor, type ControlPlaneSpec } from './kube/control-plane.js';
import type { Kubectl } from './kube/kubectl.js';
import { FLANNEL_NAMESPACE, flannelManifest, waitForFlannelRollout } from './kubelet/flannel-daemonset.js';
import {
  KUBELET_HOST_ROLES, nodeMountsOf, processKey, startKubeletHost, stopKubeletHost, type KubeletHostRole,
} from './kubelet/kubelet-host.js';
import { createLabPods, execInPod } from './kubelet/kube-pods.js';
import { containerdServing } from './kubelet/containerd.js';
import { MOUNT_NS_DIR, privateDirOf } from './kubelet/node-mounts.js';
import { isRunning, logTail } from './lab-processes.js';
import type { PodExec } from './lab-matrix.js';
import { labDir, labNetnsPrefix, REPO_ROOT, type HostRecord, type LabState, type PodRecord, type ProcessRecord } from './lab-state.js';
import type { Progress } from './progress.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Where a kubelet host's flanneld (in its pod) writes subnet.env: the host's private /run/flannel. */
export const kubeletSubnetEnv = (host: Pick<HostRecord, 'netns' | 'dir'>): string =>
  join(privateDirOf(nodeMountsOf(host).root, '/run/flannel'), 'subnet.env');

export const labImages = (log: (line: string) => void): Promise<LabImages> => buildLabImages({ repo: REPO_ROOT, log });

/** Until every host's kubelet has registered its Node. */
async function waitForNodes(kubectl: Kubectl, names: readonly string[], timeoutMs = 120_000): Promise<void> {
  for (const deadline = Date.now() + timeoutMs; ; await sleep(500)) {
    const have = new Set((await kubectl.nodes().catch(() => [])).map((n) => n.metadata?.name));
    const missing = names.filter((n) => !have.has(n));
    if (missing.length === 0) return;
    if (Date.now() > deadline) throw new Error(`no Node registered by the kubelet of ${missing.join(', ')} after ${timeoutMs} ms; see their kubelet.log`);
  }
}

export interface KubeletLabSteps {
  readonly state: LabState;
  readonly spec: ControlPlaneSpec;
  readonly progress: Progress;
  readonly save: () => void;
  /** Makes one more underlay host (namespace, addresses), as the other lab modes do. */
  readonly createHost: (index: number) => Promise<HostRecord>;
  readonly hosts: number;
  readonly podsPerHost: number;
}

/** The kubelet part of `up`, after the control plane is serving. */
export async function upKubeletHosts(steps: KubeletLabSteps): Promise<void> {
  const { state, spec, progress, save } = steps;
  const images = await progress.step('images: flannel-ts (the manifest\'s tag), pause and the lab pod (npm run image; cached)', () => labImages(() => undefined),
    (i) => `${i.flannel.reference} ${(i.flannel.bytes / 1e6).toFixed(0)} MB`);
  const files = controlPlaneFiles(spec);
  const deps = { tools: spec.tools, images, pkiDir: join(spec.dir, 'pki'), caCert: files.pki.caCert, apiUrl: apiUrlFor(spec.stack), clusterCidrs: spec.clusterCidrs };
  for (let i = 1; i <= steps.hosts; i++) {
    const host = await steps.createHost(i);
    state.hosts.push({ ...host, subnetEnv: kubeletSubnetEnv(host) });
  }
  save();
  const record = (key: string, r: ProcessRecord): void => {
    state.processes[key] = r;
    save();
  };
  await progress.step(`${steps.hosts} kubelet host(s): containerd (images imported), kubelet, kube-proxy`, async () => {
    // Hosts in parallel: importing the flannel-ts image (some 400 MB unpacked) is most of a host's start.
    const started = await Promise.allSettled(state.hosts.map((host) => startKubeletHost(host, deps, record)));
    for (const s of started) if (s.status === 'rejected') throw s.reason;
    await waitForNodes(kubectlFor(spec), state.hosts.map((h) => h.name));
  });
  const kubectl = kubectlFor(spec);
  await progress.step('kubectl apply -f manifests/kube-flannel.yml; every kube-flannel pod Ready', async () => {
    await kubectl.run(['apply', '-f', '-'], flannelManifest(state.networkConfig));
    await waitForFlannelRollout(kubectl);
  });
  if (steps.podsPerHost > 0) {
    await progress.step(`${steps.podsPerHost} pod(s) per host, scheduled by kube-scheduler, addressed by the flannel CNI plugin`, async () => {
      const wanted = state.hosts.flatMap((h) => Array.from({ length: steps.podsPerHost }, (_, p) => ({ name: `${h.name}-p${p + 1}`, host: h.name })));
      state.pods.push(...await createLabPods(kubectl, wanted, images.pod.reference));
      save();
    });
  }
}

/** `kubectl exec` for the matrix: pods of a kubelet lab have no namespace of ours to enter. */
export const kubeletPodExec = (spec: ControlPlaneSpec): PodExec => (pod: PodRecord, argv) => execInPod(kubectlFor(spec), pod, argv);

/** `h2/kubelet`, `h1/containerd`, …: a process of a kubelet host, as `kill` and `restart` name them. */
export const isKubeletHostProcess = (target: string): boolean => /^[^/]+\/(containerd|kubelet|kube-proxy)$/.test(target);

/** After a restart: containerd answers on its socket, the kubelet and kube-proxy are still running a moment later. */
export async function waitForKubeletHostProcess(state: LabState, target: string, record: ProcessRecord): Promise<void> {
  const [name, role] = target.split('/') as [string, KubeletHostRole];
  const host = state.hosts.find((h) => h.name === name);
  if (!host) throw new Error(`no host "${name}" in lab ${state.id}`);
  const ready = role === 'containerd' ? () => containerdServing(nodeMountsOf(host)) : () => sleep(1000).then(() => true);
  for (const deadline = Date.now() + 30_000; !(await ready()); await sleep(200)) {
    if (!isRunning(record) || Date.now() > deadline) throw new Error(`${target} did not come back; the end of ${record.log}:\n${logTail(record.log, 15)}`);
  }
  if (!isRunning(record)) throw new Error(`${target} exited after its restart; the end of ${record.log}:\n${logTail(record.log, 15)}`);
}

/** The roles' records of one host from the lab's state. */
const hostRecords = (state: LabState, host: string): Partial<Record<KubeletHostRole, ProcessRecord>> =>
  Object.fromEntries(KUBELET_HOST_ROLES.flatMap((role) => {
    const r = state.processes[processKey(host, role)];
    return r ? [[role, r]] : [];
  }));

/**
 * Stops every kubelet host of lab `id` (containers included); the count of processes stopped. Hosts are those the
 * state records and any whose mount namespace file is still there without a record (a lab whose state was lost or
 * whose `up` died early), so `down` also clears what a crashed run left.
 */
export async function downKubeletHosts(id: string, state: LabState | undefined): Promise<number> {
  const prefix = labNetnsPrefix(id);
  const recorded = state?.kubelet ? state.hosts : [];
  const known = new Set(recorded.map((h) => h.netns));
  const leftover = (existsSync(MOUNT_NS_DIR) ? readdirSync(MOUNT_NS_DIR) : []).filter((n) => n.startsWith(prefix) && !known.has(n))
    .map((netns): HostRecord => ({ name: netns.slice(prefix.length), netns, ip: '', dir: join(labDir(id), netns.slice(prefix.length)) }));
  let stopped = 0;
  for (const host of recorded) stopped += await stopKubeletHost(host, state ? hostRecords(state, host.name) : {});
  for (const host of leftover) stopped += await stopKubeletHost(host, {});
  return stopped;
}

/** The kube-flannel pod on each host: name, phase and readiness, for the hosts table. */
export async function flannelPods(kubectl: Kubectl): Promise<Map<string, string>> {
  const pods = await kubectl.json<{ items: V1Pod[] }>(['-n', FLANNEL_NAMESPACE, 'get', 'pods']).catch(() => ({ items: [] }));
  const byHost = new Map<string, string>();
  for (const pod of pods.items) {
    const ready = pod.status?.conditions?.find((c) => c.type === 'Ready')?.status === 'True';
    const restarts = pod.status?.containerStatuses?.reduce((n, c) => n + c.restartCount, 0) ?? 0;
    if (pod.spec?.nodeName) byHost.set(pod.spec.nodeName, `${pod.metadata?.name} ${pod.status?.phase ?? '?'}${ready ? ', Ready' : ''}, ${restarts} restart(s)`);
  }
  return byHost;
}
