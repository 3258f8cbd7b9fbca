/**
 * The fake kube-apiserver driven through the real @kubernetes/client-node 1.4 (CoreV1Api and Watch), so the kube
 * subnet manager's tests exercise the same client code paths, quirks included, that a real cluster would.
 */
import { afterEach, describe, expect, it } from 'vitest';
import {
  ApiException,
  CoreV1Api,
  KubeConfig,
  PatchStrategy,
  Watch,
  setHeaderOptions,
  type V1Node,
  type V1NodeCondition,
} from '@kubernetes/client-node';
import { startFakeKubeApi, type FakeKubeApi, type FakeKubeApiOptions } from '../../helpers/fake-kube-api.js';
import { waitFor } from '../../helpers/processes.js';

interface WatchEvent {
  readonly type: string;
  /** Wire JSON: client-node's Watch hands over the parsed line without converting timestamps to Dates. */
  readonly object: { kind?: string; code?: number; reason?: string; metadata?: { name?: string; resourceVersion?: string; annotations?: Record<string, string> } };
}

interface WatchRun {
  readonly events: WatchEvent[];
  /** Settles with what client-node passed to the done callback (null for a clean end). */
  readonly done: Promise<unknown>;
  isDone(): boolean;
  abort(): void;
}

const servers: FakeKubeApi[] = [];
const controllers: AbortController[] = [];

afterEach(async () => {
  for (const c of controllers.splice(0)) c.abort();
  for (const s of servers.splice(0)) await s.close();
});

async function start(opts: FakeKubeApiOptions = {}): Promise<FakeKubeApi> {
  const api = await startFakeKubeApi(opts);
  servers.push(api);
  return api;
}

function kubeConfig(api: FakeKubeApi, token?: string): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromClusterAndUser({ name: 'fake', server: api.url, skipTLSVerify: true }, token === undefined ? { name: 'u' } : { name: 'u', token });
  return kc;
}

const core = (api: FakeKubeApi, token?: string): CoreV1Api => kubeConfig(api, token).makeApiClient(CoreV1Api);
const strategic = setHeaderOptions('Content-Type', PatchStrategy.StrategicMergePatch);

async function watchNodes(kc: KubeConfig, query: Record<string, string | number | boolean> = {}): Promise<WatchRun> {
  const events: WatchEvent[] = [];
  let finished = false;
  let settle: (err: unknown) => void = () => undefined;
  const done = new Promise<unknown>((resolve) => (settle = resolve));
  const controller = await new Watch(kc).watch(
    '/api/v1/nodes',
    query,
    (type: string, object: WatchEvent['object']) => events.push({ type, object }),
    (err: unknown) => {
      finished = true;
      settle(err);
    },
  );
  controllers.push(controller);
  return { events, done, isDone: () => finished, abort: () => controller.abort() };
}

async function eventsOf(run: WatchRun, count: number): Promise<WatchEvent[]> {
  await waitFor(`${count} watch event(s)`, () => (run.events.length >= count ? true : undefined), 5000, 10);
  return run.events.slice(0, count);
}

const summary = (events: readonly WatchEvent[]): string[] => events.map((e) => `${e.type} ${e.object.metadata?.name ?? ''}`.trim());
const conditionTypes = (node: V1Node): string[] => (node.status?.conditions ?? []).map((c: V1NodeCondition) => c.type);
const condition = (node: V1Node, type: string): V1NodeCondition | undefined => node.status?.conditions?.find((c) => c.type === type);

async function rejection(promise: Promise<unknown>): Promise<ApiException<unknown>> {
  try {
    await promise;
  } catch (err) {
    if (err instanceof ApiException) return err as ApiException<unknown>;
    throw err;
  }
  throw new Error('expected the request to fail');
}

describe('fake kube API: list and get', () => {
  it('lists added nodes with realistic fields and the current resourceVersion', async () => {
    const api = await start();
    api.addNode({ name: 'n2', podCIDRs: ['10.244.2.0/24', 'fd00:10:244:2::/64'], internalIP: '192.0.2.2' });
    api.addNode({ name: 'n1', podCIDR: '10.244.1.0/24', annotations: { 'flannel.alpha.coreos.com/backend-type': 'vxlan' } });

    const list = await core(api).listNode();
    expect(list.metadata?.resourceVersion).toBe(api.resourceVersion());
    expect(list.items.map((n) => n.metadata?.name)).toEqual(['n1', 'n2']);
    const [n1, n2] = list.items as [V1Node, V1Node];
    expect(n1.spec).toEqual({ podCIDR: '10.244.1.0/24', podCIDRs: ['10.244.1.0/24'] });
    expect(n2.spec).toEqual({ podCIDR: '10.244.2.0/24', podCIDRs: ['10.244.2.0/24', 'fd00:10:244:2::/64'] });
    expect(n1.metadata?.labels).toMatchObject({ 'kubernetes.io/hostname': 'n1', 'kubernetes.io/os': 'linux' });
    expect(n1.metadata?.annotations?.['flannel.alpha.coreos.com/backend-type']).toBe('vxlan');
    expect(n1.metadata?.creationTimestamp).toBeInstanceOf(Date);
    expect(condition(n1, 'Ready')?.status).toBe('True');
    expect(n2.status?.addresses).toEqual([
      { type: 'InternalIP', address: '192.0.2.2' },
      { type: 'Hostname', address: 'n2' },
    ]);
    // As from the real server: list items carry no kind/apiVersion; the node's own resourceVersion is its last change.
    expect(n1.kind).toBeUndefined();
    expect(Number(n1.metadata?.resourceVersion)).toBeGreaterThan(Number(n2.metadata?.resourceVersion));
  });

  it('gets one node, and answers 404 with a NotFound Status for a missing one', async () => {
    const api = await start();
    api.addNode({ name: 'n1', podCIDR: '10.244.1.0/24' });
    const node = await core(api).readNode({ name: 'n1' });
    expect(node.kind).toBe('Node');
    expect(node.apiVersion).toBe('v1');
    expect(node).toEqual(api.node('n1'));

    const err = await rejection(core(api).readNode({ name: 'nope' }));
    expect(err.code).toBe(404);
    // client-node leaves the Status body as the raw response text.
    expect(JSON.parse(String(err.body))).toMatchObject({ kind: 'Status', reason: 'NotFound', code: 404, message: 'nodes "nope" not found' });
  });

  it('serves a list at an Exact older resourceVersion from history, and 410 once it is compacted', async () => {
    const api = await start();
    api.addNode({ name: 'n1' });
    const before = api.resourceVersion();
    api.addNode({ name: 'n2' });
    api.updateNode('n1', (n) => (n.metadata!.labels = { ...n.metadata!.labels, moved: 'yes' }));

    const old = await core(api).listNode({ resourceVersion: before, resourceVersionMatch: 'Exact' });
    expect(old.metadata?.resourceVersion).toBe(before);
    expect(old.items.map((n) => n.metadata?.name)).toEqual(['n1']);
    expect(old.items[0]!.metadata?.labels?.moved).toBeUndefined();

    api.compact();
    const gone = await rejection(core(api).listNode({ resourceVersion: before, resourceVersionMatch: 'Exact' }));
    expect(gone.code).toBe(410);
    // "Not older than" and the legacy form are satisfied by the current state, compacted or not.
    for (const resourceVersionMatch of ['NotOlderThan', undefined]) {
      const list = await core(api).listNode(resourceVersionMatch === undefined ? { resourceVersion: before } : { resourceVersion: before, resourceVersionMatch });
      expect(list.metadata?.resourceVersion).toBe(api.resourceVersion());
      expect(list.items).toHaveLength(2);
    }
  });

  it('reads a pod, and 404s a missing one', async () => {
    const api = await start();
    api.addPod('kube-flannel', 'kube-flannel-ds-abcde', 'n1');
    const pod = await core(api).readNamespacedPod({ namespace: 'kube-flannel', name: 'kube-flannel-ds-abcde' });
    expect(pod.spec?.nodeName).toBe('n1');
    expect(pod.metadata?.namespace).toBe('kube-flannel');
    const err = await rejection(core(api).readNamespacedPod({ namespace: 'default', name: 'kube-flannel-ds-abcde' }));
    expect(err.code).toBe(404);
  });
});

describe('fake kube API: watch', () => {
  it('streams ADDED, MODIFIED and DELETED in order from the list resourceVersion', async () => {
    const api = await start();
    api.addNode({ name: 'n1' });
    const kc = kubeConfig(api);
    const list = await kc.makeApiClient(CoreV1Api).listNode();
    const run = await watchNodes(kc, { resourceVersion: list.metadata!.resourceVersion! });

    api.addNode({ name: 'n2', podCIDR: '10.244.2.0/24' });
    api.updateNode('n2', (n) => (n.metadata!.annotations = { ...n.metadata!.annotations, 'flannel.alpha.coreos.com/public-ip': '192.0.2.2' }));
    api.deleteNode('n1');

    const events = await eventsOf(run, 3);
    expect(summary(events)).toEqual(['ADDED n2', 'MODIFIED n2', 'DELETED n1']);
    const rvs = events.map((e) => Number(e.object.metadata?.resourceVersion));
    expect(rvs).toEqual([...rvs].sort((a, b) => a - b));
    expect(String(rvs[2])).toBe(api.resourceVersion());
    expect(events[1]!.object.metadata?.annotations?.['flannel.alpha.coreos.com/public-ip']).toBe('192.0.2.2');
    expect(events[0]!.object.kind).toBe('Node');
    expect(api.openWatches()).toBe(1);
    expect(run.isDone()).toBe(false);
  });

  it('replays history after an older resourceVersion, and starts with synthetic ADDED events without one', async () => {
    const api = await start();
    const origin = api.resourceVersion();
    api.addNode({ name: 'a' });
    api.addNode({ name: 'b' });
    api.updateNode('a', (n) => (n.spec = { ...n.spec, unschedulable: true }));
    const kc = kubeConfig(api);

    const replay = await watchNodes(kc, { resourceVersion: origin });
    expect(summary(await eventsOf(replay, 3))).toEqual(['ADDED a', 'ADDED b', 'MODIFIED a']);

    const fresh = await watchNodes(kc);
    expect(summary(await eventsOf(fresh, 2))).toEqual(['ADDED a', 'ADDED b']);
    api.deleteNode('b');
    expect(summary(await eventsOf(fresh, 3))).toEqual(['ADDED a', 'ADDED b', 'DELETED b']);
  });

  it('sends bookmarks only when asked, carrying the current resourceVersion', async () => {
    const api = await start({ bookmarkIntervalMs: 30 });
    api.addNode({ name: 'n1' });
    const kc = kubeConfig(api);
    const rv = api.resourceVersion();
    const withBookmarks = await watchNodes(kc, { resourceVersion: rv, allowWatchBookmarks: true });
    const without = await watchNodes(kc, { resourceVersion: rv });

    const [bookmark] = await eventsOf(withBookmarks, 1);
    expect(bookmark).toEqual({ type: 'BOOKMARK', object: { kind: 'Node', apiVersion: 'v1', metadata: { resourceVersion: rv } } });
    api.addNode({ name: 'n2' });
    await waitFor('a bookmark after the change', () =>
      withBookmarks.events.some((e) => e.type === 'BOOKMARK' && e.object.metadata?.resourceVersion === api.resourceVersion()) ? true : undefined,
    );
    expect(summary(without.events)).toEqual(['ADDED n2']);
  });

  it('reports a compacted resourceVersion as an ERROR event with a 410 Status, then ends cleanly', async () => {
    const api = await start();
    api.addNode({ name: 'n1' });
    const old = api.resourceVersion();
    api.updateNode('n1', (n) => (n.metadata!.labels = { ...n.metadata!.labels, x: 'y' }));
    api.compact();

    const run = await watchNodes(kubeConfig(api), { resourceVersion: old });
    // client-node's done callback gets null here: the 410 is only visible in the ERROR event.
    expect(await run.done).toBeNull();
    expect(run.events).toEqual([
      {
        type: 'ERROR',
        object: {
          kind: 'Status',
          apiVersion: 'v1',
          metadata: {},
          status: 'Failure',
          message: `too old resource version: ${old} (${api.resourceVersion()})`,
          reason: 'Expired',
          code: 410,
        },
      },
    ]);
    // The compaction point itself is still watchable.
    const current = await watchNodes(kubeConfig(api), { resourceVersion: api.resourceVersion() });
    api.addNode({ name: 'n2' });
    expect(summary(await eventsOf(current, 1))).toEqual(['ADDED n2']);
  });

  it('dropWatches cuts the stream: client-node calls done with a premature-close error', async () => {
    const api = await start();
    const run = await watchNodes(kubeConfig(api), { resourceVersion: api.resourceVersion() });
    await waitFor('the watch to register', () => (api.openWatches() === 1 ? true : undefined));
    api.dropWatches();
    const err = (await run.done) as NodeJS.ErrnoException;
    expect(err).toBeInstanceOf(Error);
    expect(err.code).toBe('ERR_STREAM_PREMATURE_CLOSE');
    expect(api.openWatches()).toBe(0);
  });

  it('ends a watch cleanly after timeoutSeconds, or after the server-side watchTimeoutSeconds', async () => {
    const api = await start({ watchTimeoutSeconds: 1 });
    const kc = kubeConfig(api);
    const started = Date.now();
    const [byServer, byQuery] = await Promise.all([watchNodes(kc, { resourceVersion: api.resourceVersion() }), watchNodes(kc, { timeoutSeconds: 1 })]);
    expect(await byServer.done).toBeNull();
    expect(await byQuery.done).toBeNull();
    expect(Date.now() - started).toBeGreaterThanOrEqual(900);
    expect(api.openWatches()).toBe(0);
  });

  it('translates changes through a fieldSelector: a node leaving the selection is DELETED for the watcher', async () => {
    const api = await start();
    api.addNode({ name: 'n1', labels: { pool: 'a' } });
    const run = await watchNodes(kubeConfig(api), { resourceVersion: api.resourceVersion(), labelSelector: 'pool=a' });
    api.addNode({ name: 'n2', labels: { pool: 'b' } });
    api.updateNode('n2', (n) => (n.metadata!.labels = { ...n.metadata!.labels, pool: 'a' }));
    api.updateNode('n1', (n) => (n.metadata!.labels = { ...n.metadata!.labels, pool: 'b' }));
    expect(summary(await eventsOf(run, 2))).toEqual(['ADDED n2', 'DELETED n1']);

    const byName = await core(api).listNode({ fieldSelector: 'metadata.name=n2' });
    expect(byName.items.map((n) => n.metadata?.name)).toEqual(['n2']);
  });
});

describe('fake kube API: availability', () => {
  it('refuses connections while unavailable and serves the same state, on the same address, afterwards', async () => {
    const api = await start();
    api.addNode({ name: 'n1' });
    const kc = kubeConfig(api);
    const url = api.url;
    const rv = api.resourceVersion();
    const run = await watchNodes(kc, { resourceVersion: rv });
    await waitFor('the watch to register', () => (api.openWatches() === 1 ? true : undefined));

    await api.setAvailable(false);
    expect(((await run.done) as Error).message).toMatch(/Premature close/);
    await expect(kc.makeApiClient(CoreV1Api).listNode()).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    const refused = await watchNodes(kc, { resourceVersion: rv });
    expect(await refused.done).toMatchObject({ name: 'FetchError', code: 'ECONNREFUSED' });
    api.addNode({ name: 'n2' });

    await api.setAvailable(true);
    expect(api.url).toBe(url);
    const list = await kc.makeApiClient(CoreV1Api).listNode();
    expect(list.items.map((n) => n.metadata?.name)).toEqual(['n1', 'n2']);
    const resumed = await watchNodes(kc, { resourceVersion: rv });
    expect(summary(await eventsOf(resumed, 1))).toEqual(['ADDED n2']);
  });
});

describe('fake kube API: patch', () => {
  it('applies a strategic merge patch to nodes/status: annotations merge, conditions merge by type', async () => {
    const api = await start();
    api.addNode({ name: 'n1', podCIDR: '10.244.1.0/24' });
    const kc = kubeConfig(api);
    const run = await watchNodes(kc, { resourceVersion: api.resourceVersion() });
    const rvBefore = api.resourceVersion();
    const body = {
      metadata: { annotations: { 'flannel.alpha.coreos.com/backend-type': 'vxlan', 'flannel.alpha.coreos.com/public-ip': '192.0.2.1' } },
      status: { conditions: [{ type: 'NetworkUnavailable', status: 'False', reason: 'FlannelIsUp', message: 'Flannel is running on this node' }] },
    };

    const patched = await kc.makeApiClient(CoreV1Api).patchNodeStatus({ name: 'n1', body }, strategic);
    expect(patched.metadata?.annotations).toMatchObject(body.metadata.annotations);
    expect(patched.metadata?.annotations?.['node.alpha.kubernetes.io/ttl']).toBe('0');
    expect(conditionTypes(patched)).toEqual(['MemoryPressure', 'DiskPressure', 'PIDPressure', 'Ready', 'NetworkUnavailable']);
    expect(condition(patched, 'Ready')?.status).toBe('True');
    expect(Number(patched.metadata?.resourceVersion)).toBe(Number(rvBefore) + 1);
    expect(summary(await eventsOf(run, 1))).toEqual(['MODIFIED n1']);

    // Merging by key replaces the matching element's fields and leaves the others alone.
    const flipped = await kc.makeApiClient(CoreV1Api).patchNodeStatus(
      { name: 'n1', body: { status: { conditions: [{ type: 'NetworkUnavailable', status: 'True', reason: 'NoRouteCreated' }] } } },
      strategic,
    );
    expect(condition(flipped, 'NetworkUnavailable')).toMatchObject({ status: 'True', reason: 'NoRouteCreated', message: 'Flannel is running on this node' });
    expect(conditionTypes(flipped)).toHaveLength(5);

    // Re-sending the same patch changes nothing: no new resourceVersion, no event.
    const rvAfter = api.resourceVersion();
    const again = await kc.makeApiClient(CoreV1Api).patchNodeStatus(
      { name: 'n1', body: { status: { conditions: [{ type: 'NetworkUnavailable', status: 'True', reason: 'NoRouteCreated' }] } } },
      strategic,
    );
    expect(again.metadata?.resourceVersion).toBe(rvAfter);
    expect(api.resourceVersion()).toBe(rvAfter);

    // $patch: delete removes the keyed element; null removes an annotation.
    const removed = await kc.makeApiClient(CoreV1Api).patchNodeStatus(
      {
        name: 'n1',
        body: {
          metadata: { annotations: { 'flannel.alpha.coreos.com/public-ip': null } },
          status: { conditions: [{ type: 'NetworkUnavailable', $patch: 'delete' }] },
        },
      },
      strategic,
    );
    expect(conditionTypes(removed)).toEqual(['MemoryPressure', 'DiskPressure', 'PIDPressure', 'Ready']);
    expect(removed.metadata?.annotations?.['flannel.alpha.coreos.com/public-ip']).toBeUndefined();
    expect(removed.metadata?.annotations?.['flannel.alpha.coreos.com/backend-type']).toBe('vxlan');
    // One event per real change, none for the no-op.
    const events = await eventsOf(run, 3);
    expect(summary(events)).toEqual(['MODIFIED n1', 'MODIFIED n1', 'MODIFIED n1']);
    expect(events.map((e) => e.object.metadata?.resourceVersion)).toEqual(
      [patched, flipped, removed].map((n) => n.metadata?.resourceVersion),
    );
  });

  it('keeps spec on the status subresource and status on the main resource', async () => {
    const api = await start();
    api.addNode({ name: 'n1', podCIDR: '10.244.1.0/24' });
    const client = core(api);

    const viaStatus = await client.patchNodeStatus(
      { name: 'n1', body: { metadata: { labels: { seen: 'yes' } }, spec: { podCIDR: '10.99.0.0/24', podCIDRs: ['10.99.0.0/24'] } } },
      strategic,
    );
    expect(viaStatus.spec).toEqual({ podCIDR: '10.244.1.0/24', podCIDRs: ['10.244.1.0/24'] });
    expect(viaStatus.metadata?.labels?.seen).toBe('yes');

    const viaMain = await client.patchNode(
      { name: 'n1', body: { spec: { unschedulable: true }, status: { conditions: [{ type: 'Ready', status: 'False' }] } } },
      strategic,
    );
    expect(viaMain.spec?.unschedulable).toBe(true);
    expect(condition(viaMain, 'Ready')?.status).toBe('True');
    expect(api.node('n1')).toEqual(viaMain);
  });

  it('answers 404 for a missing node, 415 for a patch type the product never sends, 409 for a stale resourceVersion', async () => {
    const api = await start();
    api.addNode({ name: 'n1' });
    const client = core(api);
    const missing = await rejection(client.patchNodeStatus({ name: 'nope', body: { metadata: { annotations: { a: 'b' } } } }, strategic));
    expect(missing.code).toBe(404);
    expect(JSON.parse(String(missing.body))).toMatchObject({ reason: 'NotFound', details: { name: 'nope', kind: 'nodes' } });

    for (const strategy of [PatchStrategy.ServerSideApply, PatchStrategy.MergePatch, PatchStrategy.JsonPatch]) {
      const refused = await rejection(
        client.patchNode({ name: 'n1', body: { metadata: { labels: { a: 'b' } } } }, setHeaderOptions('Content-Type', strategy)),
      );
      expect(refused.code, strategy).toBe(415);
    }

    const stale = await rejection(client.patchNode({ name: 'n1', body: { metadata: { resourceVersion: '1', labels: { a: 'b' } } } }, strategic));
    expect(stale.code).toBe(409);
    const current = api.node('n1')!.metadata!.resourceVersion!;
    const fresh = await client.patchNode({ name: 'n1', body: { metadata: { resourceVersion: current, labels: { a: 'b' } } } }, strategic);
    expect(fresh.metadata?.labels?.a).toBe('b');
  });
});

describe('fake kube API: auth and request log', () => {
  it('requires the bearer token when one is set', async () => {
    const api = await start({ token: 's3cret' });
    api.addNode({ name: 'n1' });
    expect((await rejection(core(api).listNode())).code).toBe(401);
    expect((await rejection(core(api, 'wrong').readNode({ name: 'n1' }))).code).toBe(401);
    const refused = await watchNodes(kubeConfig(api, 'wrong'));
    // client-node's Watch turns a non-200 answer into an Error with statusCode, passed to done.
    expect(await refused.done).toMatchObject({ statusCode: 401, message: 'Unauthorized' });
    expect((await core(api, 's3cret').listNode()).items).toHaveLength(1);
    expect(api.requests.map((r) => r.status)).toEqual([401, 401, 401, 200]);
  });

  it('records each request with its RBAC verb and resource', async () => {
    const api = await start();
    api.addNode({ name: 'n1' });
    api.addPod('kube-flannel', 'p', 'n1');
    const kc = kubeConfig(api);
    const client = kc.makeApiClient(CoreV1Api);
    const list = await client.listNode();
    const run = await watchNodes(kc, { resourceVersion: list.metadata!.resourceVersion!, allowWatchBookmarks: true });
    await client.readNode({ name: 'n1' });
    await client.patchNodeStatus({ name: 'n1', body: { metadata: { annotations: { a: 'b' } } } }, strategic);
    await client.patchNode({ name: 'n1', body: { metadata: { labels: { x: 'y' } } } }, strategic);
    await client.readNamespacedPod({ namespace: 'kube-flannel', name: 'p' });
    await rejection(client.listNamespace());
    run.abort();

    expect(api.requests.map((r) => ({ method: r.method, path: r.path, verb: r.verb, resource: r.resource, status: r.status }))).toEqual([
      { method: 'GET', path: '/api/v1/nodes', verb: 'list', resource: 'nodes', status: 200 },
      { method: 'GET', path: '/api/v1/nodes', verb: 'watch', resource: 'nodes', status: 200 },
      { method: 'GET', path: '/api/v1/nodes/n1', verb: 'get', resource: 'nodes', status: 200 },
      { method: 'PATCH', path: '/api/v1/nodes/n1/status', verb: 'patch', resource: 'nodes/status', status: 200 },
      { method: 'PATCH', path: '/api/v1/nodes/n1', verb: 'patch', resource: 'nodes', status: 200 },
      { method: 'GET', path: '/api/v1/namespaces/kube-flannel/pods/p', verb: 'get', resource: 'pods', status: 200 },
      { method: 'GET', path: '/api/v1/namespaces', verb: 'list', resource: 'namespaces', status: 404 },
    ]);
    expect(api.requests[1]!.query).toEqual({ watch: 'true', allowWatchBookmarks: 'true', resourceVersion: list.metadata!.resourceVersion! });
    expect(api.requests[3]!.contentType).toBe('application/strategic-merge-patch+json');
  });
});
