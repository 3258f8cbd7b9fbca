/**
 * An in-memory Datapath with the kernel's observable rules: links get fresh indexes on (re-)creation and take their
 * neighbour, FDB and route entries with them; deleting a missing entry fails (ESRCH for routes, ENOENT for neighbour
 * and FDB, as rtnetlink answers); apply reports failures per change and never throws. Events are only what happens
 * behind the daemon's back (the `...BehindOurBack` helpers and `emit`); changes made through this object are not
 * echoed, so a reconciler test sees exactly the disturbances it set up.
 */
import { sameIp } from '../../flanneld/ip/address.js';
import { containsIp, formatCidr, sameNet, type IpNet } from '../../flanneld/ip/cidr.js';
import { AsyncQueue } from '../../flanneld/runtime/async-queue.js';
import { FlannelError } from '../../flanneld/runtime/errors.js';
import type {
  AddressInfo,
  ApplyFailure,
  ApplyReport,
  Datapath,
  DatapathChange,
  DatapathEntry,
  DatapathEvent,
  DatapathScope,
  LinkInfo,
  Mac,
  VxlanLinkSpec,
} from '../../backends/datapath/datapath.js';
import { describeEntry, entryIdentity } from '../../backends/datapath/entry-key.js';
import { entrySatisfies, inScope } from '../../backends/entry-diff.js';

export interface FailureOptions {
  /** Fail only this kind of change (default: both). */
  readonly op?: DatapathChange['op'];
  /** Fail this many times, then succeed (default: until cleared). */
  readonly times?: number;
}

export interface LinkProps {
  readonly name: string;
  readonly mtu?: number;
  readonly mac?: Mac;
  readonly kind?: string;
}

interface Failure {
  readonly errno: string;
  readonly op: DatapathChange['op'] | undefined;
  remaining: number;
}

interface Subscriber {
  readonly queue: AsyncQueue<DatapathEvent>;
}

export class FakeDatapath implements Datapath {
  /** apply() calls so far. */
  applyCalls = 0;
  /** Changes handed to apply() so far, over all calls. */
  changeCount = 0;
  /** Every apply() batch, in order. */
  readonly batches: (readonly DatapathChange[])[] = [];
  /** Links created by ensureVxlan (a compatible existing device is reused and not counted). */
  vxlanCreations = 0;

  private nextIndex = 1;
  private readonly linkTable = new Map<number, LinkInfo>();
  private readonly addressTable = new Map<number, AddressInfo[]>();
  private readonly entryTable = new Map<string, DatapathEntry>();
  private readonly failures = new Map<string, Failure>();
  private readonly subscribers = new Set<Subscriber>();

  // ---- test-side setup and inspection ----

  /** Adds a plain link (an underlay such as eth0) with the next free index. */
  addLink(props: LinkProps): LinkInfo {
    const index = this.nextIndex++;
    const link: LinkInfo = {
      index,
      name: props.name,
      mtu: props.mtu ?? 1500,
      mac: props.mac ?? `02:00:00:00:${hexOctet(index >> 8)}:${hexOctet(index)}`,
      up: true,
      ...(props.kind !== undefined ? { kind: props.kind } : {}),
    };
    this.linkTable.set(index, link);
    return link;
  }

  addAddress(info: AddressInfo): void {
    this.addressTable.set(info.linkIndex, [...(this.addressTable.get(info.linkIndex) ?? []), info]);
  }

  get links(): readonly LinkInfo[] {
    return [...this.linkTable.values()];
  }

  /** Every entry the "kernel" holds, in or out of any scope. */
  get entries(): readonly DatapathEntry[] {
    return [...this.entryTable.values()];
  }

  entry(identity: string): DatapathEntry | undefined {
    return this.entryTable.get(identity);
  }

  /** Seeds kernel state (e.g. leftovers of an earlier run) without counting as an apply. */
  put(...entries: readonly DatapathEntry[]): void {
    for (const entry of entries) this.entryTable.set(entryIdentity(entry), entry);
  }

  /** Makes changes to the entry with this identity fail with `errno` (e.g. "ENETUNREACH"). */
  failEntry(identity: string, errno: string, options: FailureOptions = {}): void {
    this.failures.set(identity, { errno, op: options.op, remaining: options.times ?? Infinity });
  }

  clearFailures(): void {
    this.failures.clear();
  }

  /** Open event subscriptions, so a test can wait until the code under test listens. */
  get eventSubscribers(): number {
    return this.subscribers.size;
  }

  /** Delivers an event to every subscription, as the kernel's multicast groups do. */
  emit(event: DatapathEvent): void {
    for (const sub of this.subscribers) sub.queue.push(event);
  }

  /** Every open event subscription fails with `err`, as a notification socket that died would. */
  failEvents(err: Error): void {
    for (const sub of this.subscribers) sub.queue.fail(err);
    this.subscribers.clear();
  }

  /** Someone else (`ip route del`, a neighbour flush) removed the entry; emits entry-deleted. */
  deleteEntryBehindOurBack(identity: string): DatapathEntry {
    const entry = this.entryTable.get(identity);
    if (!entry) throw new Error(`FakeDatapath: no entry ${identity}`);
    this.entryTable.delete(identity);
    this.emit({ type: 'entry-deleted', entry });
    return entry;
  }

  /** Drift nobody hears about (a notice lost in an overrun): removes the entry without emitting anything. */
  removeSilently(identity: string): DatapathEntry {
    const entry = this.entryTable.get(identity);
    if (!entry) throw new Error(`FakeDatapath: no entry ${identity}`);
    this.entryTable.delete(identity);
    return entry;
  }

  /** Someone else deleted the link: its addresses and entries go with it, and link-deleted is emitted. */
  deleteLinkBehindOurBack(nameOrIndex: string | number): LinkInfo {
    const link = typeof nameOrIndex === 'number' ? this.linkTable.get(nameOrIndex) : this.byName(nameOrIndex);
    if (!link) throw new Error(`FakeDatapath: no link ${nameOrIndex}`);
    this.dropLink(link.index);
    this.emit({ type: 'link-deleted', index: link.index, name: link.name });
    return link;
  }

  // ---- Datapath ----

  async link(name: string): Promise<LinkInfo | undefined> {
    return this.byName(name);
  }

  async ensureVxlan(spec: VxlanLinkSpec): Promise<LinkInfo> {
    const existing = this.byName(spec.name);
    if (existing && vxlanMatches(existing, spec)) return existing;
    if (existing) this.dropLink(existing.index);
    const link: LinkInfo = {
      index: this.nextIndex++,
      name: spec.name,
      mtu: spec.mtu,
      mac: spec.mac,
      up: true,
      kind: 'vxlan',
      vxlan: {
        vni: spec.vni,
        port: spec.port,
        local: spec.local,
        underlayIndex: spec.underlayIndex,
        learning: spec.learning,
        gbp: spec.gbp,
      },
    };
    this.linkTable.set(link.index, link);
    this.vxlanCreations++;
    return link;
  }

  async deleteLink(index: number): Promise<void> {
    if (!this.linkTable.has(index)) throw new FlannelError('ERR_DEVICE', `delete link #${index}: ENODEV`);
    this.dropLink(index);
  }

  async configureLink(index: number, mtu: number): Promise<void> {
    const link = this.linkTable.get(index);
    if (!link) throw new FlannelError('ERR_DEVICE', `configure link #${index}: ENODEV`);
    this.linkTable.set(index, { ...link, mtu, up: true });
  }

  async addresses(linkIndex: number): Promise<readonly AddressInfo[]> {
    return [...(this.addressTable.get(linkIndex) ?? [])];
  }

  async ensureAddress(linkIndex: number, wanted: AddressInfo, within: IpNet): Promise<void> {
    if (!this.linkTable.has(linkIndex)) {
      throw new FlannelError('ERR_DEVICE', `address on link #${linkIndex}: ENODEV`);
    }
    const kept = (this.addressTable.get(linkIndex) ?? []).filter(
      (a) => a.address.family !== wanted.address.family || !containsIp(within, a.address) || sameAddress(a, wanted),
    );
    if (!kept.some((a) => sameAddress(a, wanted))) kept.push(wanted);
    this.addressTable.set(linkIndex, kept);
  }

  async apply(changes: readonly DatapathChange[]): Promise<ApplyReport> {
    this.applyCalls++;
    this.changeCount += changes.length;
    this.batches.push([...changes]);
    const failures: ApplyFailure[] = [];
    for (const change of changes) {
      const errno = this.takeFailure(change) ?? this.execute(change);
      if (errno !== undefined) {
        failures.push({ change, errno, message: `${change.op} ${describeEntry(change.entry)}: ${errno}` });
      }
    }
    return { applied: changes.length - failures.length, failures };
  }

  /** Subnets given a blackhole route, in call order (the fake has no route types). */
  readonly blackholes: string[] = [];

  async ensureBlackhole(dst: IpNet): Promise<void> {
    const text = formatCidr(dst);
    if (!this.blackholes.includes(text)) this.blackholes.push(text);
  }

  async dump(scope: DatapathScope): Promise<readonly DatapathEntry[]> {
    return this.entries.filter((entry) => inScope(entry, scope));
  }

  events(signal: AbortSignal): AsyncIterable<DatapathEvent> {
    const sub: Subscriber = { queue: new AsyncQueue<DatapathEvent>() };
    const unsubscribe = (): void => {
      this.subscribers.delete(sub);
      signal.removeEventListener('abort', unsubscribe);
      sub.queue.end();
    };
    // Subscribed at the call, like a netlink socket joining its groups, so nothing emitted afterwards is lost.
    if (signal.aborted) sub.queue.end();
    else {
      this.subscribers.add(sub);
      signal.addEventListener('abort', unsubscribe, { once: true });
    }
    return {
      [Symbol.asyncIterator]: () => {
        const it = sub.queue[Symbol.asyncIterator]();
        return {
          next: () => it.next(),
          return: () => {
            unsubscribe();
            return Promise.resolve({ value: undefined, done: true as const });
          },
        };
      },
    };
  }

  // ---- internals ----

  private byName(name: string): LinkInfo | undefined {
    for (const link of this.linkTable.values()) if (link.name === name) return link;
    return undefined;
  }

  private dropLink(index: number): void {
    this.linkTable.delete(index);
    this.addressTable.delete(index);
    for (const [id, entry] of this.entryTable) if (entry.linkIndex === index) this.entryTable.delete(id);
  }

  private takeFailure(change: DatapathChange): string | undefined {
    const failure = this.failures.get(entryIdentity(change.entry));
    if (!failure || (failure.op !== undefined && failure.op !== change.op) || failure.remaining <= 0) return undefined;
    failure.remaining--;
    return failure.errno;
  }

  /** Carries out one change; returns the errno the kernel would answer with, if any. */
  private execute({ op, entry }: DatapathChange): string | undefined {
    const id = entryIdentity(entry);
    if (op === 'replace') {
      if (entry.linkIndex !== undefined && !this.linkTable.has(entry.linkIndex)) return 'ENODEV';
      this.entryTable.set(id, entry);
      return undefined;
    }
    const current = this.entryTable.get(id);
    // The kernel ignores lladdr when deleting a neighbour but checks every given route and FDB attribute.
    const matches = current !== undefined && (entry.kind === 'neigh' || entrySatisfies(entry, current));
    if (!matches) return entry.kind === 'route' ? 'ESRCH' : 'ENOENT';
    this.entryTable.delete(id);
    return undefined;
  }
}


function hexOctet(n: number): string {
  return (n & 0xff).toString(16).padStart(2, '0');
}

function sameAddress(a: AddressInfo, b: AddressInfo): boolean {
  return sameIp(a.address, b.address) && sameNet(a.cidr, b.cidr);
}

function vxlanMatches(link: LinkInfo, spec: VxlanLinkSpec): boolean {
  const v = link.vxlan;
  return (
    v !== undefined &&
    link.kind === 'vxlan' &&
    link.mtu === spec.mtu &&
    link.mac === spec.mac &&
    v.vni === spec.vni &&
    v.port === spec.port &&
    sameIp(v.local, spec.local) &&
    v.underlayIndex === spec.underlayIndex &&
    v.learning === spec.learning &&
    v.gbp === spec.gbp
  );
}
