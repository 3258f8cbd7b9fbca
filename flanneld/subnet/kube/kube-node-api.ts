/**
 * NodeApi over @kubernetes/client-node: CoreV1Api for get/list/patch and its Watch for the node stream. The only
 * module that sees client types; every call it makes is one listed in KUBE_API_CALLS.
 */
import { CoreV1Api, PatchStrategy, Watch, setHeaderOptions, type KubeConfig, type V1Node } from '@kubernetes/client-node';
import { AsyncQueue } from '../../runtime/async-queue.js';
import { WatchGoneError, type KubeNode, type NodeApi, type NodeWatchEvent } from './node-api.js';

/** Server-side watch timeout: the stream is re-opened from the last version this often, as client-go does. */
const WATCH_TIMEOUT_SECONDS = 300;
/** A request that has not answered by then is treated as failed; the callers retry with backoff. */
const REQUEST_TIMEOUT_MS = 30_000;

export function toKubeNode(node: V1Node): KubeNode {
  const spec = node.spec ?? {};
  const podCIDRs = spec.podCIDRs && spec.podCIDRs.length > 0 ? spec.podCIDRs : spec.podCIDR ? [spec.podCIDR] : [];
  return {
    name: node.metadata?.name ?? '',
    resourceVersion: node.metadata?.resourceVersion ?? '',
    annotations: { ...(node.metadata?.annotations ?? {}) },
    podCIDRs: [...podCIDRs],
  };
}

function statusCode(err: unknown): number | undefined {
  const e = err as { code?: unknown; statusCode?: unknown } | undefined;
  const code = typeof e?.code === 'number' ? e.code : e?.statusCode;
  return typeof code === 'number' ? code : undefined;
}

function withTimeout<T>(what: string, promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer from the Kubernetes API after ${REQUEST_TIMEOUT_MS / 1000} s`)), REQUEST_TIMEOUT_MS);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Errors from client-node carry the whole response body; the operator needs the call, the code and the reason. */
function describe(what: string, err: unknown): Error {
  const code = statusCode(err);
  const body = (err as { body?: unknown } | undefined)?.body;
  let reason = err instanceof Error ? err.message.split('\n')[0] : String(err);
  if (typeof body === 'string') {
    try {
      reason = (JSON.parse(body) as { message?: string }).message ?? reason;
    } catch {
      // not a Status object: keep the first line of the message
    }
  }
  return new Error(`${what}: ${code ? `HTTP ${code}: ` : ''}${reason}`, { cause: err });
}

export class KubeNodeApi implements NodeApi {
  private readonly core: CoreV1Api;
  private readonly watcher: Watch;

  constructor(config: KubeConfig) {
    this.core = config.makeApiClient(CoreV1Api);
    this.watcher = new Watch(config);
  }

  async getNode(name: string): Promise<KubeNode | undefined> {
    try {
      return toKubeNode(await withTimeout(`get node ${name}`, this.core.readNode({ name })));
    } catch (err) {
      if (statusCode(err) === 404) return undefined;
      throw describe(`get node ${name}`, err);
    }
  }

  async listNodes(): Promise<{ nodes: KubeNode[]; resourceVersion: string }> {
    try {
      const list = await withTimeout('list nodes', this.core.listNode());
      return { nodes: list.items.map(toKubeNode), resourceVersion: list.metadata?.resourceVersion ?? '' };
    } catch (err) {
      throw describe('list nodes', err);
    }
  }

  async patchNodeStatus(name: string, patch: object): Promise<KubeNode> {
    try {
      const options = setHeaderOptions('Content-Type', PatchStrategy.StrategicMergePatch);
      return toKubeNode(await withTimeout(`patch node ${name} status`, this.core.patchNodeStatus({ name, body: patch }, options)));
    } catch (err) {
      throw describe(`patch node ${name} status`, err);
    }
  }

  async getPodNodeName(namespace: string, name: string): Promise<string | undefined> {
    try {
      const pod = await withTimeout(`get pod ${namespace}/${name}`, this.core.readNamespacedPod({ namespace, name }));
      return pod.spec?.nodeName || undefined;
    } catch (err) {
      throw describe(`get pod ${namespace}/${name}`, err);
    }
  }

  watchNodes(resourceVersion: string, signal: AbortSignal): AsyncIterable<NodeWatchEvent> {
    const queue = new AsyncQueue<NodeWatchEvent>();
    const query = { resourceVersion, allowWatchBookmarks: true, timeoutSeconds: WATCH_TIMEOUT_SECONDS };
    let started: Promise<AbortController> | undefined;
    // Whatever ends this watch (an ERROR event, our signal, the consumer leaving) closes the connection too.
    const close = (): void => {
      signal.removeEventListener('abort', close);
      queue.end();
      void started?.then((controller) => controller.abort(), () => undefined);
    };
    const onEvent = (type: string, object: unknown): void => {
      if (type === 'ERROR') {
        const status = object as { code?: number; message?: string } | undefined;
        const message = `node watch: ${status?.message ?? 'error event'}`;
        queue.fail(status?.code === 410 ? new WatchGoneError(message) : new Error(message));
        close();
        return;
      }
      if (type === 'BOOKMARK') {
        const version = (object as V1Node | undefined)?.metadata?.resourceVersion;
        if (version) queue.push({ type: 'bookmark', resourceVersion: version });
        return;
      }
      const kind = type === 'ADDED' ? 'added' : type === 'MODIFIED' ? 'modified' : type === 'DELETED' ? 'deleted' : undefined;
      if (kind) queue.push({ type: kind, node: toKubeNode(object as V1Node) });
    };
    const onDone = (err: unknown): void => {
      if (err && !signal.aborted) queue.fail(statusCode(err) === 410 ? new WatchGoneError('node watch: 410 Gone') : describe('watch nodes', err));
      else queue.end();
    };
    if (signal.aborted) {
      queue.end();
      return queue;
    }
    signal.addEventListener('abort', close, { once: true });
    started = this.watcher.watch('/api/v1/nodes', query, onEvent, onDone);
    started.catch(onDone);
    return {
      [Symbol.asyncIterator]: () => {
        const inner = queue[Symbol.asyncIterator]();
        return {
          next: () => inner.next(),
          return: () => {
            close();
            return Promise.resolve({ value: undefined, done: true });
          },
        };
      },
    };
  }
}
