/**
 * The kube Node API adapter through the real @kubernetes/client-node against the in-process fake server: the Node
 * LIST in pages from one snapshot (restarted when a continue token expires), and every request cancelled (its
 * connection closed) when it has not answered by the deadline on the manual clock, before any retry is sent.
 */
import { KubeConfig } from '@kubernetes/client-node';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { seededRandom } from '../../../../flanneld/runtime/random.js';
import { KubeNodeApi } from '../../../../flanneld/subnet/kube/kube-node-api.js';
import { watchNodes, type NodeBatch } from '../../../../flanneld/subnet/kube/node-watch.js';
import { startFakeKubeApi, type FakeKubeApi, type FakeKubeApiOptions } from '../../../helpers/fake-kube-api.js';
import { ManualClock } from '../../../helpers/manual-clock.js';
import { memoryLog } from '../../../helpers/test-log.js';

let api: FakeKubeApi | undefined;
const stops: AbortController[] = [];
afterEach(async () => {
  for (const s of stops.splice(0)) s.abort();
  await api?.close();
  api = undefined;
});

async function setup(opts: FakeKubeApiOptions = {}, pageSize = 500) {
  api = await startFakeKubeApi(opts);
  const kc = new KubeConfig();
  kc.loadFromClusterAndUser({ name: 'fake', server: api.url, skipTLSVerify: true }, { name: 'u' });
  const clock = new ManualClock();
  const stop = new AbortController();
  stops.push(stop);
  return { api, clock, nodes: new KubeNodeApi(kc, { clock, pageSize }), signal: stop.signal };
}

const addNodes = (fake: FakeKubeApi, count: number, from = 0): void => {
  for (let i = from; i < from + count; i++) fake.addNode({ name: `n${String(i).padStart(5, '0')}`, podCIDR: `10.244.${i >> 8}.${i & 255}/32` });
};
const lists = (fake: FakeKubeApi) => fake.requests.filter((r) => r.verb === 'list');

describe('KubeNodeApi: the Node LIST in pages', () => {
  it('reads 1200 nodes in 3 pages of 500 from the first page’s snapshot, changes after it left to the watch', async () => {
    let seen = 0;
    const s = await setup({
      onList: () => {
        if (++seen === 2) addNodes(api!, 1, 5000);
      },
    });
    addNodes(s.api, 1200);
    const before = s.api.resourceVersion();
    const { nodes, resourceVersion } = await s.nodes.listNodes();
    expect(nodes).toHaveLength(1200);
    expect(nodes.some((n) => n.name === 'n05000')).toBe(false);
    expect(resourceVersion).toBe(before);
    expect(lists(s.api).map((r) => [r.query['limit'], r.query['continue'] !== undefined])).toEqual([['500', false], ['500', true], ['500', true]]);
  });

  it('starts the list again when its continue token expires (410) mid-way', async () => {
    let compacted = false;
    const s = await setup({
      onList: (q) => {
        if (q.has('continue') && !compacted) {
          compacted = true;
          addNodes(api!, 1, 5000);
          api!.compact();
        }
      },
    });
    addNodes(s.api, 600);
    const { nodes } = await s.nodes.listNodes();
    expect(nodes).toHaveLength(601);
    expect(lists(s.api).map((r) => [r.query['continue'] !== undefined, r.status])).toEqual([[false, 200], [true, 410], [false, 200], [true, 200]]);
  });

  it('falls back to one unpaged list when continue tokens keep expiring', async () => {
    const s = await setup({
      onList: (q) => {
        if (q.has('continue')) {
          addNodes(api!, 1, 5000 + lists(api!).length);
          api!.compact();
        }
      },
    });
    addNodes(s.api, 600);
    const { nodes } = await s.nodes.listNodes();
    expect(nodes).toHaveLength(602);
    const sent = lists(s.api);
    expect(sent.map((r) => r.status)).toEqual([200, 410, 200, 410, 200]);
    expect(sent.at(-1)?.query['limit']).toBeUndefined();
  });
});

describe('KubeNodeApi: a request that does not answer is cancelled', () => {
  it.each([
    ['list', 'list nodes', (n: KubeNodeApi) => n.listNodes()],
    ['get', 'get node n1', (n: KubeNodeApi) => n.getNode('n1')],
    ['patch', 'patch node n1 status', (n: KubeNodeApi) => n.patchNodeStatus('n1', { metadata: { annotations: { a: 'b' } } })],
  ] as const)('%s: after 30 s on the clock, its connection closed', async (verb, what, call) => {
    const s = await setup();
    s.api.addNode({ name: 'n1', podCIDR: '10.244.1.0/24' });
    s.api.stall(verb);
    const pending = call(s.nodes);
    pending.catch(() => undefined);
    await vi.waitFor(() => expect(s.api.requests.filter((r) => r.verb === verb)).toHaveLength(1));
    s.clock.advance(29_999);
    await new Promise((r) => setTimeout(r, 50));
    expect(s.api.requests[0]!.cancelledByClient).toBeUndefined();
    s.clock.advance(1);
    await expect(pending).rejects.toThrow(`${what}: no answer from the Kubernetes API after 30 s; request cancelled`);
    await vi.waitFor(() => expect(s.api.requests[0]!.cancelledByClient).toBe(true));
  });

  it('the caller’s signal cancels a list in flight too', async () => {
    const s = await setup();
    s.api.stall('list');
    const stop = new AbortController();
    const pending = s.nodes.listNodes(stop.signal);
    pending.catch(() => undefined);
    await vi.waitFor(() => expect(lists(s.api)).toHaveLength(1));
    stop.abort();
    await expect(pending).rejects.toThrow();
    await vi.waitFor(() => expect(lists(s.api)[0]!.cancelledByClient).toBe(true));
  });

  it('the node watch retries a timed-out list only after the first one is cancelled, then gets its snapshot', async () => {
    const s = await setup();
    addNodes(s.api, 3);
    s.api.stall('list');
    const { log } = memoryLog();
    const batches: NodeBatch[] = [];
    void (async () => {
      for await (const b of watchNodes({ api: s.nodes, clock: s.clock, random: seededRandom(1), log }, s.signal)) batches.push(b);
    })().catch(() => undefined);
    await vi.waitFor(() => expect(lists(s.api)).toHaveLength(1));
    s.clock.advance(30_000);
    // The retry waits on the clock (backoff): by then the first request must be gone, not running beside it.
    await vi.waitFor(() => expect(s.clock.pending).toBe(1));
    await vi.waitFor(() => expect(lists(s.api)[0]!.cancelledByClient).toBe(true));
    expect(lists(s.api)).toHaveLength(1);
    s.clock.advance(5_000);
    await vi.waitFor(() => expect(batches[0]).toMatchObject({ kind: 'snapshot' }));
    expect(batches[0]!.kind === 'snapshot' && batches[0]!.nodes).toHaveLength(3);
    expect(lists(s.api)).toHaveLength(2);
  });
});
