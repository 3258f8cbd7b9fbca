/**
 * Each kubelet host's own containerd (Debian's 1.6), in the host's namespaces: its state in the host's private
 * folders (the standard paths, bound), the lab's images imported rather than pulled, and the CRI settings this
 * sandbox needs (see docs/lab.md, "Kubelet hosts").
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { sh } from '../netns.js';
import type { BuiltImage } from '../../image/image-cache.js';
import type { NodeMounts } from './node-mounts.js';

export const CONTAINERD_SOCKET = '/run/containerd/containerd.sock';
/** The namespace of containerd's CRI plugin, where the kubelet's images and containers live. */
const K8S_NAMESPACE = 'k8s.io';

/**
 * - restrict_oom_score_adj: the machine's root lacks CAP_SYS_RESOURCE, so runc cannot lower a sandbox's OOM score
 *   (the kubelet asks -998) and every pod would fail with "can't get final child's PID from pipe"; restricted,
 *   containerd never asks for a score below its own.
 * - netns_mounts_under_state_dir: pod network namespaces are bound under /run/containerd (this host's private
 *   copy), not in the machine's /run/netns, so nothing outside the lab sees or lists them.
 * - sandbox_image: the lab's own pause image, imported, since no registry is reachable.
 */
export function containerdConfig(pauseImage: string): string {
  return `version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
[grpc]
  address = "${CONTAINERD_SOCKET}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "${pauseImage}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/opt/cni/bin"
    conf_dir = "/etc/cni/net.d"
`;
}

export function writeContainerdConfig(node: NodeMounts, pauseImage: string): string {
  const file = join(node.root, 'containerd.toml');
  writeFileSync(file, containerdConfig(pauseImage));
  return file;
}

export const containerdArgv = (configFile: string): string[] => ['containerd', '--config', configFile];

/** `ctr` against this host's containerd, in its mount namespace (where the socket is). */
export function ctr(node: Pick<NodeMounts, 'mountNs'>, args: readonly string[], timeoutMs = 60_000): Promise<string> {
  return sh('nsenter', [`--mount=${node.mountNs}`, '--', 'ctr', '--address', CONTAINERD_SOCKET, '-n', K8S_NAMESPACE, ...args], undefined, timeoutMs);
}

/** containerd answers on its socket. */
export const containerdServing = (node: Pick<NodeMounts, 'mountNs'>): Promise<boolean> =>
  ctr(node, ['version'], 5_000).then(() => true, () => false);

/** Loads an image archive under its reference (unpacking a large image takes some seconds). */
export async function importImage(node: Pick<NodeMounts, 'mountNs'>, image: BuiltImage): Promise<void> {
  await ctr(node, ['images', 'import', '--base-name', image.repository, image.archive], 5 * 60_000);
}

/** Another tag for an imported image, as a registry push of a new tag would give (a DaemonSet update's target). */
export async function tagImage(node: Pick<NodeMounts, 'mountNs'>, from: string, to: string): Promise<void> {
  await ctr(node, ['images', 'tag', '--force', from, to]);
}

/** SIGKILLs every container this containerd runs (before it stops, so no shim outlives the lab). */
export async function killAllTasks(node: Pick<NodeMounts, 'mountNs'>): Promise<void> {
  const tasks = (await ctr(node, ['tasks', 'list', '-q'], 10_000).catch(() => '')).split('\n').filter(Boolean);
  for (const task of tasks) await ctr(node, ['tasks', 'kill', '-s', 'SIGKILL', task], 10_000).catch(() => undefined);
}
