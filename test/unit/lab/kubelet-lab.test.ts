import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { V1Pod } from '@kubernetes/client-node';
import { loadAll } from 'js-yaml';
import { afterAll, describe, expect, it } from 'vitest';
import { contentHash } from '../../../image/content-hash.js';
import { flannelImageInputs } from '../../../image/flannel-image.js';
import {
  apiserverArgv, componentsOf, controllerManagerArgv, controlPlaneFiles, nodeIpamFor, schedulerArgv, type ControlPlaneSpec,
} from '../../../lab/kube/control-plane.js';
import type { KubeTools } from '../../../lab/kube/kube-tools.js';
import { containerdConfig, CONTAINERD_SOCKET } from '../../../lab/kubelet/containerd.js';
import { FLANNEL_MANIFEST, flannelManifest, shippedNetConf } from '../../../lab/kubelet/flannel-daemonset.js';
import { ECHO_PORT, LAB_POD_LABEL, labPod, podRecordOf } from '../../../lab/kubelet/kube-pods.js';
import { kubeProxyConfig } from '../../../lab/kubelet/kube-proxy.js';
import { kubeletArgv, kubeletConfig } from '../../../lab/kubelet/kubelet.js';
import { KUBELET_SYSCTLS, NODE_PRIVATE_PATHS, nodeLauncher, privateDirOf } from '../../../lab/kubelet/node-mounts.js';
import { LabUsageError, parseLabArgs } from '../../../lab/lab-args.js';
import { isKubeletHostProcess } from '../../../lab/lab-kubelet.js';
import { REPO_ROOT } from '../../../lab/lab-state.js';
import { Netns } from '../../../lab/netns.js';

const MANIFEST = readFileSync(FLANNEL_MANIFEST, 'utf8');

interface K8sObject {
  kind?: string;
  data?: Record<string, string>;
  spec?: { template?: { spec?: { volumes?: { name: string; hostPath?: { path: string } }[] } } };
}
const documents = (text: string): K8sObject[] => (loadAll(text) as (K8sObject | null)[]).filter((d): d is K8sObject => d !== null);
const kinds = (text: string): (string | undefined)[] => documents(text).map((d) => d.kind);
const configMapNetConf = (text: string): unknown => {
  const cm = documents(text).find((d) => d.kind === 'ConfigMap');
  return JSON.parse(cm?.data?.['net-conf.json'] ?? 'null') as unknown;
};

/** The line numbers (0-based) of the manifest's net-conf.json block: the key line excluded, its indented lines. */
function netConfBlockLines(lines: readonly string[]): { start: number; end: number } {
  const key = lines.indexOf('  net-conf.json: |');
  let end = key + 1;
  while (end < lines.length && lines[end]!.startsWith('    ')) end++;
  return { start: key + 1, end };
}

describe('flannel DaemonSet manifest (lab/kubelet/flannel-daemonset.ts)', () => {
  it('reads the net-conf.json the manifest ships as JSON', () => {
    expect(JSON.parse(shippedNetConf())).toEqual({ Network: '10.244.0.0/16', EnableNFTables: false, Backend: { Type: 'vxlan' } });
    expect(JSON.parse(shippedNetConf(MANIFEST))).toEqual(configMapNetConf(MANIFEST));
  });

  it('returns the manifest byte for byte when the network config is JSON-equal to the shipped one, whatever its spacing', () => {
    expect(flannelManifest(shippedNetConf(MANIFEST), MANIFEST)).toBe(MANIFEST);
    expect(flannelManifest(JSON.stringify(JSON.parse(shippedNetConf(MANIFEST))), MANIFEST)).toBe(MANIFEST);
    expect(flannelManifest(shippedNetConf())).toBe(MANIFEST);
  });

  it('applies the manifest as shipped for the lab\'s default network: keys in another order or a default left out configure the same network', () => {
    expect(flannelManifest('{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}', MANIFEST)).toBe(MANIFEST);
    expect(flannelManifest('{"Backend":{"Type":"vxlan"},"EnableNFTables":false,"Network":"10.244.0.0/16"}', MANIFEST)).toBe(MANIFEST);
    expect(flannelManifest('{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}', MANIFEST)).not.toBe(MANIFEST);
  });

  it('refuses a manifest without the ConfigMap key, naming it', () => {
    expect(() => shippedNetConf('kind: ConfigMap\ndata: {}\n')).toThrow(/net-conf\.json/);
  });

  it.each([
    ['host-gw', { Network: '10.244.0.0/16', Backend: { Type: 'host-gw' } }],
    ['udp on another Network', { Network: '10.9.0.0/16', SubnetLen: 26, Backend: { Type: 'udp', Port: 8285 } }],
    ['dual-stack', { Network: '10.244.0.0/16', EnableIPv6: true, IPv6Network: '2001:db8:a::/48', Backend: { Type: 'vxlan' } }],
    ['IPv6 only', { EnableIPv4: false, EnableIPv6: true, IPv6Network: '2001:db8:a::/48', IPv6SubnetLen: 64, Backend: { Type: 'vxlan' } }],
  ])('replaces only the net-conf.json block for a %s config, which parses back to that config', (_what, netConf) => {
    const out = flannelManifest(JSON.stringify(netConf), MANIFEST);
    expect(out).not.toBe(MANIFEST);
    const before = MANIFEST.split('\n');
    const after = out.split('\n');
    const b = netConfBlockLines(before);
    const a = netConfBlockLines(after);
    expect(a.start).toBe(b.start);
    // Every line before and after the block is the same line.
    expect(after.slice(0, a.start)).toEqual(before.slice(0, b.start));
    expect(after.slice(a.end)).toEqual(before.slice(b.end));
    // The block is the given JSON, indented under the key.
    const block = after.slice(a.start, a.end);
    expect(block.every((l) => l.startsWith('    '))).toBe(true);
    expect(JSON.parse(block.map((l) => l.slice(4)).join('\n'))).toEqual(netConf);
    expect(JSON.parse(shippedNetConf(out))).toEqual(netConf);
  });

  it('still gives valid YAML documents, the same kinds in the same order, with the ConfigMap carrying the new config', () => {
    const netConf = { Network: '10.244.0.0/16', EnableIPv6: true, IPv6Network: '2001:db8:a::/48', Backend: { Type: 'host-gw' } };
    const out = flannelManifest(JSON.stringify(netConf), MANIFEST);
    expect(kinds(MANIFEST)).toEqual(['Namespace', 'ClusterRole', 'ClusterRoleBinding', 'ServiceAccount', 'ConfigMap', 'DaemonSet']);
    expect(kinds(out)).toEqual(kinds(MANIFEST));
    expect(configMapNetConf(out)).toEqual(netConf);
    // Only the ConfigMap's net-conf.json differs between the two parses.
    const [was, now] = [documents(MANIFEST), documents(out)];
    const cmIndex = kinds(MANIFEST).indexOf('ConfigMap');
    now.forEach((doc, i) => { if (i !== cmIndex) expect(doc).toEqual(was[i]); });
    expect(now[cmIndex]?.data?.['cni-conf.json']).toBe(was[cmIndex]?.data?.['cni-conf.json']);
  });
});

describe('kubelet (lab/kubelet/kubelet.ts)', () => {
  const config = kubeletConfig('/lab/pki/ca.crt');

  it('runs on this machine: cgroupfs on cgroup v1 without a QoS hierarchy, kernel settings read and never written', () => {
    expect(config).toMatchObject({
      apiVersion: 'kubelet.config.k8s.io/v1beta1', kind: 'KubeletConfiguration',
      cgroupDriver: 'cgroupfs', failCgroupV1: false, cgroupsPerQOS: false, protectKernelDefaults: true, failSwapOn: false,
    });
  });

  it('never evicts a pod for what the shared machine uses: every hard eviction threshold is 0%', () => {
    const eviction = config['evictionHard'] as Record<string, string>;
    expect(Object.keys(eviction).length).toBeGreaterThan(0);
    for (const value of Object.values(eviction)) expect(value).toBe('0%');
  });

  it('lets in only clients with a certificate of the given CA, and talks CRI to the host containerd socket', () => {
    expect(config['authentication']).toEqual({ anonymous: { enabled: false }, webhook: { enabled: false }, x509: { clientCAFile: '/lab/pki/ca.crt' } });
    expect(config['authorization']).toEqual({ mode: 'AlwaysAllow' });
    expect(config['containerRuntimeEndpoint']).toBe('unix:///run/containerd/containerd.sock');
    expect(config['containerRuntimeEndpoint']).toBe(`unix://${CONTAINERD_SOCKET}`);
  });

  it('names the Node after the host and gives its underlay address(es), IPv4 first, joined with a comma', () => {
    const files = { config: '/lab/h2/kubelet.yaml', kubeconfig: '/lab/h2/kubelet.kubeconfig' };
    const single = kubeletArgv('/k/kubelet', 'h2', ['192.0.2.2'], files);
    expect(single[0]).toBe('/k/kubelet');
    expect(single).toEqual(expect.arrayContaining([
      '--hostname-override=h2', '--node-ip=192.0.2.2', '--config=/lab/h2/kubelet.yaml', '--kubeconfig=/lab/h2/kubelet.kubeconfig',
    ]));
    expect(kubeletArgv('/k/kubelet', 'h2', ['192.0.2.2', '2001:db8:2::2'], files)).toContain('--node-ip=192.0.2.2,2001:db8:2::2');
  });
});

describe("a kubelet host's mount namespace (lab/kubelet/node-mounts.ts)", () => {
  it('shows exactly the six kernel settings the kubelet checks, with the values it expects', () => {
    expect(KUBELET_SYSCTLS).toEqual({
      'vm/overcommit_memory': '1',
      'vm/panic_on_oom': '0',
      'kernel/panic': '10',
      'kernel/panic_on_oops': '1',
      'kernel/keys/root_maxkeys': '1000000',
      'kernel/keys/root_maxbytes': '25000000',
    });
  });

  it('enters the network namespace and the mount namespace with nsenter, then execs the program', () => {
    expect(nodeLauncher({ netns: 'ftl-a-h1', mountNs: '/run/flannel-ts/mountns/ftl-a-h1' }, ['containerd', '--config', '/c.toml'])).toEqual([
      'nsenter', '--net=/run/netns/ftl-a-h1', '--mount=/run/flannel-ts/mountns/ftl-a-h1', '--', 'containerd', '--config', '/c.toml',
    ]);
  });

  it('keeps a private path under the host folder with its slashes as underscores', () => {
    expect(privateDirOf('/lab/h1/node', '/etc/cni/net.d')).toBe('/lab/h1/node/etc_cni_net.d');
    expect(privateDirOf('/lab/h1/node', '/run/flannel')).toBe('/lab/h1/node/run_flannel');
    // No two private paths share a folder.
    expect(new Set(NODE_PRIVATE_PATHS.map((p) => privateDirOf('/r', p))).size).toBe(NODE_PRIVATE_PATHS.length);
  });

  it("keeps private every folder the DaemonSet's hostPath volumes name, except the shared xtables lock", () => {
    const ds = documents(MANIFEST).find((d) => d.kind === 'DaemonSet');
    const hostPaths = (ds?.spec?.template?.spec?.volumes ?? []).flatMap((v) => (v.hostPath ? [v.hostPath.path] : []));
    expect(hostPaths).toContain('/run/xtables.lock');
    expect(hostPaths.length).toBeGreaterThan(1);
    // /run/xtables.lock stays the machine's: iptables calls on all hosts take turns on one lock.
    expect(NODE_PRIVATE_PATHS).not.toContain('/run/xtables.lock');
    for (const path of hostPaths.filter((p) => p !== '/run/xtables.lock')) expect(NODE_PRIVATE_PATHS).toContain(path);
  });
});

describe('containerd (lab/kubelet/containerd.ts)', () => {
  it('restricts OOM score changes, keeps pod namespaces in its state folder and uses the given pause image and the CNI paths', () => {
    const toml = containerdConfig('registry.local/pause:lab');
    expect(toml).toMatch(/^\s*restrict_oom_score_adj = true$/m);
    expect(toml).toMatch(/^\s*netns_mounts_under_state_dir = true$/m);
    expect(toml).toMatch(/^\s*sandbox_image = "registry\.local\/pause:lab"$/m);
    expect(toml).toMatch(/^\s*address = "\/run\/containerd\/containerd\.sock"$/m);
    expect(toml).toMatch(/^\s*bin_dir = "\/opt\/cni\/bin"$/m);
    expect(toml).toMatch(/^\s*conf_dir = "\/etc\/cni\/net\.d"$/m);
  });
});

describe('kube-proxy (lab/kubelet/kube-proxy.ts)', () => {
  it('runs iptables mode for the host and leaves the machine-wide conntrack settings alone', () => {
    const config = kubeProxyConfig('h3', '/lab/h3/kube-proxy.kubeconfig', ['10.244.0.0/16', '2001:db8:a::/48']);
    expect(config).toMatchObject({
      kind: 'KubeProxyConfiguration', mode: 'iptables', hostnameOverride: 'h3',
      clusterCIDR: '10.244.0.0/16,2001:db8:a::/48', clientConnection: { kubeconfig: '/lab/h3/kube-proxy.kubeconfig' },
    });
    expect(config['conntrack']).toMatchObject({ maxPerCore: 0, tcpEstablishedTimeout: '0s', tcpCloseWaitTimeout: '0s' });
    expect(kubeProxyConfig('h1', '/k', ['10.244.0.0/16'])['clusterCIDR']).toBe('10.244.0.0/16');
  });
});

describe("the lab's pods in kubelet mode (lab/kubelet/kube-pods.ts)", () => {
  it('pins a pod to its host, never pulls its image, dies at once and serves a TCP echo on 8080', () => {
    const pod = labPod('h2-p1', 'h2', 'flannel-ts-lab/busybox:1') as {
      metadata: { name: string; namespace: string; labels: Record<string, string> };
      spec: { nodeSelector: Record<string, string>; terminationGracePeriodSeconds: number; containers: { image: string; imagePullPolicy: string; command: string[] }[] };
    };
    expect(pod.metadata).toEqual({ name: 'h2-p1', namespace: 'default', labels: { 'flannel-ts.lab/pod': 'true' } });
    expect(LAB_POD_LABEL).toBe('flannel-ts.lab/pod');
    expect(pod.spec.nodeSelector).toEqual({ 'kubernetes.io/hostname': 'h2' });
    expect(pod.spec.terminationGracePeriodSeconds).toBe(0);
    expect(pod.spec.containers).toHaveLength(1);
    const [c] = pod.spec.containers;
    expect(c?.image).toBe('flannel-ts-lab/busybox:1');
    expect(c?.imagePullPolicy).toBe('Never');
    expect(ECHO_PORT).toBe(8080);
    expect(c?.command.join(' ')).toMatch(/nc .*-p 8080 .*cat/);
  });

  const pod = (phase: string, ips: string[]): V1Pod => ({
    metadata: { name: 'h1-p1', namespace: 'default' },
    spec: { nodeName: 'h1', containers: [] },
    status: { phase, podIPs: ips.map((ip) => ({ ip })) },
  });

  it('records a Running dual-stack pod with its IPv4 address first and its IPv6 one, whichever order the API lists them', () => {
    const want = { name: 'h1-p1', host: 'h1', netns: '', ip: '10.244.1.5', ip6: '2001:db8:a:1::5', kubePod: 'default/h1-p1' };
    expect(podRecordOf(pod('Running', ['10.244.1.5', '2001:db8:a:1::5']))).toEqual(want);
    expect(podRecordOf(pod('Running', ['2001:db8:a:1::5', '10.244.1.5']))).toEqual(want);
  });

  it('records an IPv6-only pod with its IPv6 address as ip', () => {
    expect(podRecordOf(pod('Running', ['2001:db8:a:1::5']))).toMatchObject({ ip: '2001:db8:a:1::5', ip6: '2001:db8:a:1::5', kubePod: 'default/h1-p1' });
  });

  it('records no pod that is not Running yet or has no address', () => {
    expect(podRecordOf(pod('Pending', ['10.244.1.5']))).toBeUndefined();
    expect(podRecordOf(pod('Running', []))).toBeUndefined();
    expect(podRecordOf({ metadata: { name: 'h1-p1' }, spec: { nodeName: 'h1', containers: [] }, status: { phase: 'Running' } })).toBeUndefined();
  });
});

describe('control plane with kubelets (lab/kube/control-plane.ts)', () => {
  const tools: KubeTools = {
    kubeApiserver: '/k/kube-apiserver', kubeControllerManager: '/k/kube-controller-manager', kubeScheduler: '/k/kube-scheduler', kubeProxy: '/k/kube-proxy',
    kubelet: '/k/kubelet', kubectl: '/k/kubectl', etcd: '/e/etcd', etcdctl: '/e/etcdctl',
  };
  const spec = (kubelets?: boolean): ControlPlaneSpec => ({
    dir: '/s', hub: new Netns('ftl-x-hub'), stack: 'v4', tools, ...nodeIpamFor(JSON.stringify({ Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } })),
    ...(kubelets === undefined ? {} : { kubelets }),
  });
  const files = controlPlaneFiles({ dir: '/s' });
  const flag = (argv: readonly string[], name: string): string | undefined => argv.find((a) => a.startsWith(`${name}=`))?.slice(name.length + 1);

  it('runs kube-scheduler only when kubelets run pods, and starts it last', () => {
    expect(componentsOf({})).toEqual(['etcd', 'kube-apiserver', 'kube-controller-manager']);
    expect(componentsOf({ kubelets: false })).not.toContain('kube-scheduler');
    const withKubelets = componentsOf({ kubelets: true });
    expect(withKubelets.at(-1)).toBe('kube-scheduler');
    expect(withKubelets).toEqual(['etcd', 'kube-apiserver', 'kube-controller-manager', 'kube-scheduler']);
  });

  it('runs the controllers pods and DaemonSets need with kubelets, and node IPAM alone without', () => {
    expect(flag(controllerManagerArgv(spec(true), files), '--controllers')?.split(',')).toEqual([
      'node-ipam-controller', 'node-lifecycle-controller', 'daemonset-controller', 'serviceaccount-controller',
      'root-ca-certificate-publisher-controller', 'garbage-collector-controller', 'pod-garbage-collector-controller',
    ]);
    expect(flag(controllerManagerArgv(spec(), files), '--controllers')).toBe('node-ipam-controller');
    expect(flag(controllerManagerArgv(spec(false), files), '--controllers')).toBe('node-ipam-controller');
  });

  it('gives kube-apiserver a client certificate towards kubelets and reaches them at their InternalIP', () => {
    const argv = apiserverArgv(spec(true), files);
    expect(flag(argv, '--kubelet-client-certificate')).toBe('/s/pki/kubelet-client.crt');
    expect(flag(argv, '--kubelet-client-key')).toBe('/s/pki/kubelet-client.key');
    expect(flag(argv, '--kubelet-preferred-address-types')).toBe('InternalIP');
  });

  it('runs kube-scheduler with the admin kubeconfig, no leader election and no serving port', () => {
    const argv = schedulerArgv(spec(true), files);
    expect(argv[0]).toBe('/k/kube-scheduler');
    expect(flag(argv, '--kubeconfig')).toBe('/s/kubeconfig');
    expect(flag(argv, '--leader-elect')).toBe('false');
    expect(flag(argv, '--secure-port')).toBe('0');
  });
});

describe('lab command line: --kubelet (lab/lab-args.ts)', () => {
  it('takes --kubelet as a switch that implies --kube', () => {
    expect(parseLabArgs(['up', '--kubelet', '--id', 'k2'])).toMatchObject({ command: 'up', kubelet: true, kube: true, id: 'k2' });
    expect(parseLabArgs(['up', '--kubelet', '--kube'])).toMatchObject({ kubelet: true, kube: true });
  });

  it('refuses --kubelet=value, naming the option', () => {
    expect(() => parseLabArgs(['up', '--kubelet=x'])).toThrow(LabUsageError);
    expect(() => parseLabArgs(['up', '--kubelet=x'])).toThrow(/--kubelet/);
  });

  it('leaves kubelet mode off without it, with or without --kube', () => {
    expect(parseLabArgs([])).toMatchObject({ kubelet: false, kube: false });
    expect(parseLabArgs(['up', '--kube'])).toMatchObject({ kubelet: false, kube: true });
  });
});

describe('kubelet host process targets (lab/lab-kubelet.ts)', () => {
  it.each(['h2/kubelet', 'h1/containerd', 'h10/kube-proxy'])('takes %s as a kubelet host process', (target) => {
    expect(isKubeletHostProcess(target)).toBe(true);
  });

  it.each(['h1', 'etcd', 'kube-apiserver', 'h1/flanneld', 'h1/kubelet/x', '/kubelet'])('does not take %s as one', (target) => {
    expect(isKubeletHostProcess(target)).toBe(false);
  });
});

describe('the flannel image cache key (image/flannel-image.ts, image/content-hash.ts)', () => {
  it('hashes package.json, the lock file for node_modules, the dist folders it copies and the node binary', () => {
    // path.join keeps the copies' trailing slash on folders; it names the same folder.
    const inputs = flannelImageInputs('/repo', '/usr/bin/node').map((p) => p.replace(/(.)\/$/, '$1'));
    expect(inputs).toEqual(expect.arrayContaining([
      '/repo/package.json', '/repo/package-lock.json', '/repo/dist/flanneld', '/repo/dist/backends', '/repo/dist/native', '/repo/dist/cni/flannel-sea',
    ]));
    expect(inputs.at(-1)).toBe('/usr/bin/node');
    expect(inputs.some((p) => p.includes('node_modules'))).toBe(false);
    expect(flannelImageInputs(REPO_ROOT, '/n')[0]).toBe(join(REPO_ROOT, 'package.json'));
  });

  const dir = mkdtempSync(join(tmpdir(), 'flannel-ts-hash-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('changes when a file changes its bytes or a part string changes, and is stable otherwise', () => {
    mkdirSync(join(dir, 'dist/sub'), { recursive: true });
    writeFileSync(join(dir, 'package.json'), '{"name":"x"}');
    writeFileSync(join(dir, 'dist/a.js'), 'one');
    writeFileSync(join(dir, 'dist/sub/b.js'), 'two');
    const inputs = [join(dir, 'package.json'), join(dir, 'dist')];
    const first = contentHash(inputs, ['node v20']);
    expect(first).toMatch(/^[0-9a-f]{16}$/);
    expect(contentHash(inputs, ['node v20'])).toBe(first);

    expect(contentHash(inputs, ['node v22'])).not.toBe(first);
    expect(contentHash(inputs)).not.toBe(first);

    // Same size, other bytes, deep in a folder.
    writeFileSync(join(dir, 'dist/sub/b.js'), 'twO');
    const changed = contentHash(inputs, ['node v20']);
    expect(changed).not.toBe(first);
    writeFileSync(join(dir, 'dist/sub/b.js'), 'two');
    expect(contentHash(inputs, ['node v20'])).toBe(first);

    // A file's mode is part of it too (an executable bit lost would change the image).
    chmodSync(join(dir, 'dist/a.js'), 0o755);
    expect(contentHash(inputs, ['node v20'])).not.toBe(first);
  });
});
