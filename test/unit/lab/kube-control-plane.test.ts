import { describe, expect, it } from 'vitest';
import { apiserverArgv, controllerManagerArgv, controlPlaneFiles, nodeIpamFor, type ControlPlaneSpec } from '../../../lab/kube/control-plane.js';
import { manifestDocuments } from '../../../lab/kube/flannel-identity.js';
import type { KubeTools } from '../../../lab/kube/kube-tools.js';
import { Netns } from '../../../lab/netns.js';

const tools: KubeTools = {
  kubeApiserver: '/k/kube-apiserver', kubeControllerManager: '/k/kube-controller-manager', kubeScheduler: '/k/kube-scheduler', kubeProxy: '/k/kube-proxy',
  kubelet: '/k/kubelet', kubectl: '/k/kubectl', etcd: '/e/etcd', etcdctl: '/e/etcdctl',
};
const spec = (stack: ControlPlaneSpec['stack'], netConf: object): ControlPlaneSpec =>
  ({ dir: '/s', hub: new Netns('ftl-x-hub'), stack, tools, ...nodeIpamFor(JSON.stringify(netConf)) });
const flag = (argv: readonly string[], name: string): string | undefined => argv.find((a) => a.startsWith(`${name}=`))?.slice(name.length + 1);

describe('node IPAM follows net-conf.json', () => {
  it.each([
    [{ Network: '10.244.0.0/16' }, ['10.244.0.0/16'], [24]],
    [{ Network: '10.9.0.0/16', SubnetLen: 26 }, ['10.9.0.0/16'], [26]],
    [{ Network: '10.244.0.0/16', EnableIPv6: true, IPv6Network: '2001:db8:a::/48' }, ['10.244.0.0/16', '2001:db8:a::/48'], [24, 64]],
    [{ EnableIPv4: false, EnableIPv6: true, IPv6Network: '2001:db8:a::/48', IPv6SubnetLen: 60 }, ['2001:db8:a::/48'], [60]],
  ])('%j: cluster CIDRs %j, node masks %j', (netConf, cidrs, masks) => {
    expect(nodeIpamFor(JSON.stringify({ ...netConf, Backend: { Type: 'vxlan' } }))).toEqual({ clusterCidrs: cidrs, nodeMaskSizes: masks });
  });

  it('gives kube-controller-manager one mask flag single-stack and one per family dual-stack (it refuses the plain one then)', () => {
    const single = controllerManagerArgv(spec('v4', { Network: '10.244.0.0/16' }), controlPlaneFiles({ dir: '/s' }));
    expect(flag(single, '--cluster-cidr')).toBe('10.244.0.0/16');
    expect(flag(single, '--node-cidr-mask-size')).toBe('24');
    expect(flag(single, '--controllers')).toBe('node-ipam-controller');
    const dual = controllerManagerArgv(spec('dual', { Network: '10.244.0.0/16', EnableIPv6: true, IPv6Network: '2001:db8:a::/48' }), controlPlaneFiles({ dir: '/s' }));
    expect(flag(dual, '--cluster-cidr')).toBe('10.244.0.0/16,2001:db8:a::/48');
    expect([flag(dual, '--node-cidr-mask-size-ipv4'), flag(dual, '--node-cidr-mask-size-ipv6'), flag(dual, '--node-cidr-mask-size')]).toEqual(['24', '64', undefined]);
  });
});

describe('kube-apiserver flags', () => {
  it('serves TLS with RBAC, a service-account signing key and the audit log, advertising the hub address of its family', () => {
    const v4 = apiserverArgv(spec('v4', { Network: '10.244.0.0/16' }), controlPlaneFiles({ dir: '/s' }));
    expect(flag(v4, '--authorization-mode')).toBe('Node,RBAC');
    expect(flag(v4, '--advertise-address')).toBe('192.0.2.254');
    expect(flag(v4, '--service-cluster-ip-range')).toBe('203.0.113.0/24');
    expect(flag(v4, '--service-account-signing-key-file')).toBe('/s/pki/sa.key');
    expect(flag(v4, '--audit-log-path')).toBe('/s/audit.log');
    const v6 = apiserverArgv(spec('v6', { EnableIPv4: false, EnableIPv6: true, IPv6Network: '2001:db8:a::/48' }), controlPlaneFiles({ dir: '/s' }));
    expect(flag(v6, '--advertise-address')).toBe('2001:db8:2::fe');
    expect(flag(v6, '--service-cluster-ip-range')).toBe('2001:db8:5e::/112');
  });
});

describe("flanneld's identity", () => {
  it('takes only the RBAC objects from manifests/kube-flannel.yml as shipped', () => {
    const docs = manifestDocuments(['Namespace', 'ServiceAccount', 'ClusterRole', 'ClusterRoleBinding']);
    expect([...docs.matchAll(/^kind: (\S+)/gm)].map((m) => m[1]).sort()).toEqual(['ClusterRole', 'ClusterRoleBinding', 'Namespace', 'ServiceAccount']);
    expect(docs).not.toContain('DaemonSet');
    expect(docs).toContain('name: flannel');
  });
});
