/**
 * A SubnetManager scripted by the test: each call takes the next step from that method's queue (a value, an Error
 * to reject with, or a function of the call's argument), and every call is recorded. Calls reject with the signal's
 * reason when it aborts, so a step that never settles models a store that hangs. The watches are async generators,
 * like the etcd manager's, and are fed by the test: `vanish()` for the own-lease watch, `pushLeases()` for peers.
 */
import type { NetworkConfig } from '../../flanneld/config/network-config-types.js';
import type { IpAddress } from '../../flanneld/ip/address.js';
import type { Lease, LeaseEvent } from '../../flanneld/lease/lease.js';
import { AsyncQueue, raceAbort } from '../../flanneld/runtime/async-queue.js';
import type { LeaseRequest, SubnetManager } from '../../flanneld/subnet/subnet-manager.js';

/** One scripted outcome: resolve with the value, reject with the Error, or compute it from the call's argument. */
export type Step<A, T> = T | Error | ((arg: A) => T | Promise<T>);

/** A queue of steps for one method, with an optional fallback once the queue is empty. */
export class Script<A, T> {
  private readonly steps: Step<A, T>[] = [];
  private fallback: ((arg: A) => T | Promise<T>) | undefined;

  constructor(private readonly method: string) {}

  /** Appends steps, taken one per call in order. */
  then(...steps: Step<A, T>[]): this {
    this.steps.push(...steps);
    return this;
  }

  /** Used for every call once the queued steps run out (default: reject, naming the method). */
  otherwise(fn: (arg: A) => T | Promise<T>): this {
    this.fallback = fn;
    return this;
  }

  get remaining(): number {
    return this.steps.length;
  }

  async run(arg: A, signal: AbortSignal): Promise<T> {
    const step = this.steps.shift();
    const outcome = async (): Promise<T> => {
      if (step === undefined) {
        if (this.fallback) return this.fallback(arg);
        throw new Error(`FakeSubnetManager: no scripted result left for ${this.method}`);
      }
      if (step instanceof Error) throw step;
      if (typeof step === 'function') return (step as (arg: A) => T | Promise<T>)(arg);
      return step;
    };
    return raceAbort(outcome(), signal);
  }
}

export type FakeCall =
  | { readonly method: 'getNetworkConfig' }
  | { readonly method: 'findPreviousLease'; readonly publicIP: IpAddress | undefined }
  | { readonly method: 'acquireLease'; readonly request: LeaseRequest }
  | { readonly method: 'renewLease'; readonly lease: Lease };

/** A step that settles only when the call's signal aborts. */
export const never = (): Promise<never> => new Promise<never>(() => undefined);

export class FakeSubnetManager implements SubnetManager {
  readonly name = 'etcd' as const;
  readonly config = new Script<void, NetworkConfig>('getNetworkConfig');
  readonly previousLease = new Script<IpAddress | undefined, Lease | undefined>('findPreviousLease').otherwise(
    () => undefined,
  );
  readonly acquire = new Script<LeaseRequest, Lease>('acquireLease');
  readonly renew = new Script<Lease, Lease>('renewLease');
  /** Every call in order, for assertions. */
  readonly calls: FakeCall[] = [];

  private readonly ownQueues = new Set<AsyncQueue<void>>();
  private pendingVanish = 0;
  private readonly leaseQueues = new Set<AsyncQueue<readonly LeaseEvent[]>>();

  callsTo<M extends FakeCall['method']>(method: M): Extract<FakeCall, { method: M }>[] {
    return this.calls.filter((c): c is Extract<FakeCall, { method: M }> => c.method === method);
  }

  getNetworkConfig(signal: AbortSignal): Promise<NetworkConfig> {
    this.calls.push({ method: 'getNetworkConfig' });
    return this.config.run(undefined, signal);
  }

  findPreviousLease(publicIP: IpAddress | undefined, signal: AbortSignal): Promise<Lease | undefined> {
    this.calls.push({ method: 'findPreviousLease', publicIP });
    return this.previousLease.run(publicIP, signal);
  }

  acquireLease(request: LeaseRequest, signal: AbortSignal): Promise<Lease> {
    this.calls.push({ method: 'acquireLease', request });
    return this.acquire.run(request, signal);
  }

  renewLease(lease: Lease, signal: AbortSignal): Promise<Lease> {
    this.calls.push({ method: 'renewLease', lease });
    return this.renew.run(lease, signal);
  }

  /** Number of own-lease watches currently open. */
  get ownLeaseWatchers(): number {
    return this.ownQueues.size;
  }

  /** Tells every open own-lease watch that the lease disappeared (kept for the next watch when none is open). */
  vanish(): void {
    if (this.ownQueues.size === 0) this.pendingVanish++;
    for (const q of this.ownQueues) q.push();
  }

  async *watchOwnLease(_lease: Lease, signal: AbortSignal): AsyncIterable<void> {
    const queue = new AsyncQueue<void>();
    for (; this.pendingVanish > 0; this.pendingVanish--) queue.push();
    yield* this.follow(queue, this.ownQueues, signal);
  }

  /** Number of peer-lease watches currently open. */
  get leaseWatchers(): number {
    return this.leaseQueues.size;
  }

  /** Delivers one batch to every open peer-lease watch. */
  pushLeases(batch: readonly LeaseEvent[]): void {
    for (const q of this.leaseQueues) q.push(batch);
  }

  /** Makes every open peer-lease watch reject with `err` (a watch that breaks). */
  failLeases(err: unknown): void {
    for (const q of this.leaseQueues) q.fail(err);
  }

  async *watchLeases(signal: AbortSignal): AsyncIterable<readonly LeaseEvent[]> {
    yield* this.follow(new AsyncQueue<readonly LeaseEvent[]>(), this.leaseQueues, signal);
  }

  private async *follow<T>(queue: AsyncQueue<T>, watchers: Set<AsyncQueue<T>>, signal: AbortSignal): AsyncGenerator<T> {
    if (signal.aborted) return;
    const stop = (): void => queue.end();
    signal.addEventListener('abort', stop, { once: true });
    watchers.add(queue);
    try {
      for await (const item of queue) yield item;
    } finally {
      watchers.delete(queue);
      signal.removeEventListener('abort', stop);
    }
  }
}
