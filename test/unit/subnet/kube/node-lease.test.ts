import { mkdtempSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseNetworkConfig } from '../../../../flanneld/config/network-config.js';
import { formatIp, parseIPv4, parseIPv6 } from '../../../../flanneld/ip/address.js';
import { formatCidr, parseCidr } from '../../../../flanneld/ip/cidr.js';
import type { Lease } from '../../../../flanneld/lease/lease.js';
import { annotationNames } from '../../../../flanneld/subnet/kube/annotations.js';
import { kubeConfigFor } from '../../../../flanneld/subnet/kube/kube-config.js';
import type { KubeNode } from '../../../../flanneld/subnet/kube/node-api.js';
import { changedAnnotations, ownSubnets, peerLease, publishedAnnotations } from '../../../../flanneld/subnet/kube/node-lease.js';
import { resolveNodeName } from '../../../../flanneld/subnet/kube/node-name.js';

const names = annotationNames('flannel.alpha.coreos.com');
const v4 = parseNetworkConfig('{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}').config;
const dual = parseNetworkConfig('{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"2001:db8:42::/56","Backend":{"Type":"vxlan"}}').config;

function node(name: string, podCIDRs: string[], annotations: Record<string, string> = {}): KubeNode {
  return { name, resourceVersion: '1', podCIDRs, annotations };
}

const annotated = (extra: Record<string, string> = {}): Record<string, string> => ({
  'flannel.alpha.coreos.com/kube-subnet-manager': 'true',
  'flannel.alpha.coreos.com/backend-type': 'vxlan',
  'flannel.alpha.coreos.com/backend-data': '{"VNI":1,"VtepMAC":"12:c6:65:89:b4:e3"}',
  'flannel.alpha.coreos.com/public-ip': '192.0.2.2',
  ...extra,
});

describe('annotation names', () => {
  it.each([
    ['flannel.alpha.coreos.com', 'flannel.alpha.coreos.com/backend-type'],
    ['flannel.alpha.coreos.com/prefix', 'flannel.alpha.coreos.com/prefix-backend-type'],
    ['example.com/pfx-', 'example.com/pfx-backend-type'],
    ['example.com/', 'example.com/backend-type'],
  ])('normalises %s as upstream', (prefix, backendType) => {
    expect(annotationNames(prefix).backendType).toBe(backendType);
  });

  it.each([
    ['a/b/c', /at most one slash/],
    ['Flannel.example.com', /fqdn/],
    ['example.com/UPPER', /fqdn/],
  ])('refuses %s naming the option', (prefix, message) => {
    expect(() => annotationNames(prefix)).toThrow(message);
    expect(() => annotationNames(prefix)).toThrow(/kube-annotation-prefix/);
  });
});

describe('nodes as leases', () => {
  it('reads an annotated peer as upstream writes it', () => {
    const found = peerLease(node('n2', ['10.244.2.0/24'], annotated()), names, v4);
    expect(found.kind).toBe('lease');
    const lease = (found as { lease: Lease }).lease;
    expect(formatCidr(lease.subnet!)).toBe('10.244.2.0/24');
    expect(formatIp(lease.attrs.publicIP!)).toBe('192.0.2.2');
    expect(lease.attrs).toMatchObject({ backendType: 'vxlan', backendData: { VNI: 1, VtepMAC: '12:c6:65:89:b4:e3' } });
  });

  it('takes spec.podCIDRs for both families in dual stack', () => {
    const found = peerLease(node('n2', ['10.244.2.0/24', '2001:db8:42:2::/64'], annotated({
      'flannel.alpha.coreos.com/public-ipv6': '2001:db8::2',
      'flannel.alpha.coreos.com/backend-v6-data': '{"VNI":1,"VtepMAC":"12:c6:65:89:b4:e4"}',
    })), names, dual);
    expect(found.kind).toBe('lease');
    const lease = (found as { lease: Lease }).lease;
    expect(formatCidr(lease.ipv6Subnet!)).toBe('2001:db8:42:2::/64');
    expect(formatIp(lease.attrs.publicIPv6!)).toBe('2001:db8::2');
  });

  it('takes spec.podCIDRs in either order (IPv6 first, as kubeadm writes it for an IPv6-primary cluster)', () => {
    const found = peerLease(node('n2', ['2001:db8:42:2::/64', '10.244.2.0/24'], annotated({
      'flannel.alpha.coreos.com/public-ipv6': '2001:db8::2',
      'flannel.alpha.coreos.com/backend-v6-data': '{"VNI":1,"VtepMAC":"12:c6:65:89:b4:e4"}',
    })), names, dual);
    const lease = (found as { lease: Lease }).lease;
    expect([formatCidr(lease.subnet!), formatCidr(lease.ipv6Subnet!)]).toEqual(['10.244.2.0/24', '2001:db8:42:2::/64']);
  });

  it('ignores nodes flannel does not run on', () => {
    expect(peerLease(node('n3', ['10.244.3.0/24']), names, v4)).toEqual({ kind: 'unmanaged' });
  });

  it.each([
    [['10.244.2.0/24'], { 'flannel.alpha.coreos.com/public-ip': 'nope' }, /public-ip is not an address: "nope"/],
    [['10.244.2.0/24'], { 'flannel.alpha.coreos.com/backend-data': '{"VNI":' }, /backend-data is not JSON/],
    [[], {}, /no IPv4 podCIDR/],
    [['10.244.2.0/24', '10.244.3.0/24'], {}, /two IPv4 podCIDRs/],
    [['a', 'b', 'c'], {}, /should be IPv4\/IPv6 only or dual-stack/],
  ])('reports a malformed peer with the reason (%j)', (cidrs, extra, reason) => {
    const found = peerLease(node('bad', cidrs, annotated(extra)), names, v4);
    expect(found.kind).toBe('malformed');
    expect((found as { reason: string }).reason).toMatch(reason);
  });

  it("checks this node's podCIDR against Network and says what is missing", () => {
    expect(formatCidr(ownSubnets(node('n1', ['10.244.1.0/24']), v4).v4!)).toBe('10.244.1.0/24');
    expect(() => ownSubnets(node('n1', ['10.99.1.0/24']), v4)).toThrow(/Network: does not contain the podCIDR 10.99.1.0\/24 of node "n1"; net-conf.json must match the cluster's --cluster-cidr/);
    expect(() => ownSubnets(node('n1', ['10.244.1.0/24']), dual)).toThrow(/node "n1" has no IPv6 podCIDR but net-conf.json enables IPv6 \(spec.podCIDRs: 10.244.1.0\/24\): node IPAM must give every node an IPv6 podCIDR too/);
  });

  it('publishes attrs, with the operator overwrite of the public IP, and patches only what changed', () => {
    const lease: Lease = {
      subnet: parseCidr('10.244.1.0/24')!,
      attrs: { publicIP: parseIPv4('192.0.2.1')!, backendType: 'vxlan', backendData: { VNI: 1, VtepMAC: 'aa:bb:cc:dd:ee:ff' } },
      reservation: false,
    };
    const wanted = publishedAnnotations(lease, names, {});
    expect(wanted).toEqual({
      'flannel.alpha.coreos.com/kube-subnet-manager': 'true',
      'flannel.alpha.coreos.com/backend-type': 'vxlan',
      'flannel.alpha.coreos.com/backend-data': '{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}',
      'flannel.alpha.coreos.com/public-ip': '192.0.2.1',
    });
    const natted = publishedAnnotations(lease, names, { 'flannel.alpha.coreos.com/public-ip-overwrite': '203.0.113.9' });
    expect(natted['flannel.alpha.coreos.com/public-ip']).toBe('203.0.113.9');
    expect(changedAnnotations(wanted, { ...wanted, 'flannel.alpha.coreos.com/public-ip': '192.0.2.7' })).toEqual({ 'flannel.alpha.coreos.com/public-ip': '192.0.2.1' });
    const hostGw = publishedAnnotations({ ...lease, attrs: { publicIP: parseIPv4('192.0.2.1')!, publicIPv6: parseIPv6('2001:db8::1')!, backendType: 'host-gw' } }, names, {});
    expect(hostGw['flannel.alpha.coreos.com/backend-data']).toBe('null');
    expect(hostGw['flannel.alpha.coreos.com/public-ipv6']).toBeUndefined();
  });
});

describe('node name', () => {
  const api = (nodeName: string | undefined, fail = false) => ({
    getPodNodeName: async () => {
      if (fail) throw new Error('HTTP 403: forbidden');
      return nodeName;
    },
  });

  it('comes from NODE_NAME, else from the pod', async () => {
    expect(await resolveNodeName({ NODE_NAME: 'n1' }, api('other'))).toBe('n1');
    expect(await resolveNodeName({ POD_NAME: 'p', POD_NAMESPACE: 'kube-flannel' }, api('n7'))).toBe('n7');
  });

  it('fails with upstream messages', async () => {
    await expect(resolveNodeName({}, api('x'))).rejects.toThrow('env variables POD_NAME and POD_NAMESPACE must be set');
    await expect(resolveNodeName({ POD_NAME: 'p', POD_NAMESPACE: 'ns' }, api(undefined))).rejects.toThrow("node name not present in pod spec 'ns/p'");
    await expect(resolveNodeName({ POD_NAME: 'p', POD_NAMESPACE: 'ns' }, api('x', true))).rejects.toThrow("error retrieving pod spec for 'ns/p': HTTP 403: forbidden");
  });
});

describe('API server connection', () => {
  const dir = mkdtempSync(join(tmpdir(), 'kubecfg-'));
  const kubeconfig = join(dir, 'config');
  writeFileSync(kubeconfig, [
    'apiVersion: v1', 'kind: Config', 'current-context: c',
    'clusters: [{name: k, cluster: {server: "https://192.0.2.254:6443"}}]',
    'users: [{name: u, user: {token: abc}}]',
    'contexts: [{name: c, context: {cluster: k, user: u}}]',
  ].join('\n'));

  it('uses --kubeconfig-file, with --kube-api-url replacing its server', () => {
    expect(kubeConfigFor({ kubeconfigFile: kubeconfig, apiUrl: '', env: {} }).getCurrentCluster()?.server).toBe('https://192.0.2.254:6443');
    const both = kubeConfigFor({ kubeconfigFile: kubeconfig, apiUrl: 'http://192.0.2.1:8080', env: {} });
    expect(both.getCurrentCluster()?.server).toBe('http://192.0.2.1:8080');
    expect(both.getCurrentUser()?.token).toBe('abc');
  });

  it('uses --kube-api-url alone, with the service account token when mounted', () => {
    const prefix = mkdtempSync(join(tmpdir(), 'sa-'));
    const sa = join(prefix, 'var/run/secrets/kubernetes.io/serviceaccount');
    mkdirSync(sa, { recursive: true });
    writeFileSync(join(sa, 'token'), 'tok');
    const kc = kubeConfigFor({ kubeconfigFile: '', apiUrl: 'http://192.0.2.254:8080', env: {}, pathPrefix: prefix });
    expect(kc.getCurrentCluster()?.server).toBe('http://192.0.2.254:8080');
    expect(kc.getCurrentUser()?.authProvider?.config?.['tokenFile']).toBe(join(sa, 'token'));
  });

  it('uses the in-cluster service account, and says what to give when not in a pod', () => {
    const kc = kubeConfigFor({ kubeconfigFile: '', apiUrl: '', env: { KUBERNETES_SERVICE_HOST: '10.96.0.1', KUBERNETES_SERVICE_PORT: '443' } });
    expect(kc.getCurrentCluster()?.server).toBe('https://10.96.0.1:443');
    expect(() => kubeConfigFor({ kubeconfigFile: '', apiUrl: '', env: {} })).toThrow(/give --kubeconfig-file or --kube-api-url/);
    expect(() => kubeConfigFor({ kubeconfigFile: join(dir, 'missing'), apiUrl: '', env: {} })).toThrow(/kubeconfig-file: cannot be loaded/);
    expect(() => kubeConfigFor({ kubeconfigFile: '', apiUrl: '192.0.2.1:6443', env: {} })).toThrow(/kube-api-url: must be an http/);
  });
});
