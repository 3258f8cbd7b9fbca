/**
 * Desired entries (from the leases) against actual ones (from a dump) -> the changes that make the kernel match,
 * in an order that never leaves a route pointing at a neighbour the kernel would have to resolve. Linear in the
 * number of entries (maps keyed by identity), so a 5000-peer resync is one cheap pass.
 */
import { sameIp } from '../flanneld/ip/address.js';
import { containsNet, sameNet } from '../flanneld/ip/cidr.js';
import type { DatapathChange, DatapathEntry, DatapathScope, EntryKind } from './datapath/datapath.js';
import { entryIdentity } from './datapath/entry-key.js';

/** Later entries win when two share an identity, as a later replace would in the kernel. */
export function entriesByIdentity(entries: readonly DatapathEntry[]): Map<string, DatapathEntry> {
  const byId = new Map<string, DatapathEntry>();
  for (const entry of entries) byId.set(entryIdentity(entry), entry);
  return byId;
}

/**
 * True when `actual` already is what `desired` asks for. Route fields the desired entry leaves unset (device,
 * gateway, onlink) are the kernel's choice, so any actual value satisfies them.
 */
export function entrySatisfies(desired: DatapathEntry, actual: DatapathEntry): boolean {
  switch (desired.kind) {
    case 'route':
      return (
        actual.kind === 'route' &&
        sameNet(desired.dst, actual.dst) &&
        (desired.via === undefined || sameIp(desired.via, actual.via)) &&
        (desired.linkIndex === undefined || desired.linkIndex === actual.linkIndex) &&
        (desired.onlink === undefined || desired.onlink === (actual.onlink ?? false))
      );
    case 'neigh':
      return (
        actual.kind === 'neigh' &&
        desired.linkIndex === actual.linkIndex &&
        sameIp(desired.ip, actual.ip) &&
        desired.mac === actual.mac
      );
    case 'fdb':
      return (
        actual.kind === 'fdb' &&
        desired.linkIndex === actual.linkIndex &&
        desired.mac === actual.mac &&
        sameIp(desired.dst, actual.dst)
      );
  }
}

/** Whether an entry belongs to the network owning `scope` (what a dump returns and a resync may delete). */
export function inScope(entry: DatapathEntry, scope: DatapathScope): boolean {
  if (entry.kind !== 'route') return scope.neighLinks.includes(entry.linkIndex);
  return (
    // Strictly inside: a route for the whole network (udp's TUN route) is not a peer's.
    scope.routeNetworks.some((net) => containsNet(net, entry.dst) && entry.dst.prefixLen > net.prefixLen) &&
    !scope.excludeRoutes.some((net) => containsNet(net, entry.dst))
  );
}

// Deletes first (routes before the neighbours they lean on), then replaces bottom-up: neighbour, FDB, route.
const DELETE_ORDER: readonly EntryKind[] = ['route', 'fdb', 'neigh'];
const REPLACE_ORDER: readonly EntryKind[] = ['neigh', 'fdb', 'route'];

/**
 * Replaces for desired entries missing from `actual` or differing from it, deletes for actual entries whose
 * identity nobody desires. `actual` should already be limited to the network's scope (a dump is).
 */
export function diffEntries(desired: readonly DatapathEntry[], actual: readonly DatapathEntry[]): DatapathChange[] {
  const wanted = entriesByIdentity(desired);
  const present = entriesByIdentity(actual);
  const changes: DatapathChange[] = [];
  for (const [id, entry] of wanted) {
    const current = present.get(id);
    if (current === undefined || !entrySatisfies(entry, current)) changes.push({ op: 'replace', entry });
  }
  for (const [id, entry] of present) {
    if (!wanted.has(id)) changes.push({ op: 'delete', entry });
  }
  return orderChanges(changes);
}

/** Puts any list of changes in the safe order diffEntries uses. */
export function orderChanges(changes: readonly DatapathChange[]): DatapathChange[] {
  const replaces = buckets();
  const deletes = buckets();
  for (const c of changes) (c.op === 'delete' ? deletes : replaces)[c.entry.kind].push(c);
  return [...DELETE_ORDER.flatMap((kind) => deletes[kind]), ...REPLACE_ORDER.flatMap((kind) => replaces[kind])];
}

function buckets(): Record<EntryKind, DatapathChange[]> {
  return { route: [], neigh: [], fdb: [] };
}
