/**
 * A kubelet host's own view of the file system: a mount namespace, kept by a bind mount of its namespace file, in
 * which the folders a node keeps to itself (CNI config and plugins, kubelet and containerd state, pod logs,
 * subnet.env) are bind mounts of folders under the host's lab folder. The host's containerd, kubelet and
 * kube-proxy all run in it, so a hostPath in a pod spec, the CNI plugin containerd calls and the kubelet's volumes
 * all resolve to this host's copy, while the machine's own folders stay as they were.
 *
 * `ip netns exec` remounts /sys and leaves it without the cgroup hierarchies runc needs, so processes enter the
 * network namespace and this mount namespace with nsenter instead (see `nodeLauncher`).
 */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { sh } from '../netns.js';

/** The folders a node keeps private: each is a bind mount of `<host dir>/node/<path with / as _>`. */
export const NODE_PRIVATE_PATHS = [
  '/etc/cni/net.d', '/opt/cni/bin', '/run/flannel', '/var/lib/kubelet', '/var/lib/containerd', '/run/containerd',
  '/var/lib/cni', '/var/log/pods', '/var/log/containers', '/etc/kubernetes',
] as const;

/**
 * The kernel settings the kubelet insists on (it writes them unless protectKernelDefaults, then refuses to start
 * when they differ). They are machine-wide, not per network namespace, so instead of changing the machine each
 * node's mount namespace shows the kubelet files holding the values it expects, bound over /proc/sys; containers
 * mount their own /proc and never see them.
 */
export const KUBELET_SYSCTLS: Readonly<Record<string, string>> = {
  'vm/overcommit_memory': '1',
  'vm/panic_on_oom': '0',
  'kernel/panic': '10',
  'kernel/panic_on_oops': '1',
  'kernel/keys/root_maxkeys': '1000000',
  'kernel/keys/root_maxbytes': '25000000',
};

/** Where the namespace files of every kubelet host are bound: a private mount, so binds inside never propagate. */
export const MOUNT_NS_DIR = '/run/flannel-ts/mountns';

export interface NodeMounts {
  /** The file the host's mount namespace is bound to (nsenter --mount=). */
  readonly mountNs: string;
  /** The host's network namespace name (in /run/netns). */
  readonly netns: string;
  /** The host folder holding the private copies. */
  readonly root: string;
}

export const mountNsFileOf = (netns: string): string => join(MOUNT_NS_DIR, netns);

export const privateDirOf = (root: string, path: string): string => join(root, path.slice(1).replace(/\//g, '_'));

/** `nsenter` into the host's network and mount namespaces, then `argv` (exec'd in place: its PID is the program's). */
export const nodeLauncher = (node: Pick<NodeMounts, 'mountNs' | 'netns'>, argv: readonly string[]): string[] =>
  ['nsenter', `--net=/run/netns/${node.netns}`, `--mount=${node.mountNs}`, '--', ...argv];

/**
 * Binds the folder onto itself once, private, as `ip netns` does for /run/netns. Only once: a second bind on top
 * would hide the namespace files bound in the first (a plain bind takes no submounts along), and every lab up would
 * stack another.
 */
async function ensurePrivateMountNsDir(): Promise<void> {
  mkdirSync(MOUNT_NS_DIR, { recursive: true });
  // Check and bind under one lock: hosts start in parallel, and so may two labs.
  const dir = MOUNT_NS_DIR;
  await sh('flock', [`${dir}.lock`, 'sh', '-c', `mountpoint -q '${dir}' || mount --bind '${dir}' '${dir}'; mount --make-private '${dir}'`]);
}

/**
 * Makes the host's mount namespace: the private folders under `root` bound over the node paths, pod network
 * namespaces kept under containerd's private state folder (not /run/netns), the sysctl files bound over /proc/sys.
 * The empty mount points are created on the machine when missing (they stay empty there).
 */
export async function createNodeMounts(name: string, netns: string, root: string): Promise<NodeMounts> {
  await ensurePrivateMountNsDir();
  const mountNs = mountNsFileOf(netns);
  writeFileSync(mountNs, '');
  const script: string[] = ['set -e'];
  for (const path of NODE_PRIVATE_PATHS) {
    const dir = privateDirOf(root, path);
    mkdirSync(dir, { recursive: true });
    if (!existsSync(path)) mkdirSync(path, { recursive: true });
    script.push(`mount --bind '${dir}' '${path}'`);
  }
  const sysctlDir = join(root, 'sysctl');
  mkdirSync(sysctlDir, { recursive: true });
  for (const [key, value] of Object.entries(KUBELET_SYSCTLS)) {
    const file = join(sysctlDir, key.replace(/\//g, '_'));
    writeFileSync(file, `${value}\n`);
    script.push(`mount --bind '${file}' '/proc/sys/${key}'`);
  }
  await sh('nsenter', [`--net=/run/netns/${netns}`, 'unshare', `--mount=${mountNs}`, '--propagation', 'private', 'sh', '-c', script.join('\n')])
    .catch((err: Error) => { throw new Error(`cannot make the mount namespace of ${name}: ${err.message}`); });
  return { mountNs, netns, root };
}

/**
 * Releases the namespace file; the namespace itself goes once no process is left in it. Safe to repeat. A file that
 * cannot be removed is reported, never thrown: `down` goes on with every other host and process.
 */
export async function removeNodeMounts(mountNs: string): Promise<string | undefined> {
  if (!existsSync(mountNs)) return undefined;
  await sh('umount', [mountNs]).catch(() => undefined);
  return sh('rm', ['-f', mountNs]).then(() => undefined, (err: Error) => err.message);
}
