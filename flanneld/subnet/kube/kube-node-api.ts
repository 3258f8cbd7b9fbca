/**
 * NodeApi over @kubernetes/client-node: CoreV1Api for get/list/patch and its Watch for the node stream. The only
 * module that sees client types; every call it makes is one listed in KUBE_API_CALLS. Every request carries an
 * AbortSignal that fires after REQUEST_TIMEOUT_MS, so a request that hangs is cancelled (its connection closed),
 * never left running beside the caller's retry. The Node LIST is read in pages, as client-go's pager does.
 */
import {
  CoreV1Api,
  Observable,
  PatchStrategy,
  Watch,
  setHeaderOptions,
  type ConfigurationOptions,
  type KubeConfig,
  type V1Node,
} from '@kubernetes/client-node';
import { AsyncQueue } from '../../runtime/async-queue.js';
import { systemClock, type Clock } from '../../runtime/clock.js';
import { LOGGED_REASON_CHARS, clip } from '../store-limits.js';
import { WatchGoneError, type KubeNode, type NodeApi, type NodeWatchEvent } from './node-api.js';

/** Server-side watch timeout: the stream is re-opened from the last version this often, as client-go does. */
const WATCH_TIMEOUT_SECONDS = 300;
/** A request that has not answered by then is cancelled and treated as failed; the callers retry with backoff. */
const REQUEST_TIMEOUT_MS = 30_000;
/** Nodes per LIST page: client-go's pager default, so 5,000 nodes are 10 modest responses instead of one huge one. */
export const NODE_PAGE_SIZE = 500;
/**
 * Paged lists restarted because a continue token expired (410: the server compacted past the list's snapshot)
 * before one list is read unpaged, as client-go's pager falls back to a full list.
 */
const MAX_EXPIRED_CONTINUES = 2;

export interface KubeNodeApiOptions {
  /** Times each request's deadline (tests use a manual clock). */
  readonly clock?: Clock;
  readonly requestTimeoutMs?: number;
  readonly pageSize?: number;
}

/** A continue token the server no longer honours: the paged list must start over. */
class ContinueExpiredError extends Error {
  override readonly name = 'ContinueExpiredError';
}

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
  return new Error(`${what}: ${code ? `HTTP ${code}: ` : ''}${clip(reason ?? '', LOGGED_REASON_CHARS)}`, { cause: err });
}

export class KubeNodeApi implements NodeApi {
  private readonly core: CoreV1Api;
  private readonly watcher: Watch;
  private readonly clock: Clock;
  private readonly timeoutMs: number;
  private readonly pageSize: number;

  constructor(config: KubeConfig, options: KubeNodeApiOptions = {}) {
    this.core = config.makeApiClient(CoreV1Api);
    this.watcher = new Watch(config);
    this.clock = options.clock ?? systemClock;
    this.timeoutMs = options.requestTimeoutMs ?? REQUEST_TIMEOUT_MS;
    this.pageSize = options.pageSize ?? NODE_PAGE_SIZE;
  }

  async getNode(name: string): Promise<KubeNode | undefined> {
    try {
      return toKubeNode(await this.request((options) => this.core.readNode({ name }, options)));
    } catch (err) {
      if (statusCode(err) === 404) return undefined;
      throw describe(`get node ${name}`, err);
    }
  }

  async listNodes(signal?: AbortSignal): Promise<{ nodes: KubeNode[]; resourceVersion: string }> {
    for (let expired = 0; ; expired++) {
      try {
        return await this.listPages(expired < MAX_EXPIRED_CONTINUES ? this.pageSize : undefined, signal);
      } catch (err) {
        if (!(err instanceof ContinueExpiredError)) throw describe('list nodes', err);
      }
    }
  }

  async patchNodeStatus(name: string, patch: object): Promise<KubeNode> {
    const what = `patch node ${name} status`;
    try {
      const patched = await this.request((options) =>
        this.core.patchNodeStatus({ name, body: patch }, setHeaderOptions('Content-Type', PatchStrategy.StrategicMergePatch, options)),
      );
      return toKubeNode(patched);
    } catch (err) {
      throw describe(what, err);
    }
  }

  async getPodNodeName(namespace: string, name: string): Promise<string | undefined> {
    try {
      const pod = await this.request((options) => this.core.readNamespacedPod({ namespace, name }, options));
      return pod.spec?.nodeName || undefined;
    } catch (err) {
      throw describe(`get pod ${namespace}/${name}`, err);
    }
  }

  /** One list of every Node, `limit` at a time (all pages from the first page's snapshot), or unpaged without one. */
  private async listPages(limit: number | undefined, signal?: AbortSignal): Promise<{ nodes: KubeNode[]; resourceVersion: string }> {
    const nodes: KubeNode[] = [];
    let resourceVersion = '';
    let token: string | undefined;
    do {
      const query = { ...(limit !== undefined ? { limit } : {}), ...(token !== undefined ? { _continue: token } : {}) };
      let page;
      try {
        page = await this.request((options) => this.core.listNode(query, options), signal);
      } catch (err) {
        if (token !== undefined && statusCode(err) === 410) throw new ContinueExpiredError('list nodes: continue token expired');
        throw err;
      }
      for (const item of page.items) nodes.push(toKubeNode(item));
      if (resourceVersion === '') resourceVersion = page.metadata?.resourceVersion ?? '';
      token = page.metadata?._continue || undefined;
    } while (token !== undefined);
    return { nodes, resourceVersion };
  }

  /**
   * Runs one API call with an AbortSignal on its HTTP request that fires after the timeout (or with `signal`), so
   * the request itself is cancelled, not merely raced.
   */
  private async request<T>(call: (options: ConfigurationOptions) => Promise<T>, signal?: AbortSignal): Promise<T> {
    const controller = new AbortController();
    const deadline = new AbortController();
    let timedOut = false;
    this.clock.sleep(this.timeoutMs, deadline.signal).then(
      () => {
        timedOut = true;
        controller.abort();
      },
      () => undefined,
    );
    const stop = (): void => controller.abort(signal?.reason);
    if (signal?.aborted) stop();
    signal?.addEventListener('abort', stop, { once: true });
    const options: ConfigurationOptions = {
      middleware: [{
        pre: (context) => {
          context.setSignal(controller.signal);
          return new Observable(Promise.resolve(context));
        },
        post: (context) => new Observable(Promise.resolve(context)),
      }],
      middlewareMergeStrategy: 'append',
    };
    try {
      return await call(options);
    } catch (err) {
      if (timedOut) throw new Error(`no answer from the Kubernetes API after ${this.timeoutMs / 1000} s; request cancelled`, { cause: err });
      throw err;
    } finally {
      deadline.abort();
      signal?.removeEventListener('abort', stop);
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
