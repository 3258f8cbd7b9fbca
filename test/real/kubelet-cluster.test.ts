/**
 * flannel-ts deployed the way users deploy it: real kubelets and containerd run manifests/kube-flannel.yml (the lab's
 * `up --kubelet`: a control plane in the hub, containerd + kubelet + kube-proxy per host, the image built by
 * image/ without Docker and imported). Proven here, on vxlan with 3 nodes:
 * - the DaemonSet rolls out from the manifest as shipped: the init containers install the plugin and the conflist
 *   on each host, every kube-flannel pod becomes Ready through its probes, `kubectl logs` shows flanneld;
 * - pods on different nodes reach each other (kubectl exec), and pod-to-outside traffic is masqueraded;
 * - what operators do: delete a kube-flannel pod (recreated; running pods lose at most 2 of 100 pings at 20 ms),
 *   roll the DaemonSet to a new image tag, restart a kubelet and a containerd, drain and delete a node;
 * - a deleted pod gives its address back (CNI DEL through containerd), and which CNI verbs containerd calls;
 * and that host-gw, udp (the image's native addon, unprivileged) and IPv6-only vxlan carry pods across nodes the same way.
 */
import { existsSync, readdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { V1Pod } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kubectlFor } from '../../lab/kube/control-plane.js';
import { tagImage } from '../../lab/kubelet/containerd.js';
import { nodeMountsOf } from '../../lab/kubelet/kubelet-host.js';
import { labControlPlane } from '../../lab/lab-kube.js';
import { MOUNT_NS_DIR, privateDirOf } from '../../lab/kubelet/node-mounts.js';
import { labDir, type HostRecord } from '../../lab/lab-state.js';
import { Netns, sh } from '../../lab/netns.js';
import { REPO } from '../helpers/cni-invoke.js';
import { downLeavesNothing, lab, labWithin, PING_COUNTS, stateOf, takeDownStaleLabs, upReaching } from '../helpers/lab-driver.js';
import { waitFor } from '../helpers/processes.js';

/** An `up --kubelet` takes 60–100 s on a loaded 2-core machine (images, containerd imports, the rollout), `down` up to 25 s. */
const LAB_TEST_MS = 300_000;
const STEP_TEST_MS = 180_000;

const ids = { vxlan: `t${process.pid}x`, hostGw: `t${process.pid}y`, udp: `t${process.pid}z`, v6: `t${process.pid}o` };

beforeAll(takeDownStaleLabs);
afterAll(async () => {
  for (const id of Object.values(ids)) await labWithin(120_000, 'down', '--id', id);
});

/** The lab's admin kubectl (what `npm run lab -- kubectl` runs), with stdin for manifests. */
const kubectl = (id: string, ...args: string[]): Promise<string> => kubectlFor(labControlPlane(stateOf(id))).run(args, undefined, 200_000);
const kubectlApply = (id: string, doc: object): Promise<string> => kubectlFor(labControlPlane(stateOf(id))).run(['apply', '-f', '-'], JSON.stringify(doc));

const podsOf = async (id: string, namespace: string, ...selector: string[]): Promise<V1Pod[]> =>
  (JSON.parse(await kubectl(id, '-n', namespace, 'get', 'pods', ...selector, '-o', 'json')) as { items: V1Pod[] }).items;

const flannelPodOn = async (id: string, node: string): Promise<V1Pod | undefined> =>
  (await podsOf(id, 'kube-flannel', `--field-selector=spec.nodeName=${node}`)).find((p) => !p.metadata?.deletionTimestamp);

const hostOf = (id: string, name: string): HostRecord => stateOf(id).hosts.find((h) => h.name === name) as HostRecord;
/** A folder of a host's private view (/opt/cni/bin, /var/lib/cni, …), as seen from the machine. */
const hostPath = (id: string, host: string, path: string): string => privateDirOf(nodeMountsOf(hostOf(id, host)).root, path);
const podIp = (id: string, pod: string): string => stateOf(id).pods.find((p) => p.name === pod)?.ip as string;

/** 100 pings at 20 ms from a pod (busybox's ping, through kubectl exec): sent and received. */
async function steadyPodPing(id: string, from: string, ip: string, count = 100): Promise<{ sent: number; received: number }> {
  const run = await labWithin(60_000, 'exec', from, '--id', id, '--', 'ping', '-q', '-i', '0.02', '-W', '1', '-c', String(count), ip);
  const m = PING_COUNTS.exec(run.out);
  return { sent: Number(m?.[1] ?? 0), received: Number(m?.[2] ?? 0) };
}

async function matrixReachable(id: string): Promise<string> {
  const status = await labWithin(200_000, 'status', '--id', id);
  expect(status.code, status.out).toBe(0);
  return status.out;
}

describe('kubelet lab, vxlan, 3 nodes', () => {
  const id = ids.vxlan;

  it('rolls kube-flannel.yml out as shipped: plugin and conflist on every host, every kube-flannel pod Ready, every pod reaching every other', async () => {
    const out = await upReaching(id, '30/30 pod pairs reachable', '--kubelet', '--hosts', '3', '--pods', '2');
    expect(out).toMatch(/kubectl apply -f manifests\/kube-flannel\.yml; every kube-flannel pod Ready … done/);
    const sea = statSync(join(REPO, 'dist/cni/flannel-sea')).size;
    const conflist = readFileSync(join(REPO, 'manifests/10-flannel.conflist'), 'utf8');
    for (const host of ['h1', 'h2', 'h3']) {
      // install-cni-plugin copied the image's plugin, install-cni the ConfigMap's conflist, into this host's folders.
      expect(statSync(join(hostPath(id, host, '/opt/cni/bin'), 'flannel')).size).toBe(sea);
      expect(readFileSync(join(hostPath(id, host, '/etc/cni/net.d'), '10-flannel.conflist'), 'utf8')).toBe(conflist);
      const pod = await flannelPodOn(id, host);
      expect(pod?.status?.conditions?.find((c) => c.type === 'Ready')?.status).toBe('True');
      expect(pod?.spec?.containers[0]?.image).toBe('ghcr.io/flannel-ts/flannel-ts:0.1.0');
      expect(readFileSync(hostOf(id, host).subnetEnv as string, 'utf8')).toMatch(/^FLANNEL_SUBNET=10\.244\.\d+\.1\/24$/m);
    }
    const logs = await kubectl(id, '-n', 'kube-flannel', 'logs', (await flannelPodOn(id, 'h1'))?.metadata?.name as string, '-c', 'kube-flannel');
    expect(logs).toContain('"msg":"wrote subnet file"');
    // No pod network namespace of containerd's shows up on the machine: they live in each host's private state.
    expect(readdirSync('/run/netns').filter((n) => n.startsWith('cni-'))).toEqual([]);
    // The folder of the hosts' mount namespace files is bound once, however many labs came up before.
    expect((await sh('findmnt', ['-n', '-o', 'TARGET', MOUNT_NS_DIR])).trim().split('\n')).toEqual([MOUNT_NS_DIR]);
  }, LAB_TEST_MS);

  it('masquerades pod-to-outside traffic: the hub, which has no route to the pod network, answers a pod', async () => {
    const hub = new Netns(`ftl-${id}-hub`);
    await expect(hub.ip('route', 'get', podIp(id, 'h1-p1'))).rejects.toThrow();
    const ping = await labWithin(60_000, 'exec', 'h1-p1', '--id', id, '--', 'ping', '-c', '3', '-W', '2', '192.0.2.254');
    expect(ping.out, ping.out).toMatch(/3 packets transmitted, 3 packets received/);
  }, STEP_TEST_MS);

  it('recreates a deleted kube-flannel pod while running pods keep talking (at most 2 of 100 pings at 20 ms lost)', async () => {
    const old = await flannelPodOn(id, 'h2');
    const pinging = steadyPodPing(id, 'h1-p1', podIp(id, 'h2-p1'));
    await new Promise((r) => setTimeout(r, 300));
    await kubectl(id, '-n', 'kube-flannel', 'delete', 'pod', old?.metadata?.name as string, '--wait=false');
    const { sent, received } = await pinging;
    expect(sent).toBe(100);
    expect(received).toBeGreaterThanOrEqual(98);
    await kubectl(id, '-n', 'kube-flannel', 'rollout', 'status', 'daemonset/kube-flannel-ds', '--timeout=120s');
    const now = await flannelPodOn(id, 'h2');
    expect(now?.metadata?.name).not.toBe(old?.metadata?.name);
    expect(await matrixReachable(id)).toContain('30/30 pod pairs reachable');
  }, STEP_TEST_MS);

  it('rolls the DaemonSet to a new image tag, node by node, and the pods keep their network', async () => {
    const tag = 'ghcr.io/flannel-ts/flannel-ts:0.1.0-rolled';
    // As a registry push of a new tag would: the same image under a new name on every node.
    for (const host of ['h1', 'h2', 'h3']) await tagImage(nodeMountsOf(hostOf(id, host)), 'ghcr.io/flannel-ts/flannel-ts:0.1.0', tag);
    await kubectl(id, '-n', 'kube-flannel', 'set', 'image', 'daemonset/kube-flannel-ds', `kube-flannel=${tag}`, `install-cni-plugin=${tag}`, `install-cni=${tag}`);
    await kubectl(id, '-n', 'kube-flannel', 'rollout', 'status', 'daemonset/kube-flannel-ds', '--timeout=180s');
    const pods = await podsOf(id, 'kube-flannel');
    expect(pods.filter((p) => !p.metadata?.deletionTimestamp).map((p) => p.spec?.containers[0]?.image)).toEqual([tag, tag, tag]);
    expect(await matrixReachable(id)).toContain('30/30 pod pairs reachable');
  }, STEP_TEST_MS);

  it('survives a kubelet restart and a containerd restart on a node: its pods keep their addresses and talk', async () => {
    const before = await podsOf(id, 'default', '-l', 'flannel-ts.lab/pod');
    for (const target of ['h2/kubelet', 'h2/containerd']) {
      const pinging = steadyPodPing(id, 'h1-p1', podIp(id, 'h2-p1'));
      const restart = await labWithin(120_000, 'restart', target, '--id', id);
      expect(restart.code, restart.out).toBe(0);
      const { sent, received } = await pinging;
      // On a failure, what the cluster looked like: a pod recreated (new IP, restarts) tells a kubelet fault from loss.
      const why = sent === 100 && received >= 98 ? '' : `${target}: ${received}/${sent}\n${await kubectl(id, 'get', 'pods', '-A', '-o', 'wide')}`;
      expect(sent, why).toBe(100);
      expect(received, why).toBeGreaterThanOrEqual(98);
    }
    await waitFor('h2 Ready again', async () => {
      const node = JSON.parse(await kubectl(id, 'get', 'node', 'h2', '-o', 'json')) as { status?: { conditions?: { type: string; status: string }[] } };
      return node.status?.conditions?.find((c) => c.type === 'Ready')?.status === 'True' || undefined;
    }, 60_000, 500);
    const after = await podsOf(id, 'default', '-l', 'flannel-ts.lab/pod');
    expect(after.map((p) => [p.metadata?.name, p.status?.podIP])).toEqual(before.map((p) => [p.metadata?.name, p.status?.podIP]));
    expect(await matrixReachable(id)).toContain('30/30 pod pairs reachable');
  }, STEP_TEST_MS);

  it('gives a deleted pod\'s address back through CNI DEL, called by containerd (which verbs it calls is recorded)', async () => {
    // A recording wrapper in front of the installed plugin on h3, for this test only.
    const bin = hostPath(id, 'h3', '/opt/cni/bin');
    const verbs = join(labDir(id), 'h3-cni-verbs.log');
    renameSync(join(bin, 'flannel'), join(bin, 'flannel.real'));
    writeFileSync(join(bin, 'flannel'), `#!/bin/sh\necho "$CNI_COMMAND" >> ${verbs}\nexec /opt/cni/bin/flannel.real "$@"\n`, { mode: 0o755 });
    try {
      const pod = { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'h3-dq', namespace: 'default' },
        spec: { nodeSelector: { 'kubernetes.io/hostname': 'h3' }, terminationGracePeriodSeconds: 0, automountServiceAccountToken: false,
          containers: [{ name: 'c', image: 'flannel-ts.local/lab-pod:1', imagePullPolicy: 'Never', command: ['/bin/sh', '-c', 'exec sleep 3600'] }] } };
      await kubectlApply(id, pod);
      await kubectl(id, 'wait', '--for=condition=Ready', 'pod/h3-dq', '--timeout=90s');
      const ip = (await podsOf(id, 'default', '--field-selector=metadata.name=h3-dq'))[0]?.status?.podIP as string;
      const reservation = join(hostPath(id, 'h3', '/var/lib/cni'), 'networks', 'cbr0', ip);
      expect(existsSync(reservation)).toBe(true);
      await kubectl(id, 'delete', 'pod', 'h3-dq', '--wait=true', '--timeout=60s');
      await waitFor('the address released', () => !existsSync(reservation) || undefined, 30_000, 200);
      const called = readFileSync(verbs, 'utf8').trim().split('\n');
      // containerd 1.6 (Debian's) calls ADD and DEL; it predates the CNI 1.1 GC and STATUS verbs and never sends them.
      expect(called[0]).toBe('ADD');
      expect(called).toContain('DEL');
      expect(called.filter((v) => v !== 'ADD' && v !== 'DEL')).toEqual([]);
    } finally {
      renameSync(join(bin, 'flannel.real'), join(bin, 'flannel'));
    }
  }, STEP_TEST_MS);

  it('drains and deletes a node: its pods go, the other nodes drop its routes and keep talking', async () => {
    const h3Subnet = /FLANNEL_SUBNET=(\S+)/.exec(readFileSync(hostOf(id, 'h3').subnetEnv as string, 'utf8'))?.[1]?.replace(/\.1\/24$/, '.0/24') as string;
    const h1 = new Netns(`ftl-${id}-h1`);
    expect(await h1.ip('route', 'show', h3Subnet)).toContain('flannel.1');
    await kubectl(id, 'drain', 'h3', '--ignore-daemonsets', '--force', '--delete-emptydir-data', '--grace-period=0', '--timeout=90s');
    // As an operator retires a machine: its kubelet stops (it would register the Node again), then the Node goes.
    expect((await lab('kill', 'h3/kubelet', '--id', id)).code).toBe(0);
    await kubectl(id, 'delete', 'node', 'h3');
    await waitFor('h1 drops the route to h3', async () => !(await h1.ip('route', 'show', h3Subnet)).includes('flannel.1') || undefined, 30_000, 200);
    const remaining = (await podsOf(id, 'default', '-l', 'flannel-ts.lab/pod')).map((p) => p.spec?.nodeName);
    expect(remaining.every((n) => n !== 'h3')).toBe(true);
    const { received } = await steadyPodPing(id, 'h1-p1', podIp(id, 'h2-p1'), 20);
    expect(received).toBe(20);
  }, STEP_TEST_MS);

  it('goes down leaving no namespace, process, mount namespace or container cgroup behind', async () => {
    const mountNs = stateOf(id).hosts.map((h) => nodeMountsOf(h).mountNs);
    // This lab's containers, from each host's containerd task state (other labs may run containers meanwhile).
    const ours = stateOf(id).hosts.flatMap((h) => {
      const tasks = join(hostPath(id, h.name, '/run/containerd'), 'io.containerd.runtime.v2.task', 'k8s.io');
      return existsSync(tasks) ? readdirSync(tasks) : [];
    });
    const cgroupsLeft = (): string[] => ours.filter((c) => existsSync(join('/sys/fs/cgroup/memory/k8s.io', c)));
    await downLeavesNothing(id);
    for (const file of mountNs) expect(existsSync(file)).toBe(false);
    expect(ours.length).toBeGreaterThan(0);
    expect(cgroupsLeft()).toEqual([]);
  }, STEP_TEST_MS);
});

describe.each([
  ['host-gw', ids.hostGw, 'cni0', [], '2/2 pod pairs reachable'],
  ['udp', ids.udp, 'flannel0', [], '2/2 pod pairs reachable'],
  // IPv6 only: the kubelet probes flanneld over IPv6, kube-proxy serves the apiserver's IPv6 ClusterIP.
  ['vxlan', ids.v6, 'flannel-v6.1', ['--ipv6-only'], 'pod pairs reachable: IPv6 2/2'],
])('kubelet lab, %s %j, 2 nodes', (backend, id, device, extra, reachable) => {
  it(`carries pods across nodes through the DaemonSet (${device} on every host)`, async () => {
    const out = await upReaching(id, reachable, '--kubelet', '--hosts', '2', '--pods', '1', '--backend', backend, ...extra);
    expect(out).toContain(`"Type":"${backend}"`);
    for (const host of ['h1', 'h2']) {
      expect(await new Netns(`ftl-${id}-${host}`).ip('-o', 'link', 'show')).toContain(`${device}:`);
      expect((await flannelPodOn(id, host))?.status?.conditions?.find((c) => c.type === 'Ready')?.status).toBe('True');
    }
    await downLeavesNothing(id);
  }, LAB_TEST_MS);
});
