/**
 * The apply-and-report step: hands a batch of changes to the datapath and keeps what the kernel refused. An entry
 * whose destination someone else's route already holds (EEXIST) is a collision: that peer cannot be served here,
 * but this node is fine. Any other refusal is ours to retry and makes the node not ready until it succeeds.
 */
import type { Logger } from 'pino';
import type { Clock } from '../../flanneld/runtime/clock.js';
import type { Datapath, DatapathChange, DatapathEntry } from '../datapath/datapath.js';
import { describeEntry, entryIdentity } from '../datapath/entry-key.js';

export interface ApplierObserver {
  applied?(changes: number, durationMs: number): void;
  /** Peers whose route collides with one this node did not make, with why (they are refused, not our failure). */
  collisions?(byPeer: ReadonlyMap<string, string>): void;
}

interface ApplierDeps {
  readonly datapath: Datapath;
  readonly clock: Clock;
  readonly log: Logger;
  readonly observer?: ApplierObserver;
  /** The peer an entry identity belongs to, for log lines and reports. */
  readonly ownerOf: (id: string) => string | undefined;
}

export class EntryApplier {
  /** Routes the kernel holds for someone else (EEXIST on an exclusive add), by entry identity: peer and why. */
  private readonly collisions = new Map<string, { peer: string; detail: string }>();
  private collisionsChanged = false;
  private readonly failing = new Map<string, { errno: string; entry: DatapathEntry }>();

  constructor(private readonly deps: ApplierDeps) {}

  async apply(changes: readonly DatapathChange[]): Promise<void> {
    if (changes.length === 0) return;
    const { datapath, clock, observer } = this.deps;
    const started = clock.now();
    const report = await datapath.apply(changes);
    observer?.applied?.(changes.length, clock.now() - started);
    const failedIds = new Set<string>();
    for (const f of report.failures) {
      // A delete of something already gone (or of a route that is no longer ours) is success for us.
      if (f.change.op === 'delete' && (f.errno === 'ESRCH' || f.errno === 'ENOENT')) continue;
      const id = entryIdentity(f.change.entry);
      failedIds.add(id);
      if (f.errno === 'EEXIST' && f.change.entry.kind === 'route') this.collide(id, f.change.entry, f.message);
      else this.fail(id, f.change.entry, f.errno);
    }
    for (const c of changes) {
      const id = entryIdentity(c.entry);
      if (failedIds.has(id)) continue;
      if (this.failing.delete(id)) this.deps.log.info({ entry: describeEntry(c.entry) }, 'entry programmed after earlier failures');
      if (this.collisions.delete(id)) this.collisionsChanged = true;
    }
    this.reportCollisions();
  }

  /** The peer no longer wants the entry: a collision it had there is over. */
  release(id: string, peer: string): void {
    if (this.collisions.get(id)?.peer === peer) this.collisionsChanged = this.collisions.delete(id);
  }

  get failures(): number {
    return this.failing.size;
  }

  /** Readiness: what of ours cannot be programmed, naming one entry and its peer; collisions are not ours. */
  problem(): string | undefined {
    const first = this.failing.entries().next().value;
    if (!first) return undefined;
    const [id, { errno, entry }] = first;
    return `${this.failing.size} datapath entries cannot be programmed, e.g. ${describeEntry(entry)} for peer ${this.deps.ownerOf(id) ?? '-'}: ${errno}`;
  }

  private collide(id: string, entry: DatapathEntry, detail: string): void {
    const peer = this.deps.ownerOf(id);
    if (this.collisions.get(id)?.detail !== detail) {
      this.deps.log.warn({ peer, entry: describeEntry(entry) }, `peer refused: ${detail}`);
      this.collisionsChanged = true;
    }
    this.collisions.set(id, { peer: peer ?? '-', detail });
  }

  private fail(id: string, entry: DatapathEntry, errno: string): void {
    if (this.failing.get(id)?.errno !== errno) this.deps.log.error({ peer: this.deps.ownerOf(id), entry: describeEntry(entry), err: errno }, 'cannot program entry');
    this.failing.set(id, { errno, entry });
  }

  private reportCollisions(): void {
    if (this.collisionsChanged) this.deps.observer?.collisions?.(new Map([...this.collisions.values()].map((c) => [c.peer, c.detail])));
    this.collisionsChanged = false;
  }
}
