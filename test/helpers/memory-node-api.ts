/**
 * An in-memory NodeApi: Nodes held as KubeNode values with an apiserver's resourceVersion rules (one counter, a
 * watch replays what happened after the version it starts from, a compaction makes older versions 410 Gone), a
 * watch stream the test ends or drops, and scripted failures per call. It lets the kube subnet manager's policy be
 * unit-tested on a manual clock without HTTP or @kubernetes/client-node.
 */
import { AsyncQueue } from '../../flanneld/runtime/async-queue.js';
import { WatchGoneError, type KubeNode, type NodeApi, type NodeWatchEvent } from '../../flanneld/subnet/kube/node-api.js';

export type NodeApiMethod = keyof NodeApi;

export interface NodeShape {
  readonly podCIDRs?: readonly string[];
  readonly annotations?: Readonly<Record<string, string>>;
}

/** A NetworkUnavailable-style condition as the status patch sends it. */
export type NodeCondition = Readonly<Record<string, unknown>> & { readonly type: string };

export class MemoryNodeApi implements NodeApi {
  private version = 1;
  private readonly nodes = new Map<string, KubeNode>();
  private readonly history: { readonly version: number; readonly event: NodeWatchEvent }[] = [];
  /** A watch from a version below this one gets 410 Gone, as after an etcd compaction. */
  private oldestVersion = 0;
  private readonly watches = new Set<AsyncQueue<NodeWatchEvent>>();
  private readonly failures = new Map<NodeApiMethod, unknown[]>();
  private readonly pods = new Map<string, string>();
  private watchesToEndAtOnce = 0;
  /** Every call in order, with its first argument (node name, resourceVersion, pod namespace/name). */
  readonly calls: { readonly method: NodeApiMethod; readonly arg?: string }[] = [];
  readonly patches: { readonly name: string; readonly patch: object }[] = [];
  /** Status conditions by node, merged by type as the strategic merge patch does. */
  readonly conditions = new Map<string, NodeCondition[]>();

  node(name: string): KubeNode | undefined {
    return this.nodes.get(name);
  }

  /** Creates or replaces a Node's podCIDRs and annotations (unset parts are kept), as node IPAM or kubectl would. */
  setNode(name: string, shape: NodeShape = {}): KubeNode {
    const old = this.nodes.get(name);
    return this.store({
      name,
      resourceVersion: '',
      podCIDRs: shape.podCIDRs ?? old?.podCIDRs ?? [],
      annotations: shape.annotations ?? old?.annotations ?? {},
    }, old ? 'modified' : 'added');
  }

  /** Merges annotation changes into a Node; null removes one. */
  annotate(name: string, changes: Readonly<Record<string, string | null>>): KubeNode {
    const old = this.nodes.get(name);
    if (!old) throw new Error(`no node ${name}`);
    return this.store({ ...old, annotations: mergeAnnotations(old.annotations, changes) }, 'modified');
  }

  deleteNode(name: string): void {
    const old = this.nodes.get(name);
    if (!old) return;
    this.nodes.delete(name);
    this.emit({ type: 'deleted', node: { ...old, resourceVersion: String(++this.version) } });
  }

  addPod(namespace: string, name: string, nodeName: string): void {
    this.pods.set(`${namespace}/${name}`, nodeName);
  }

  /** The next `times` calls of `method` reject with `error` (a watch fails when it is iterated). */
  failNext(method: NodeApiMethod, error: unknown, times = 1): void {
    const queued = this.failures.get(method) ?? [];
    for (let i = 0; i < times; i++) queued.push(error);
    this.failures.set(method, queued);
  }

  /** The next `times` watches end as soon as they are opened, with no event: a server or proxy that closes them. */
  endNextWatchesAtOnce(times: number): void {
    this.watchesToEndAtOnce += times;
  }

  count(method: NodeApiMethod): number {
    return this.calls.filter((c) => c.method === method).length;
  }

  get openWatches(): number {
    return this.watches.size;
  }

  /** The server closes every open watch cleanly (its timeout). */
  endWatches(): void {
    for (const queue of this.closeAll()) queue.end();
  }

  /** Every open watch breaks with `error`: a dropped connection, or WatchGoneError. */
  dropWatches(error: unknown = new Error('watch nodes: socket hang up')): void {
    for (const queue of this.closeAll()) queue.fail(error);
  }

  /**
   * Other objects changed (the version moves on, no Node event), and every open watch gets a bookmark at the new
   * version, as the apiserver sends one so that a watcher can resume past changes it was never shown.
   */
  bookmark(): void {
    const resourceVersion = String(++this.version);
    for (const queue of this.watches) queue.push({ type: 'bookmark', resourceVersion });
  }

  /** Forgets the history: a watch from any earlier version gets 410 Gone. */
  compact(): void {
    this.history.length = 0;
    this.oldestVersion = this.version;
  }

  async getNode(name: string): Promise<KubeNode | undefined> {
    this.call('getNode', name);
    return this.nodes.get(name);
  }

  async listNodes(): Promise<{ readonly nodes: readonly KubeNode[]; readonly resourceVersion: string }> {
    this.call('listNodes');
    const nodes = [...this.nodes.values()].sort((a, b) => a.name.localeCompare(b.name));
    return { nodes, resourceVersion: String(this.version) };
  }

  watchNodes(resourceVersion: string, signal: AbortSignal): AsyncIterable<NodeWatchEvent> {
    const queue = new AsyncQueue<NodeWatchEvent>();
    const failure = this.failure('watchNodes', resourceVersion);
    if (failure) {
      queue.fail(failure.error);
      return queue;
    }
    const from = Number(resourceVersion);
    if (from < this.oldestVersion) {
      queue.fail(new WatchGoneError(`too old resource version: ${from} (${this.oldestVersion})`));
      return queue;
    }
    for (const past of this.history) if (past.version > from) queue.push(past.event);
    if (this.watchesToEndAtOnce > 0) {
      this.watchesToEndAtOnce--;
      queue.end();
      return queue;
    }
    this.watches.add(queue);
    signal.addEventListener('abort', () => {
      this.watches.delete(queue);
      queue.end();
    }, { once: true });
    return queue;
  }

  async patchNodeStatus(name: string, patch: object): Promise<KubeNode> {
    this.call('patchNodeStatus', name);
    this.patches.push({ name, patch: structuredClone(patch) });
    const old = this.nodes.get(name);
    if (!old) throw new Error(`patch node ${name} status: HTTP 404: nodes "${name}" not found`);
    const { metadata, status } = patch as { metadata?: { annotations?: Record<string, string | null> }; status?: { conditions?: NodeCondition[] } };
    for (const condition of status?.conditions ?? []) this.setCondition(name, condition);
    return this.store({ ...old, annotations: mergeAnnotations(old.annotations, metadata?.annotations ?? {}) }, 'modified');
  }

  async getPodNodeName(namespace: string, name: string): Promise<string | undefined> {
    this.call('getPodNodeName', `${namespace}/${name}`);
    const nodeName = this.pods.get(`${namespace}/${name}`);
    if (nodeName === undefined) throw new Error(`get pod ${namespace}/${name}: HTTP 404: pods "${name}" not found`);
    return nodeName;
  }

  /** Records a call and throws its scripted failure, if any. */
  private call(method: NodeApiMethod, arg?: string): void {
    const failure = this.failure(method, arg);
    if (failure) throw failure.error;
  }

  private failure(method: NodeApiMethod, arg?: string): { readonly error: unknown } | undefined {
    this.calls.push({ method, ...(arg === undefined ? {} : { arg }) });
    const queued = this.failures.get(method);
    return queued?.length ? { error: queued.shift() } : undefined;
  }

  private store(node: KubeNode, type: 'added' | 'modified'): KubeNode {
    const stored = { ...node, resourceVersion: String(++this.version) };
    this.nodes.set(node.name, stored);
    this.emit({ type, node: stored });
    return stored;
  }

  private emit(event: NodeWatchEvent): void {
    this.history.push({ version: this.version, event });
    for (const queue of this.watches) queue.push(event);
  }

  private setCondition(name: string, condition: NodeCondition): void {
    const kept = (this.conditions.get(name) ?? []).filter((c) => c.type !== condition.type);
    this.conditions.set(name, [...kept, condition]);
  }

  private closeAll(): AsyncQueue<NodeWatchEvent>[] {
    const open = [...this.watches];
    this.watches.clear();
    return open;
  }
}

function mergeAnnotations(current: Readonly<Record<string, string>>, changes: Readonly<Record<string, string | null>>): Record<string, string> {
  const out: Record<string, string> = { ...current };
  for (const [key, value] of Object.entries(changes)) {
    if (value === null) delete out[key];
    else out[key] = value;
  }
  return out;
}
