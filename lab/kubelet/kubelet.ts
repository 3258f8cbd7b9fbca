/**
 * A real kubelet (the Kubernetes build of tools/) per lab host: joins the control plane as Node `<host>` with a
 * client certificate of system:node:<host>, talks CRI to the host's containerd, and runs what the scheduler puts on
 * it. Its settings are those a kubelet needs on this machine: cgroup v1 with the cgroupfs driver and no QoS
 * hierarchy (no systemd here), no swap check, no evictions from the shared disk, and the kernel settings shown by
 * the host's mount namespace (node-mounts.ts) rather than written to the machine.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CONTAINERD_SOCKET } from './containerd.js';
import type { NodeMounts } from './node-mounts.js';

export const KUBELET_PORT = 10250;
export const KUBELET_HEALTHZ_PORT = 10248;

export interface KubeletFiles {
  readonly config: string;
  readonly kubeconfig: string;
}

export function kubeletConfig(caCert: string): Record<string, unknown> {
  return {
    apiVersion: 'kubelet.config.k8s.io/v1beta1',
    kind: 'KubeletConfiguration',
    cgroupDriver: 'cgroupfs',
    // This machine has cgroup v1 hierarchies; since 1.35 the kubelet refuses them unless told.
    failCgroupV1: false,
    // No systemd to delegate a QoS hierarchy to; every container gets its own cgroup from runc all the same.
    cgroupsPerQOS: false,
    enforceNodeAllocatable: [],
    failSwapOn: false,
    // Read, never written: the host's mount namespace shows the values the kubelet wants (node-mounts.ts).
    protectKernelDefaults: true,
    // containerd 1.6.20 does not pin the sandbox image, so image GC would delete it; the lab's images are imported.
    imageGCHighThresholdPercent: 100,
    imageGCLowThresholdPercent: 99,
    // Every host shares the machine's disk and memory: the defaults would evict pods for what other programs use.
    evictionHard: { 'memory.available': '0%', 'nodefs.available': '0%', 'nodefs.inodesFree': '0%', 'imagefs.available': '0%' },
    containerRuntimeEndpoint: `unix://${CONTAINERD_SOCKET}`,
    readOnlyPort: 0,
    port: KUBELET_PORT,
    healthzBindAddress: '127.0.0.1',
    healthzPort: KUBELET_HEALTHZ_PORT,
    // The apiserver comes with a client certificate of the cluster CA (logs, exec); nobody else is let in.
    authentication: { anonymous: { enabled: false }, webhook: { enabled: false }, x509: { clientCAFile: caCert } },
    authorization: { mode: 'AlwaysAllow' },
    clusterDomain: 'cluster.local',
    // Pods resolve nothing in the lab; an empty resolver keeps them from using the machine's.
    resolvConf: '',
    // Faster than the defaults, so a lab or a test sees a pod's state change within a second or two.
    nodeStatusUpdateFrequency: '4s',
    syncFrequency: '10s',
    fileCheckFrequency: '5s',
    serializeImagePulls: false,
    registerNode: true,
  };
}

/** The kubelet's config file and kubeconfig in the host's folder (JSON, which both read as YAML). */
export function writeKubeletFiles(node: NodeMounts, caCert: string, kubeconfigText: string): KubeletFiles {
  const files = { config: join(node.root, 'kubelet.yaml'), kubeconfig: join(node.root, 'kubelet.kubeconfig') };
  writeFileSync(files.config, `${JSON.stringify(kubeletConfig(caCert), null, 2)}\n`);
  writeFileSync(files.kubeconfig, kubeconfigText, { mode: 0o600 });
  return files;
}

/** `nodeIps`: the host's underlay address(es), IPv4 first: the Node's InternalIP(s), where the apiserver reaches it. */
export const kubeletArgv = (kubelet: string, name: string, nodeIps: readonly string[], files: KubeletFiles): string[] =>
  [kubelet, `--config=${files.config}`, `--kubeconfig=${files.kubeconfig}`, `--hostname-override=${name}`, `--node-ip=${nodeIps.join(',')}`, '--v=1'];
