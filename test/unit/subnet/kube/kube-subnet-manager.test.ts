/**
 * The kube subnet manager through the real @kubernetes/client-node against the in-process fake API server: how it
 * publishes, what it makes of peers (malformed ones included), how it follows drops and 410s, and that thousands of
 * nodes at start are one batch.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import { afterEach, describe, expect, it } from 'vitest';
import { formatIp, parseIPv4, parseIPv6 } from '../../../../flanneld/ip/address.js';
import { formatCidr } from '../../../../flanneld/ip/cidr.js';
import type { Lease, LeaseEvent } from '../../../../flanneld/lease/lease.js';
import { systemClock } from '../../../../flanneld/runtime/clock.js';
import { seededRandom } from '../../../../flanneld/runtime/random.js';
import { annotationNames } from '../../../../flanneld/subnet/kube/annotations.js';
import { KubeNodeApi } from '../../../../flanneld/subnet/kube/kube-node-api.js';
import { KubeSubnetManager } from '../../../../flanneld/subnet/kube/kube-subnet-manager.js';
import { resolveNodeName } from '../../../../flanneld/subnet/kube/node-name.js';
import { startFakeKubeApi, type FakeKubeApi } from '../../../helpers/fake-kube-api.js';
import { memoryLog } from '../../../helpers/test-log.js';
import { waitFor } from '../../../helpers/processes.js';

const P = 'flannel.alpha.coreos.com/';
const dir = mkdtempSync(join(tmpdir(), 'kube-sm-'));
const netConf = join(dir, 'net-conf.json');
writeFileSync(netConf, '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}');
const dualNetConf = join(dir, 'net-conf-dual.json');
writeFileSync(dualNetConf, '{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"2001:db8:a::/48","Backend":{"Type":"vxlan"}}');

const peerAnnotations = (ip: string, mac: string): Record<string, string> => ({
  [`${P}kube-subnet-manager`]: 'true',
  [`${P}backend-type`]: 'vxlan',
  [`${P}backend-data`]: `{"VNI":1,"VtepMAC":"${mac}"}`,
  [`${P}public-ip`]: ip,
});

let api: FakeKubeApi | undefined;
const stops: AbortController[] = [];
afterEach(async () => {
  for (const s of stops.splice(0)) s.abort();
  await api?.close();
  api = undefined;
});

async function setup(nodeName = 'n1', netConfPath = netConf) {
  api = await startFakeKubeApi({ bookmarkIntervalMs: 200 });
  const kc = new KubeConfig();
  kc.loadFromClusterAndUser({ name: 'fake', server: api.url, skipTLSVerify: true }, { name: 'u' });
  const { log, lines } = memoryLog();
  const manager = new KubeSubnetManager({
    api: new KubeNodeApi(kc),
    nodeName,
    annotations: annotationNames('flannel.alpha.coreos.com'),
    netConfPath,
    readFile: async (p) => (await import('node:fs/promises')).readFile(p, 'utf8'),
    setNodeNetworkUnavailable: true,
    clock: systemClock,
    random: seededRandom(7),
    log,
  });
  const stop = new AbortController();
  stops.push(stop);
  return { api, manager, lines, signal: stop.signal, nodeApi: new KubeNodeApi(kc) };
}

const attrs = { publicIP: parseIPv4('192.0.2.1')!, backendType: 'vxlan', backendData: { VNI: 1, VtepMAC: 'aa:aa:aa:aa:aa:01' } };

/** Collects every batch watchLeases yields, in the background. */
function collect(manager: KubeSubnetManager, signal: AbortSignal): LeaseEvent[][] {
  const batches: LeaseEvent[][] = [];
  void (async () => {
    for await (const batch of manager.watchLeases(signal)) batches.push([...batch]);
  })().catch(() => undefined);
  return batches;
}
const describeBatch = (batch: readonly LeaseEvent[]): string[] => batch.map((e) => `${e.type} ${formatCidr(e.lease.subnet!)}`);

describe('kube subnet manager', () => {
  it('publishes only the annotations that differ, on the status subresource, honouring public-ip-overwrite', async () => {
    const { api, manager, signal } = await setup();
    api.addNode({ name: 'n1', podCIDR: '10.244.1.0/24', annotations: { [`${P}public-ip-overwrite`]: '203.0.113.7', [`${P}backend-type`]: 'vxlan' } });
    const lease = await manager.acquireLease({ attrs }, signal);
    expect(formatCidr(lease.subnet!)).toBe('10.244.1.0/24');
    const patches = api.requests.filter((r) => r.verb === 'patch');
    expect(patches.map((r) => [r.resource, r.contentType])).toEqual([['nodes/status', 'application/strategic-merge-patch+json']]);
    expect(api.node('n1')?.metadata?.annotations).toMatchObject({
      [`${P}kube-subnet-manager`]: 'true',
      [`${P}public-ip`]: '203.0.113.7',
      [`${P}backend-data`]: '{"VNI":1,"VtepMAC":"aa:aa:aa:aa:aa:01"}',
    });
    await manager.acquireLease({ attrs }, signal);
    expect(api.requests.filter((r) => r.verb === 'patch')).toHaveLength(1);
  });

  it('waits while the node has no podCIDR, then takes it; refuses one outside Network', async () => {
    const { api, manager, lines, signal } = await setup();
    api.addNode({ name: 'n1' });
    const acquiring = manager.acquireLease({ attrs }, signal);
    await waitFor('the waiting message', () => lines.find((l) => /no spec.podCIDR yet/.test(l.msg)), 5000);
    api.updateNode('n1', (n) => {
      n.spec = { podCIDR: '10.244.5.0/24', podCIDRs: ['10.244.5.0/24'] };
    });
    expect(formatCidr((await acquiring).subnet!)).toBe('10.244.5.0/24');
    expect(lines.filter((l) => /no spec.podCIDR yet/.test(l.msg))).toHaveLength(1);

    const other = await setup('n9');
    other.api.addNode({ name: 'n9', podCIDR: '10.99.0.0/24' });
    await expect(other.manager.acquireLease({ attrs }, other.signal)).rejects.toThrow(/Network: does not contain the podCIDR 10.99.0.0\/24 of node "n9"/);
  });

  it('turns annotated nodes into lease events: one batch at start, then changes; malformed nodes warned once', async () => {
    const { api, manager, lines, signal } = await setup();
    api.addNode({ name: 'n1', podCIDR: '10.244.1.0/24', annotations: peerAnnotations('192.0.2.1', 'aa:aa:aa:aa:aa:01') });
    api.addNode({ name: 'n2', podCIDR: '10.244.2.0/24', annotations: peerAnnotations('192.0.2.2', 'aa:aa:aa:aa:aa:02') });
    api.addNode({ name: 'plain', podCIDR: '10.244.3.0/24' });
    api.addNode({ name: 'broken', podCIDR: '10.244.4.0/24', annotations: { ...peerAnnotations('192.0.2.4', 'x'), [`${P}public-ip`]: 'not-an-ip' } });
    const batches = collect(manager, signal);
    await waitFor('the first batch', () => batches[0], 5000);
    expect(describeBatch(batches[0]!).sort()).toEqual(['added 10.244.1.0/24', 'added 10.244.2.0/24']);
    const warnings = (): unknown[] => lines.filter((l) => l.msg.includes('do not parse') && l['node'] === 'broken');
    expect(warnings()).toHaveLength(1);
    expect(lines.find((l) => l['node'] === 'broken')?.['reason']).toMatch(/public-ip is not an address: "not-an-ip"/);

    api.updateNode('broken', (n) => {
      n.metadata!.labels = { ...n.metadata!.labels, touched: 'yes' };
    });
    api.updateNode('n2', (n) => {
      n.metadata!.annotations = { ...n.metadata!.annotations, [`${P}public-ip`]: '192.0.2.22' };
    });
    await waitFor('the n2 change', () => batches[1], 5000);
    expect(batches[1]!.map((e) => `${e.type} ${formatIp(e.lease.attrs.publicIP!)}`)).toEqual(['added 192.0.2.22']);
    expect(warnings()).toHaveLength(1);

    // Losing the annotations removes the peer, as deleting the node does.
    api.updateNode('n2', (n) => {
      n.metadata!.annotations = {};
    });
    api.deleteNode('n1');
    await waitFor('two removals', () => (batches.length >= 4 ? true : undefined), 5000);
    expect(batches.slice(2).map(describeBatch)).toEqual([['removed 10.244.2.0/24'], ['removed 10.244.1.0/24']]);
  });

  it('resumes a dropped watch from where it was, and lists again only after 410 Gone', async () => {
    const { api, manager, lines, signal } = await setup();
    api.addNode({ name: 'n1', podCIDR: '10.244.1.0/24', annotations: peerAnnotations('192.0.2.1', 'aa:aa:aa:aa:aa:01') });
    const batches = collect(manager, signal);
    await waitFor('the first batch', () => batches[0], 5000);
    await waitFor('a watch', () => (api.openWatches() > 0 ? true : undefined), 5000);
    api.dropWatches();
    api.addNode({ name: 'n2', podCIDR: '10.244.2.0/24', annotations: peerAnnotations('192.0.2.2', 'aa:aa:aa:aa:aa:02') });
    await waitFor('n2', () => batches[1], 5000);
    expect(describeBatch(batches[1]!)).toEqual(['added 10.244.2.0/24']);
    expect(api.requests.filter((r) => r.verb === 'list')).toHaveLength(1);

    await api.setAvailable(false);
    api.deleteNode('n1');
    api.addNode({ name: 'n3', podCIDR: '10.244.3.0/24', annotations: peerAnnotations('192.0.2.3', 'aa:aa:aa:aa:aa:03') });
    api.compact();
    await api.setAvailable(true);
    await waitFor('the re-list', () => batches[2], 10_000);
    expect(describeBatch(batches[2]!).sort()).toEqual(['added 10.244.3.0/24', 'removed 10.244.1.0/24']);
    expect(api.requests.filter((r) => r.verb === 'list')).toHaveLength(2);
    expect(lines.some((l) => l.msg.includes('410 Gone'))).toBe(true);
  });

  it('gets 3000 nodes at start as one paged list (6 pages of 500, one snapshot) and one batch', async () => {
    const { api, manager, signal } = await setup();
    for (let i = 0; i < 3000; i++) {
      api.addNode({ name: `n${i}`, podCIDR: `10.244.${i >> 8}.${(i & 255)}/32`, annotations: peerAnnotations(`198.51.100.${(i % 250) + 1}`, 'aa:aa:aa:aa:aa:01') });
    }
    const batches = collect(manager, signal);
    await waitFor('the first batch', () => batches[0], 20_000);
    expect(batches[0]).toHaveLength(3000);
    const lists = api.requests.filter((r) => r.verb === 'list');
    expect(lists.map((r) => r.query['limit'])).toEqual(Array(6).fill('500'));
    expect(lists.filter((r) => r.query['continue'] !== undefined)).toHaveLength(5);
  });

  it('re-publishes its annotations when someone removes or overwrites them, saying what it found (bounded)', async () => {
    const { api, manager, signal, lines } = await setup();
    api.addNode({ name: 'n1', podCIDR: '10.244.1.0/24' });
    const lease: Lease = await manager.acquireLease({ attrs }, signal);
    collect(manager, signal);
    const own = manager.watchOwnLease(lease, signal)[Symbol.asyncIterator]();
    const changed = own.next();
    api.updateNode('n1', (n) => {
      n.metadata!.annotations = {};
    });
    await changed;
    await manager.renewLease(lease);
    expect(api.node('n1')?.metadata?.annotations?.[`${P}public-ip`]).toBe('192.0.2.1');
    const overwritten = own.next();
    api.updateNode('n1', (n) => {
      n.metadata!.annotations = { ...n.metadata!.annotations, [`${P}public-ip`]: '192.0.2.66', [`${P}backend-data`]: 'x'.repeat(100_000) };
    });
    await overwritten;
    const found = lines.filter((l) => l.msg === "this node's flannel annotations were changed by someone else").at(-1);
    expect(found?.['found']).toMatchObject({ [`${P}public-ip`]: '192.0.2.66' });
    expect(JSON.stringify(found).length).toBeLessThan(800);
    await manager.renewLease(lease);
    expect(api.node('n1')?.metadata?.annotations?.[`${P}public-ip`]).toBe('192.0.2.1');
  });

  it('sets NetworkUnavailable=False keeping the other conditions, and reads node-public-ip', async () => {
    const { api, manager, signal } = await setup();
    api.addNode({ name: 'n1', podCIDR: '10.244.1.0/24', annotations: { [`${P}node-public-ip`]: '198.51.100.9' } });
    expect(formatIp((await manager.storedPublicIPs()).publicIP!)).toBe('198.51.100.9');
    const lease = await manager.acquireLease({ attrs }, signal);
    await manager.completeLease(lease, signal);
    const conditions = api.node('n1')?.status?.conditions ?? [];
    expect(conditions.find((c) => c.type === 'NetworkUnavailable')).toMatchObject({ status: 'False', reason: 'FlannelIsUp', message: 'Flannel is running on this node' });
    expect(conditions.find((c) => c.type === 'Ready')?.status).toBe('True');
  });

  it('finds its node through POD_NAME and POD_NAMESPACE, and names the pod when it cannot', async () => {
    const { api, nodeApi } = await setup();
    api.addPod('kube-flannel', 'kube-flannel-ds-x7k2p', 'worker-3');
    expect(await resolveNodeName({ POD_NAME: 'kube-flannel-ds-x7k2p', POD_NAMESPACE: 'kube-flannel' }, nodeApi)).toBe('worker-3');
    await expect(resolveNodeName({ POD_NAME: 'gone', POD_NAMESPACE: 'kube-flannel' }, nodeApi)).rejects.toThrow(/error retrieving pod spec for 'kube-flannel\/gone': get pod kube-flannel\/gone: HTTP 404/);
  });
});

describe('kube subnet manager, dual stack', () => {
  const dualAttrs = {
    ...attrs,
    publicIPv6: parseIPv6('2001:db8:2::1')!,
    backendV6Data: { VNI: 1, VtepMAC: 'aa:aa:aa:aa:06:01' },
  };
  const dualPeer = (v4: string, v6: string, mac6: string): Record<string, string> => ({
    ...peerAnnotations(v4, 'aa:aa:aa:aa:aa:02'),
    [`${P}backend-v6-data`]: `{"VNI":1,"VtepMAC":"${mac6}"}`,
    [`${P}public-ipv6`]: v6,
  });
  const annotate = (api: FakeKubeApi, name: string, changes: Record<string, string>): void => {
    api.updateNode(name, (n) => {
      n.metadata!.annotations = { ...n.metadata!.annotations, ...changes };
    });
  };

  it('takes a subnet per family from spec.podCIDRs and publishes both, honouring public-ipv6-overwrite', async () => {
    const { api, manager, signal } = await setup('n1', dualNetConf);
    api.addNode({ name: 'n1', podCIDRs: ['10.244.1.0/24', '2001:db8:a:1::/64'], annotations: { [`${P}public-ipv6-overwrite`]: '2001:db8:ff::7' } });
    const lease = await manager.acquireLease({ attrs: dualAttrs }, signal);
    expect([formatCidr(lease.subnet!), formatCidr(lease.ipv6Subnet!)]).toEqual(['10.244.1.0/24', '2001:db8:a:1::/64']);
    expect(api.node('n1')?.metadata?.annotations).toMatchObject({
      [`${P}backend-data`]: '{"VNI":1,"VtepMAC":"aa:aa:aa:aa:aa:01"}',
      [`${P}public-ip`]: '192.0.2.1',
      [`${P}backend-v6-data`]: '{"VNI":1,"VtepMAC":"aa:aa:aa:aa:06:01"}',
      [`${P}public-ipv6`]: '2001:db8:ff::7',
    });
  });

  it('refuses a node whose podCIDRs lack the IPv6 CIDR, naming the node and its podCIDRs, and publishes nothing', async () => {
    const { api, manager, signal } = await setup('n1', dualNetConf);
    api.addNode({ name: 'n1', podCIDRs: ['10.244.1.0/24'] });
    await expect(manager.acquireLease({ attrs: dualAttrs }, signal)).rejects.toThrow(
      /^node "n1" has no IPv6 podCIDR but net-conf.json enables IPv6 \(spec.podCIDRs: 10.244.1.0\/24\): .*the Node must be re-created$/,
    );
    expect(api.requests.filter((r) => r.verb === 'patch')).toEqual([]);
  });

  it("emits an update when only a peer's IPv6 annotations change, and when only its IPv4 ones do (unlike upstream)", async () => {
    const { api, manager, signal } = await setup('n1', dualNetConf);
    api.addNode({ name: 'n2', podCIDRs: ['10.244.2.0/24', '2001:db8:a:2::/64'], annotations: dualPeer('192.0.2.2', '2001:db8:2::2', 'aa:aa:aa:aa:06:02') });
    const batches = collect(manager, signal);
    await waitFor('the first batch', () => batches[0], 5000);
    const seen = (i: number) => waitFor(`batch ${i}`, () => batches[i], 5000).then((b) => b.map((e) => `${e.type} ${formatCidr(e.lease.ipv6Subnet!)} ${formatIp(e.lease.attrs.publicIP!)} ${formatIp(e.lease.attrs.publicIPv6!)} ${JSON.stringify(e.lease.attrs.backendV6Data)}`));
    annotate(api, 'n2', { [`${P}backend-v6-data`]: '{"VNI":1,"VtepMAC":"aa:aa:aa:aa:06:22"}' });
    expect(await seen(1)).toEqual(['added 2001:db8:a:2::/64 192.0.2.2 2001:db8:2::2 {"VNI":1,"VtepMAC":"aa:aa:aa:aa:06:22"}']);
    annotate(api, 'n2', { 'example.com/unrelated': 'x' });
    annotate(api, 'n2', { [`${P}public-ipv6`]: '2001:db8:2::22' });
    expect(await seen(2)).toEqual(['added 2001:db8:a:2::/64 192.0.2.2 2001:db8:2::22 {"VNI":1,"VtepMAC":"aa:aa:aa:aa:06:22"}']);
    // Upstream drops an update whose IPv6 annotations are unchanged even when IPv4 ones changed; we do not.
    annotate(api, 'n2', { [`${P}public-ip`]: '192.0.2.22' });
    expect(await seen(3)).toEqual(['added 2001:db8:a:2::/64 192.0.2.22 2001:db8:2::22 {"VNI":1,"VtepMAC":"aa:aa:aa:aa:06:22"}']);
    expect(batches).toHaveLength(4);
  });

  it("keeps each family's published VTEP MAC even when the node no longer reads as a lease (IPv4-only to dual stack)", async () => {
    const { api, manager } = await setup('n1', dualNetConf);
    expect(await manager.findPreviousLease()).toBeUndefined();
    // Published by an IPv4-only run: no public-ipv6, no backend-v6-data, so not a dual-stack lease.
    api.addNode({ name: 'n1', podCIDRs: ['10.244.1.0/24', '2001:db8:a:1::/64'], annotations: peerAnnotations('192.0.2.1', 'aa:aa:aa:aa:aa:01') });
    expect((await manager.findPreviousLease())?.attrs).toEqual({ backendType: 'vxlan', backendData: { VNI: 1, VtepMAC: 'aa:aa:aa:aa:aa:01' } });
    annotate(api, 'n1', { [`${P}backend-v6-data`]: '{"VNI":1,"VtepMAC":"aa:aa:aa:aa:06:01"}', [`${P}backend-data`]: 'not json' });
    expect((await manager.findPreviousLease())?.attrs).toEqual({ backendType: 'vxlan', backendV6Data: { VNI: 1, VtepMAC: 'aa:aa:aa:aa:06:01' } });
  });
});
