/**
 * Where the real Kubernetes and etcd 3.6 binaries are: tools/build.sh builds them from their Go modules once per
 * version into a cache outside the repository and prints the folder; a cached set costs a stat.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { REPO_ROOT } from '../lab-state.js';

export interface KubeTools {
  readonly kubeApiserver: string;
  readonly kubeControllerManager: string;
  readonly kubeScheduler: string;
  readonly kubelet: string;
  readonly kubeProxy: string;
  readonly kubectl: string;
  readonly etcd: string;
  readonly etcdctl: string;
}

/** Builds (or finds) one set; the build's own progress goes to our stderr, as it can take many minutes the first time. */
function toolSet(set: 'k8s' | 'etcd' | 'flannel' | 'cni-flannel'): string {
  const result = spawnSync('bash', [join(REPO_ROOT, 'tools/build.sh'), set], { stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8' });
  if (result.error) throw result.error;
  if (result.status !== 0) throw new Error(`tools/build.sh ${set} failed (exit ${result.status}); its output is above`);
  const dir = result.stdout.trim().split('\n').pop();
  if (!dir) throw new Error(`tools/build.sh ${set} printed no folder`);
  return dir;
}

export function kubeTools(): KubeTools {
  const k8s = toolSet('k8s');
  const etcd = toolSet('etcd');
  return {
    kubeApiserver: join(k8s, 'kube-apiserver'),
    kubeControllerManager: join(k8s, 'kube-controller-manager'),
    kubeScheduler: join(k8s, 'kube-scheduler'),
    kubelet: join(k8s, 'kubelet'),
    kubeProxy: join(k8s, 'kube-proxy'),
    kubectl: join(k8s, 'kubectl'),
    etcd: join(etcd, 'etcd'),
    etcdctl: join(etcd, 'etcdctl'),
  };
}

/** Upstream flannel's flanneld (v0.28.9, tools/flannel/), built once like the sets above: for side-by-side runs. */
export const upstreamFlanneld = (): string => join(toolSet('flannel'), 'flanneld');

/** Upstream's flannel CNI plugin (tools/cni-flannel/): the same plugin's last release in containernetworking/plugins. */
export const upstreamCniPlugin = (): string => join(toolSet('cni-flannel'), 'flannel');
