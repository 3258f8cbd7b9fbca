/**
 * kube-proxy per kubelet host, as every real cluster has: the kube-flannel pods reach the apiserver through the
 * `kubernetes` Service's ClusterIP (the in-cluster config the DaemonSet uses), which only kube-proxy's rules make
 * reachable. iptables mode, in the host's network namespace; it leaves the machine-wide conntrack settings alone.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { NodeMounts } from './node-mounts.js';

export function kubeProxyConfig(name: string, kubeconfig: string, clusterCidrs: readonly string[]): Record<string, unknown> {
  return {
    apiVersion: 'kubeproxy.config.k8s.io/v1alpha1',
    kind: 'KubeProxyConfiguration',
    clientConnection: { kubeconfig },
    hostnameOverride: name,
    mode: 'iptables',
    clusterCIDR: clusterCidrs.join(','),
    detectLocalMode: 'ClusterCIDR',
    // nf_conntrack_max and the TCP timeouts are per machine, not per namespace: zero leaves them as they are.
    conntrack: { maxPerCore: 0, min: 0, tcpEstablishedTimeout: '0s', tcpCloseWaitTimeout: '0s' },
    metricsBindAddress: '127.0.0.1:10249',
    healthzBindAddress: '127.0.0.1:10256',
  };
}

export function writeKubeProxyConfig(node: NodeMounts, name: string, kubeconfigText: string, clusterCidrs: readonly string[]): string {
  const kubeconfig = join(node.root, 'kube-proxy.kubeconfig');
  writeFileSync(kubeconfig, kubeconfigText, { mode: 0o600 });
  const config = join(node.root, 'kube-proxy.yaml');
  writeFileSync(config, `${JSON.stringify(kubeProxyConfig(name, kubeconfig, clusterCidrs), null, 2)}\n`);
  return config;
}

export const kubeProxyArgv = (kubeProxy: string, configFile: string): string[] => [kubeProxy, `--config=${configFile}`, '--v=1'];
