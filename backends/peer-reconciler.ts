/**
 * The one loop that keeps the kernel equal to what the peer leases want, shared by vxlan and host-gw. Upstream writes
 * entries only on lease events and never looks again (docs/compatibility.md#vxlan-backend, "Repair"); here every input
 * (lease batches, kernel notifications of deletions, device loss, a periodic timer) funnels into one queue, and each
 * turn applies the difference in one batch. Startup waits for the first full lease snapshot, then diffs against a dump,
 * so peers that vanished while the daemon was down are cleaned up and the rest is left untouched.
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
import { diffEntries, entrySatisfies, inScope, orderChanges } from './entry-diff.js';
import type { PeerEntries } from './peer-entries.js';

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
export interface ReconcilerObserver {
  applied?(changes: number, durationMs: number): void;
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
  /** Peers whose route collides with one this node did not make, with why (they are refused, not our failure). */
  collisions?(byPeer: ReadonlyMap<string, string>): void;
  /** A lease batch has been programmed; `seenAt` is when the batch arrived. */
  leaseBatchApplied?(seenAt: number): void;
}

const INITIAL_SNAPSHOT = 'initial lease snapshot';
const DEVICE_RECREATED = 'device re-created';
const RETRY_FAILED = 'retrying entries that failed';

/** Upstream's device re-creation backoff, 1 s doubling to 30 s; refused entries are retried on the same curve. */
const RETRY_BACKOFF = { initialMs: 1000, maxMs: 30_000, jitter: 0 };

type Input =
  | { readonly type: 'leases'; readonly events: readonly LeaseEvent[]; readonly at: number }
  | { readonly type: 'entry-deleted'; readonly entry: DatapathEntry }
  | { readonly type: 'device-lost'; readonly name: string }
  | { readonly type: 'device-entry-lost'; readonly entry: DatapathEntry }
  | { readonly type: 'resync'; readonly why: string };

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
  const peers = new Map<string, Lease>();
  /** Desired entries by identity, and which peer wants each (for incremental removal). */
  const desired = new Map<string, DatapathEntry>();
  const byPeer = new Map<string, string[]>();
  /**
   * Which peers want each desired entry: an entry stays while any of them does, so one peer leaving never takes
   * another's entry with it. The first to want an identity owns its value; a later peer wanting other values for it
   * is refused that entry (and named), never allowed to overwrite it.
   */
  const wantedBy = new Map<string, Set<string>>();
  /** Routes the kernel holds for someone else (EEXIST on an exclusive add), by entry identity: peer and why. */
  const collisions = new Map<string, { peer: string; detail: string }>();
  let collisionsChanged = false;
  /** Kept with `desired`, so reporting counts per turn costs nothing at thousands of peers. */
  const counts: Partial<Record<DatapathEntry['kind'], number>> = {};
  const count = (kind: DatapathEntry['kind'], delta: number): void => {
    counts[kind] = (counts[kind] ?? 0) + delta;
  };
  let changedPeers = new Map<string, Lease | undefined>();
  const failing = new Map<string, { errno: string; entry: DatapathEntry }>();
  const skippedOnce = new Set<string>();
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
  // Not awaited on exit: the lease stream belongs to the caller and ends with the caller's signal.
  void pump(async () => {
    for await (const events of leases) inputs.push({ type: 'leases', events, at: deps.clock.now() });
  });
  const pumps = [
    pump(async () => {
      for await (const event of datapath.events(loop.signal)) {
        if (event.type === 'link-deleted' && plan.ownsLink(event.name)) inputs.push({ type: 'device-lost', name: event.name });
        else if (event.type === 'entry-deleted' && plan.ownsEntry?.(event.entry)) inputs.push({ type: 'device-entry-lost', entry: event.entry });
        else if (event.type === 'entry-deleted' && inScope(event.entry, plan.scope())) inputs.push({ type: 'entry-deleted', entry: event.entry });
        else if (event.type === 'overrun') inputs.push({ type: 'resync', why: 'netlink notifications overran' });
      }
    }),
    pump(async () => {
      for (;;) {
        await deps.clock.sleep(deps.resyncMs, loop.signal);
        inputs.push({ type: 'resync', why: 'periodic' });
      }
    }),
  ];

  /**
   * Replaces one peer's desired entries and records, in `pending`, exactly what changed for it: the cost of a
   * lease event is the size of that peer's entries, not of the whole desired set.
   */
  const pending = new Map<string, DatapathChange>();
  const setPeer = (key: string, lease: Lease | undefined): void => {
    const old = new Map<string, DatapathEntry>();
    for (const id of byPeer.get(key) ?? []) {
      const owners = wantedBy.get(id);
      owners?.delete(key);
      if (owners && owners.size > 0) continue;
      wantedBy.delete(id);
      const entry = desired.get(id);
      if (entry) {
        old.set(id, entry);
        count(entry.kind, -1);
      }
      desired.delete(id);
      if (collisions.get(id)?.peer === key) collisionsChanged = collisions.delete(id);
    }
    byPeer.delete(key);
    changedPeers.set(key, lease);
    if (lease) {
      peers.set(key, lease);
      const { entries, skipped } = plan.entriesFor(lease);
      for (const reason of skipped) {
        if (!skippedOnce.has(reason)) log.warn({ peer: key }, reason);
        skippedOnce.add(reason);
      }
      const mine: string[] = [];
      for (const e of entries) {
        const id = entryIdentity(e);
        const held = desired.get(id);
        if (held && !old.has(id) && !(entrySatisfies(e, held) && entrySatisfies(held, e))) {
          const holder = [...(wantedBy.get(id) ?? [])][0];
          if (!skippedOnce.has(`clash ${key} ${id}`)) log.warn({ peer: key, holder, entry: describeEntry(e) }, 'peer wants an entry another live peer holds with other values; left as the other peer has it');
          skippedOnce.add(`clash ${key} ${id}`);
          continue;
        }
        mine.push(id);
        wantedBy.set(id, (wantedBy.get(id) ?? new Set()).add(key));
        if (!desired.has(id)) count(e.kind, 1);
        desired.set(id, e);
        const was = old.get(id);
        if (!was || !entrySatisfies(e, was) || !entrySatisfies(was, e)) pending.set(id, { op: 'replace', entry: e });
        else if (pending.get(id)?.op === 'delete') pending.delete(id);
      }
      byPeer.set(key, mine);
    } else {
      peers.delete(key);
    }
    for (const [id, entry] of old) if (!desired.has(id)) pending.set(id, { op: 'delete', entry });
  };

  const apply = async (changes: DatapathChange[]): Promise<void> => {
    if (changes.length === 0) return;
    const started = deps.clock.now();
    const report = await datapath.apply(changes);
    deps.observer?.applied?.(changes.length, deps.clock.now() - started);
    const failedIds = new Set<string>();
    for (const f of report.failures) {
      const id = entryIdentity(f.change.entry);
      // A delete of something already gone (or of a route that is no longer ours) is success for us.
      if (f.change.op === 'delete' && (f.errno === 'ESRCH' || f.errno === 'ENOENT')) continue;
      failedIds.add(id);
      const peer = peerOf(id);
      if (f.errno === 'EEXIST' && f.change.entry.kind === 'route') {
        // Someone else's route holds the destination: that peer cannot be served here, but this node is fine.
        if (collisions.get(id)?.detail !== f.message) {
          log.warn({ peer, entry: describeEntry(f.change.entry) }, `peer refused: ${f.message}`);
          collisionsChanged = true;
        }
        collisions.set(id, { peer: peer ?? '-', detail: f.message });
        continue;
      }
      if (failing.get(id)?.errno !== f.errno) log.error({ peer, entry: describeEntry(f.change.entry), err: f.errno }, 'cannot program entry');
      failing.set(id, { errno: f.errno, entry: f.change.entry });
    }
    for (const c of changes) {
      const id = entryIdentity(c.entry);
      if (failedIds.has(id)) continue;
      if (failing.delete(id)) log.info({ entry: describeEntry(c.entry) }, 'entry programmed after earlier failures');
      if (collisions.delete(id)) collisionsChanged = true;
    }
    if (collisionsChanged) deps.observer?.collisions?.(collisionsByPeer());
    collisionsChanged = false;
  };
  const peerOf = (id: string): string | undefined => [...(wantedBy.get(id) ?? [])][0];
  const collisionsByPeer = (): Map<string, string> => new Map([...collisions.values()].map((c) => [c.peer, c.detail]));
  /** Readiness: what of ours cannot be programmed, naming one entry and its peer; collisions are not ours. */
  const programmingProblem = (): string | undefined => {
    const first = failing.entries().next().value;
    if (!first) return undefined;
    const [id, { errno, entry }] = first;
    return `${failing.size} datapath entries cannot be programmed, e.g. ${describeEntry(entry)} for peer ${peerOf(id) ?? '-'}: ${errno}`;
  };

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
      later(retryInMs, { type: 'resync', why: 'retrying device set-up' });
      return false;
    }
  };

  const fullResync = async (why: string): Promise<void> => {
    const started = deps.clock.now();
    const actual = await datapath.dump(plan.scope());
    const changes = diffEntries([...desired.values()], actual);
    // Programming the first snapshot or a re-created device, or retrying refused entries, is the job itself, not a
    // repair of drift.
    const drifted = why !== INITIAL_SNAPSHOT && why !== DEVICE_RECREATED && why !== RETRY_FAILED;
    if (changes.length > 0 && drifted) log.info({ why, changes: changes.length }, 'datapath drifted from the leases; converging');
    if (drifted) for (const c of changes) if (c.op === 'replace') deps.observer?.repaired?.(c.entry.kind, 1);
    await apply(changes);
    deps.observer?.resynced?.(deps.clock.now() - started, drifted ? changes.length : 0);
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
      let full: string | undefined;
      pending.clear();
      const leaseTimes: number[] = [];
      const lost: DatapathEntry[] = [];
      for (const input of batch) {
        if (input.type === 'leases') {
          for (const ev of input.events) {
            const key = formatSubnetKey(ev.lease);
            if (key !== ownKey) setPeer(key, ev.type === 'added' ? ev.lease : undefined);
          }
          leaseTimes.push(input.at);
          if (!haveSnapshot) full = INITIAL_SNAPSHOT;
          haveSnapshot = true;
        } else if (input.type === 'device-lost') {
          log.warn({ device: input.name }, 'device removed behind our back; re-creating it');
          devicesPending = `${input.name} removed`;
        } else if (input.type === 'device-entry-lost') {
          log.warn({ entry: describeEntry(input.entry) }, 'device entry removed behind our back; restoring it');
          devicesPending = `${describeEntry(input.entry)} removed`;
        } else if (input.type === 'resync') {
          if (input.why === RETRY_FAILED) entryRetryArmed = false;
          full ??= input.why;
        } else {
          lost.push(input.entry);
        }
      }
      if (devicesPending !== undefined) {
        if (!(await ensureDevices(devicesPending))) continue;
        // Device indexes changed: every peer's entries must be recomputed against the new device.
        for (const [key, lease] of [...peers]) setPeer(key, lease);
        full = DEVICE_RECREATED;
      }
      deps.observer?.peers?.(peers.size);
      deps.observer?.entries?.(counts);
      if (changedPeers.size > 0) {
        plan.syncPeers?.(changedPeers);
        deps.observer?.peersChanged?.(changedPeers, peers);
      }
      changedPeers = new Map();
      if (!haveSnapshot) continue;
      try {
        if (full !== undefined) {
          await fullResync(full);
        } else {
          const changes = orderChanges([...pending.values()]);
          // Deletion notices identify the entry but may omit its values, so identity decides what to restore.
          const planned = new Set(changes.map((c) => entryIdentity(c.entry)));
          for (const entry of lost) {
            const id = entryIdentity(entry);
            const want = desired.get(id);
            if (want && !planned.has(id)) {
              planned.add(id);
              log.info({ entry: describeEntry(want) }, 'entry removed behind our back; restoring it');
              deps.observer?.repaired?.(want.kind, 1);
              changes.push({ op: 'replace', entry: want });
            }
          }
          await apply(changes);
        }
        for (const at of leaseTimes) deps.observer?.leaseBatchApplied?.(at);
        deps.observer?.programmed?.(programmingProblem());
        if (failing.size === 0) entryBackoff.reset();
        else if (!entryRetryArmed) {
          entryRetryArmed = true;
          later(entryBackoff.next(), { type: 'resync', why: RETRY_FAILED });
        }
      } catch (err) {
        if (signal.aborted) break;
        deps.observer?.programmed?.(`datapath update failed: ${errorMessage(err)}`);
        log.error({ err: errorMessage(err) }, 'datapath update failed; will resync');
        later(1000, { type: 'resync', why: 'after failure' });
      }
    }
  } finally {
    signal.removeEventListener('abort', stop);
    stop();
    await Promise.allSettled(pumps);
  }
}

function pump(fn: () => Promise<void>): Promise<void> {
  return fn().catch(() => undefined);
}
