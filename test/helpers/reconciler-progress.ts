/**
 * For backend unit tests: a reconciler observer that counts handled lease batches and resyncs, and helpers that
 * push a batch or fire the resync timer and wait until the reconciler has dealt with it.
 */
import { expect, vi } from 'vitest';
import type { ReconcilerObserver } from '../../backends/peer-reconciler.js';
import type { LeaseEvent } from '../../flanneld/lease/lease.js';
import type { FakeSubnetManager } from './fake-subnet-manager.js';
import type { ManualClock } from './manual-clock.js';

export interface ReconcilerProgress {
  readonly observer: ReconcilerObserver;
  /** Pushes one lease batch and waits until the reconciler has handled it. */
  push(events: readonly LeaseEvent[]): Promise<void>;
  /** Fires the periodic resync and waits until it has run and the timer is re-armed. */
  resync(): Promise<void>;
}

export function reconcilerProgress(subnets: FakeSubnetManager, clock: ManualClock, resyncMs: number): ReconcilerProgress {
  let batches = 0;
  let resyncs = 0;
  return {
    observer: { leaseBatchApplied: () => void batches++, resynced: () => void resyncs++ },
    async push(events) {
      const before = batches;
      subnets.pushLeases(events);
      await vi.waitFor(() => expect(batches).toBe(before + 1));
    },
    async resync() {
      const before = resyncs;
      clock.advance(resyncMs);
      await vi.waitFor(() => {
        expect(resyncs).toBe(before + 1);
        expect(clock.pending).toBe(1);
      });
    },
  };
}
