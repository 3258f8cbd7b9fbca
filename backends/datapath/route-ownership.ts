/**
 * Whose route holds a destination we want. flanneld only ever replaces or deletes routes of its own protocol
 * (RTPROT_FLANNEL): a route it adds goes in exclusively, and when the kernel answers EEXIST the route already there
 * decides. Ours (an earlier run's) is replaced; one that is exactly what we want (upstream flannel's, or an older
 * flannel-ts's, during a migration) is adopted; anything else (the kernel's connected route, an operator's static
 * route, another daemon's) is a collision: left alone, and the peer that wanted it is reported.
 */
import { describeEntry } from './entry-key.js';
import { entrySatisfies } from '../entry-diff.js';
import type { DatapathEntry } from './datapath.js';

export type RouteEntry = Extract<DatapathEntry, { kind: 'route' }>;

export interface KernelRoute {
  readonly entry: RouteEntry;
  /** RTPROT_* of the route as the kernel holds it. */
  readonly protocol: number;
}

export interface RouteVerdicts {
  /** Wanted routes to write over what is there (ours, or identical to ours). */
  readonly replace: readonly RouteEntry[];
  /** Wanted routes whose destination another owner holds, with a line saying whose. */
  readonly collisions: readonly { readonly wanted: RouteEntry; readonly detail: string }[];
}

const sameDst = (a: RouteEntry, b: RouteEntry): boolean =>
  a.dst.family === b.dst.family && a.dst.ip === b.dst.ip && a.dst.prefixLen === b.dst.prefixLen;

/** `refused`: wanted routes the kernel refused with EEXIST; `kernel`: the main table's unicast routes now. */
export function judgeRouteConflicts(refused: readonly RouteEntry[], kernel: readonly KernelRoute[], ownProtocol: number): RouteVerdicts {
  const replace: RouteEntry[] = [];
  const collisions: { wanted: RouteEntry; detail: string }[] = [];
  for (const wanted of refused) {
    const holders = kernel.filter((k) => sameDst(k.entry, wanted));
    const foreign = holders.find((k) => k.protocol !== ownProtocol && !(entrySatisfies(k.entry, wanted) && entrySatisfies(wanted, k.entry)));
    // With no holder left (it went away meanwhile) the replace simply adds the route.
    if (foreign) collisions.push({ wanted, detail: `${describeEntry(wanted)} collides with ${describeEntry(foreign.entry)} proto ${foreign.protocol}, a route flanneld did not make; left alone` });
    else replace.push(wanted);
  }
  return { replace, collisions };
}
