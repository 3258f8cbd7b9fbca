/**
 * All Nodes as one list, then changes: watch from the list's resourceVersion, follow bookmarks, resume from the last
 * version seen after the server closes the stream or the connection drops (with backoff), and list again only when
 * the server says that version is gone (410). Thousands of nodes at start arrive as one snapshot, never as a queue
 * of events that can overflow.
 */
import type { Logger } from 'pino';
import { Backoff, watchBackoff } from '../../runtime/backoff.js';
import type { Clock } from '../../runtime/clock.js';
import { errorMessage } from '../../runtime/errors.js';
import type { Random } from '../../runtime/random.js';
import { WatchGoneError, type KubeNode, type NodeApi } from './node-api.js';

export type NodeBatch =
  | { readonly kind: 'snapshot'; readonly nodes: readonly KubeNode[] }
  | { readonly kind: 'change'; readonly type: 'upsert' | 'delete'; readonly node: KubeNode };

export interface NodeWatchDeps {
  readonly api: NodeApi;
  readonly clock: Clock;
  readonly random: Random;
  readonly log: Logger;
  /** Listing or watching works (true) or is failing and retrying (false): liveness for /healthz. */
  readonly onWatchState?: (up: boolean) => void;
}

/** A watch that ends sooner than this without a single event counts as failed. */
const SHORT_WATCH_MS = 1000;

export async function* watchNodes(deps: NodeWatchDeps, signal: AbortSignal): AsyncIterable<NodeBatch> {
  const { api, clock, log } = deps;
  const backoff = new Backoff(watchBackoff, deps.random);
  // One warning per distinct failure, so an API server that is away for an hour logs once, not every 5 s.
  let lastFailure = '';
  const failed = async (what: string, err: unknown): Promise<void> => {
    deps.onWatchState?.(false);
    const message = errorMessage(err);
    const retryInMs = backoff.next();
    if (message !== lastFailure) log.warn({ err: message, retryInMs }, `${what} failed; retrying`);
    lastFailure = message;
    await clock.sleep(retryInMs, signal);
  };
  const recovered = (): void => {
    deps.onWatchState?.(true);
    if (lastFailure) log.info('Kubernetes API reachable again');
    lastFailure = '';
    backoff.reset();
  };

  while (!signal.aborted) {
    let listed;
    try {
      listed = await api.listNodes(signal);
    } catch (err) {
      if (signal.aborted) return;
      await failed('listing nodes', err);
      continue;
    }
    recovered();
    yield { kind: 'snapshot', nodes: listed.nodes };
    let version = listed.resourceVersion;
    for (;;) {
      const opened = clock.now();
      let seen = 0;
      try {
        for await (const event of api.watchNodes(version, signal)) {
          seen++;
          recovered();
          if (event.type === 'bookmark') {
            version = event.resourceVersion;
            continue;
          }
          version = event.node.resourceVersion;
          yield { kind: 'change', type: event.type === 'deleted' ? 'delete' : 'upsert', node: event.node };
        }
        if (signal.aborted) return;
        // The server ended the stream. After its watch timeout, resume where we are; a stream closed at once with
        // nothing in it (a proxy that cuts every watch) is a failure, or the loop would hammer the API. client-go's
        // reflector draws the same line.
        if (seen === 0 && clock.now() - opened < SHORT_WATCH_MS) await failed('watching nodes', new Error('the server closed the watch at once'));
      } catch (err) {
        if (signal.aborted) return;
        if (err instanceof WatchGoneError) {
          log.info({ resourceVersion: version }, 'node watch cannot resume (410 Gone); listing again');
          break;
        }
        await failed('watching nodes', err);
      }
    }
  }
}
