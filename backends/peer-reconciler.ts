/**
 * The one loop that keeps the kernel equal to what the peer leases want, shared by vxlan and host-gw. Upstream writes
 * entries only on lease events and never looks again (docs/compatibility.md#vxlan-backend, "Repair"); here every input
 * (lease batches, kernel notifications of deletions, device loss, a periodic timer) funnels into one queue, and each
 * turn applies the difference in one batch. Startup waits for the first full lease snapshot, then diffs against a dump,
 * so peers that vanished while the daemon was down are cleaned up and the rest is left untouched.
 * The parts: the desired state (reconciler/desired-peers.ts), the apply-and-report step (reconciler/entry-applier.ts),
 * the reasons for a full resync (reconciler/resync-reason.ts); this file is the loop that feeds them.
 */
import type { Logger } from 'pino';
import type { Lease, LeaseEvent } from '../flanneld/lease/lease.js';
import { formatSubnetKey } from '../flanneld/lease/subnet-key.js';
import { AsyncQueue } from '../flanneld/runtime/async-queue.js';
import { Backoff } from '../flanneld/runtime/backoff.js';
import type { Clock } from '../flanneld/runtime/clock.js';
import { errorMessage } from '../flanneld/runtime/errors.js';
import type { Datapath, DatapathChange, DatapathEntry, DatapathScope } from './datapath/datapath.js';
import { describeEntry, entryIdentity } from './datapath/entry-key.js';
import { diffEntries, inScope } from './entry-diff.js';
import type { PeerEntries } from './peer-entries.js';
import { DesiredPeers } from './reconciler/desired-peers.js';
import { EntryApplier, type ApplierObserver } from './reconciler/entry-applier.js';
import { describeResync, resyncFindsDrift, type ResyncReason } from './reconciler/resync-reason.js';

export interface PeerPlan {
  /** What this network owns in the kernel now (device indexes change when a device is re-created). */
  scope(): DatapathScope;
  /** Creates or repairs this network's devices; runs at start and whenever one of them disappears. */
  ensureDevices(signal: AbortSignal): Promise<void>;
  ownsLink(name: string): boolean;
  entriesFor(peer: Lease): PeerEntries;
  /**
   * Entries outside the peers' scope that the network's devices need (udp's route for the whole Network via its
   * TUN device): their deletion is repaired by ensureDevices, like the loss of a device.
   */
  ownsEntry?(entry: DatapathEntry): boolean;
  /** The peers that changed in a turn (undefined = gone), for a backend that forwards in userspace (udp). */
  syncPeers?(changed: ReadonlyMap<string, Lease | undefined>): void;
  /**
   * State the peers want outside the kernel's routing tables (wireguard's peer lists), brought in line after each
   * turn's entries: `full` on the turns that dump and diff the kernel (start, periodic, after failures), so the
   * backend then reads its devices back instead of trusting what it last wrote. A throw is handled like a failed
   * datapath update: reported, and retried by a full resync.
   */
  converge?(full: boolean): Promise<void>;
}

export interface ReconcilerDeps {
  readonly datapath: Datapath;
  readonly clock: Clock;
  readonly log: Logger;
  /** Full dump-and-diff period (--datapath-resync). */
  readonly resyncMs: number;
  readonly observer?: ReconcilerObserver;
}

/** Hooks for metrics; all optional. */
export interface ReconcilerObserver extends ApplierObserver {
  repaired?(kind: DatapathEntry['kind'], count: number): void;
  resynced?(durationMs: number, drift: number): void;
  peers?(count: number): void;
  /** Entries wanted for peers, by kind, after each turn of the loop. */
  entries?(counts: Readonly<Partial<Record<DatapathEntry['kind'], number>>>): void;
  /**
   * After each turn that changed peers: what changed by subnet key (undefined = gone), and the live peer map (read
   * it, do not keep a copy), so observers pay for the change, not for every peer.
   */
  peersChanged?(changed: ReadonlyMap<string, Lease | undefined>, peers: ReadonlyMap<string, Lease>): void;
  /** After each turn: undefined when every wanted entry and device is in place, else what is not. */
  programmed?(problem: string | undefined): void;
  /** A lease batch has been programmed; `seenAt` is when the batch arrived. */
  leaseBatchApplied?(seenAt: number): void;
  /**
   * An input stream failed: the kernel's notifications (reopened after a pause, with a resync for what they may
   * have missed) or the lease stream (the caller's; its owner restarts the daemon's run).
   */
  streamFailed?(stream: 'kernel-notifications' | 'leases', err: string): void;
}

/** Upstream's device re-creation backoff, 1 s doubling to 30 s; refused entries are retried on the same curve. */
const RETRY_BACKOFF = { initialMs: 1000, maxMs: 30_000, jitter: 0 };

type Input =
  | { readonly type: 'leases'; readonly events: readonly LeaseEvent[]; readonly at: number }
  | { readonly type: 'entry-deleted'; readonly entry: DatapathEntry }
  | { readonly type: 'device-lost'; readonly name: string }
  | { readonly type: 'device-entry-lost'; readonly entry: DatapathEntry }
  | { readonly type: 'resync'; readonly why: ResyncReason };

/** What one turn of the loop collected from its inputs. */
interface Turn {
  full: ResyncReason | undefined;
  readonly leaseTimes: number[];
  readonly lost: DatapathEntry[];
}

export async function runPeerReconciler(
  plan: PeerPlan,
  ownLease: Lease,
  leases: AsyncIterable<readonly LeaseEvent[]>,
  deps: ReconcilerDeps,
  signal: AbortSignal,
): Promise<void> {
  const { log, datapath } = deps;
  const ownKey = formatSubnetKey(ownLease);
  const inputs = new AsyncQueue<Input>();
  // Each asks the other only while the loop runs, after both exist: the applier names an entry's peer, the state
  // tells the applier which entries no peer wants any more.
  const entries: EntryApplier = new EntryApplier({ datapath, clock: deps.clock, log, ownerOf: (id) => state.ownerOf(id), ...(deps.observer ? { observer: deps.observer } : {}) });
  const state: DesiredPeers = new DesiredPeers((lease) => plan.entriesFor(lease), log, (id, peer) => entries.release(id, peer));
  let haveSnapshot = false;
  /** Set while the devices still need (re-)creating; every later turn retries first, so a failure is never fatal. */
  let devicesPending: string | undefined;
  let lastDeviceError: string | undefined;

  // The loop's own signal: whatever ends the loop (abort or an unexpected error) also stops its helpers.
  const loop = new AbortController();
  const stop = (): void => {
    loop.abort();
    inputs.end();
  };
  signal.addEventListener('abort', stop, { once: true });
  const deviceBackoff = new Backoff(RETRY_BACKOFF, { int: () => 0 });
  // An entry the kernel refused (say, a route on a device that is not up yet) is retried on this backoff rather than
  // left out until the periodic resync, which is a minute by default.
  const entryBackoff = new Backoff(RETRY_BACKOFF, { int: () => 0 });
  let entryRetryArmed = false;
  const later = (ms: number, input: Input): void => {
    deps.clock.sleep(ms, loop.signal).then(() => inputs.push(input), () => undefined);
  };
  const failed = (stream: 'kernel-notifications' | 'leases', err: unknown): void => {
    if (loop.signal.aborted) return;
    log.error({ stream, err: errorMessage(err) }, 'input stream failed');
    deps.observer?.streamFailed?.(stream, errorMessage(err));
  };
  // Not awaited on exit: the lease stream belongs to the caller and ends with the caller's signal.
  void (async () => {
    for await (const events of leases) inputs.push({ type: 'leases', events, at: deps.clock.now() });
  })().catch((err: unknown) => failed('leases', err));
  const pumps = [
    watchKernel(datapath, plan, inputs, deps.clock, loop.signal, (err) => failed('kernel-notifications', err)),
    (async () => {
      for (;;) {
        await deps.clock.sleep(deps.resyncMs, loop.signal);
        inputs.push({ type: 'resync', why: 'periodic' });
      }
    })().catch(() => undefined),
  ];

  const ensureDevices = async (why: string): Promise<boolean> => {
    try {
      await plan.ensureDevices(signal);
      devicesPending = undefined;
      lastDeviceError = undefined;
      deviceBackoff.reset();
      return true;
    } catch (err) {
      if (signal.aborted) return false;
      const retryInMs = deviceBackoff.next();
      if (errorMessage(err) !== lastDeviceError) log.error({ why, err: errorMessage(err), retryInMs }, 'cannot set up devices; will retry');
      deps.observer?.programmed?.(`cannot set up devices: ${errorMessage(err)}`);
      lastDeviceError = errorMessage(err);
      devicesPending = why;
      later(retryInMs, { type: 'resync', why: 'retry-devices' });
      return false;
    }
  };

  const fullResync = async (reason: ResyncReason): Promise<void> => {
    const started = deps.clock.now();
    const changes = diffEntries(state.all(), await datapath.dump(plan.scope()));
    const drifted = resyncFindsDrift(reason);
    if (changes.length > 0 && drifted) log.info({ why: describeResync(reason), changes: changes.length }, 'datapath drifted from the leases; converging');
    if (drifted) for (const c of changes) if (c.op === 'replace') deps.observer?.repaired?.(c.entry.kind, 1);
    await entries.apply(changes);
    deps.observer?.resynced?.(deps.clock.now() - started, drifted ? changes.length : 0);
  };

  /** This turn's changes plus the restoration of entries deleted behind our back (by identity: notices may omit values). */
  const incremental = (lost: readonly DatapathEntry[]): DatapathChange[] => {
    const changes = state.changes();
    const planned = new Set(changes.map((c) => entryIdentity(c.entry)));
    for (const entry of lost) {
      const id = entryIdentity(entry);
      const want = state.wanted(id);
      if (!want || planned.has(id)) continue;
      planned.add(id);
      log.info({ entry: describeEntry(want) }, 'entry removed behind our back; restoring it');
      deps.observer?.repaired?.(want.kind, 1);
      changes.push({ op: 'replace', entry: want });
    }
    return changes;
  };

  const collect = (batch: readonly Input[]): Turn => {
    const turn: Turn = { full: undefined, leaseTimes: [], lost: [] };
    for (const input of batch) {
      switch (input.type) {
        case 'leases':
          for (const ev of input.events) {
            const key = formatSubnetKey(ev.lease);
            if (key !== ownKey) state.set(key, ev.type === 'added' ? ev.lease : undefined);
          }
          turn.leaseTimes.push(input.at);
          if (!haveSnapshot) turn.full = 'initial-snapshot';
          haveSnapshot = true;
          break;
        case 'device-lost':
          log.warn({ device: input.name }, 'device removed behind our back; re-creating it');
          devicesPending = `${input.name} removed`;
          break;
        case 'device-entry-lost':
          log.warn({ entry: describeEntry(input.entry) }, 'device entry removed behind our back; restoring it');
          devicesPending = `${describeEntry(input.entry)} removed`;
          break;
        case 'resync':
          if (input.why === 'retry-failed-entries') entryRetryArmed = false;
          turn.full ??= input.why;
          break;
        case 'entry-deleted':
          turn.lost.push(input.entry);
          break;
      }
    }
    return turn;
  };

  const program = async (turn: Turn): Promise<void> => {
    try {
      if (turn.full !== undefined) await fullResync(turn.full);
      else await entries.apply(incremental(turn.lost));
      await plan.converge?.(turn.full !== undefined);
      for (const at of turn.leaseTimes) deps.observer?.leaseBatchApplied?.(at);
      deps.observer?.programmed?.(entries.problem());
      if (entries.failures === 0) entryBackoff.reset();
      else if (!entryRetryArmed) {
        entryRetryArmed = true;
        later(entryBackoff.next(), { type: 'resync', why: 'retry-failed-entries' });
      }
    } catch (err) {
      if (signal.aborted) return;
      deps.observer?.programmed?.(`datapath update failed: ${errorMessage(err)}`);
      log.error({ err: errorMessage(err) }, 'datapath update failed; will resync');
      later(1000, { type: 'resync', why: 'after-failure' });
    }
  };

  try {
    await ensureDevices('start');
    for await (const first of inputs) {
      const batch = [first];
      while (inputs.size > 0) {
        const next = await inputs[Symbol.asyncIterator]().next();
        if (next.done) break;
        batch.push(next.value);
      }
      state.beginTurn();
      const turn = collect(batch);
      if (devicesPending !== undefined) {
        if (!(await ensureDevices(devicesPending))) continue;
        // Device indexes changed: every peer's entries must be recomputed against the new device.
        state.replanAll();
        turn.full = 'devices-recreated';
      }
      deps.observer?.peers?.(state.peers.size);
      deps.observer?.entries?.(state.entryCounts());
      const changedPeers = state.takeChangedPeers();
      if (changedPeers.size > 0) {
        plan.syncPeers?.(changedPeers);
        deps.observer?.peersChanged?.(changedPeers, state.peers);
      }
      if (haveSnapshot) await program(turn);
      if (signal.aborted) break;
    }
  } finally {
    signal.removeEventListener('abort', stop);
    stop();
    await Promise.allSettled(pumps);
  }
}

/** How long the kernel's notification stream rests after failing before it is opened again. */
const REOPEN_BACKOFF = { initialMs: 1000, maxMs: 30_000, jitter: 0 };

/**
 * Turns the kernel's notifications into inputs for as long as `signal` lives. A stream that fails or ends is
 * reported (not swallowed, which would leave only the periodic resync to notice deletions), reopened after a
 * backoff, and followed by a resync for whatever happened while nobody listened.
 */
async function watchKernel(datapath: Datapath, plan: PeerPlan, inputs: AsyncQueue<Input>, clock: Clock, signal: AbortSignal, failed: (err: unknown) => void): Promise<void> {
  const backoff = new Backoff(REOPEN_BACKOFF, { int: () => 0 });
  while (!signal.aborted) {
    try {
      for await (const event of datapath.events(signal)) {
        backoff.reset();
        if (event.type === 'link-deleted' && plan.ownsLink(event.name)) inputs.push({ type: 'device-lost', name: event.name });
        else if (event.type === 'entry-deleted' && plan.ownsEntry?.(event.entry)) inputs.push({ type: 'device-entry-lost', entry: event.entry });
        else if (event.type === 'entry-deleted' && inScope(event.entry, plan.scope())) inputs.push({ type: 'entry-deleted', entry: event.entry });
        else if (event.type === 'overrun') inputs.push({ type: 'resync', why: 'notifications-overran' });
      }
      if (signal.aborted) return;
      failed(new Error('the notification stream ended'));
    } catch (err) {
      if (signal.aborted) return;
      failed(err);
    }
    try {
      await clock.sleep(backoff.next(), signal);
    } catch {
      return;
    }
    inputs.push({ type: 'resync', why: 'notifications-reopened' });
  }
}
