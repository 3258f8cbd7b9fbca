/**
 * Keeps this node's lease alive: renews it `renewMarginMs` before it expires (on the injected Clock, so tests move
 * through 24 h TTLs in milliseconds) and writes it back at once when it vanishes from the store (expiry while we were
 * partitioned, or a deletion) or holds a value we did not write (the subnet manager's watchOwnLease says which).
 * Transient failures are retried with backoff; only LeaseLostError ends the loop.
 */
import type { Logger } from 'pino';
import type { Lease } from '../lease/lease.js';
import { formatSubnetKey } from '../lease/subnet-key.js';
import { Backoff } from '../runtime/backoff.js';
import type { Clock } from '../runtime/clock.js';
import { LeaseLostError } from '../runtime/errors.js';
import type { Random } from '../runtime/random.js';
import type { SubnetManager } from './subnet-manager.js';

export interface LeaseKeeperDeps {
  readonly subnets: SubnetManager;
  readonly clock: Clock;
  readonly random: Random;
  readonly log: Logger;
  readonly renewMarginMs: number;
}

/** Upstream retries a failed renewal after 1 min; we start faster and back off to that. */
const RENEW_RETRY = { initialMs: 1000, maxMs: 60_000, jitter: 0.1 };

/** Settles when `signal` aborts; rejects LeaseLostError when another node holds our subnet. */
export async function keepLease(
  initial: Lease,
  deps: LeaseKeeperDeps,
  signal: AbortSignal,
  onRenewed: (lease: Lease) => void = () => undefined,
): Promise<void> {
  const { clock, log } = deps;
  const subnet = formatSubnetKey(initial);
  let lease = initial;
  // The watch gets its own signal, stopped on every exit: an async generator's return() waits for the body to reach
  // a yield, so after LeaseLostError the finally below would otherwise hang until the caller aborted.
  const watchStop = new AbortController();
  const stopWatch = (): void => watchStop.abort(signal.reason);
  signal.addEventListener('abort', stopWatch, { once: true });
  const vanishing = deps.subnets.watchOwnLease(initial, watchStop.signal)[Symbol.asyncIterator]();
  let vanished = vanishing.next();
  try {
    while (!signal.aborted) {
      const delay = lease.expiresAt === undefined ? Infinity : lease.expiresAt - deps.renewMarginMs - clock.now();
      const timer = new AbortController();
      const stopTimer = (): void => timer.abort();
      signal.addEventListener('abort', stopTimer, { once: true });
      const sleeping = Number.isFinite(delay)
        ? clock.sleep(Math.max(0, delay), timer.signal).then(
            () => 'renew' as const,
            () => 'stopped' as const,
          )
        : new Promise<never>(() => undefined);
      const why = await Promise.race([sleeping, vanished.then((r) => (r.done ? ('stopped' as const) : ('vanished' as const)))]);
      timer.abort();
      signal.removeEventListener('abort', stopTimer);
      if (why === 'stopped' || signal.aborted) return;
      if (why === 'vanished') log.warn({ subnet }, 'own lease vanished or changed in the store; writing it back');
      lease = await renewWithRetry(lease, deps, signal);
      log.info({ subnet, expiresAt: lease.expiresAt }, why === 'renew' ? 'lease renewed' : 'own lease written back');
      onRenewed(lease);
      if (why === 'vanished') vanished = vanishing.next();
    }
  } catch (err) {
    if (signal.aborted) return;
    throw err;
  } finally {
    watchStop.abort();
    signal.removeEventListener('abort', stopWatch);
    await vanishing.return?.();
  }
}

async function renewWithRetry(lease: Lease, deps: LeaseKeeperDeps, signal: AbortSignal): Promise<Lease> {
  const backoff = new Backoff(RENEW_RETRY, deps.random);
  for (;;) {
    try {
      return await deps.subnets.renewLease(lease, signal);
    } catch (err) {
      if (err instanceof LeaseLostError || signal.aborted) throw err;
      const retryInMs = backoff.next();
      deps.log.warn({ err, subnet: formatSubnetKey(lease), retryInMs }, 'error renewing lease; trying again');
      await deps.clock.sleep(retryInMs, signal);
    }
  }
}
