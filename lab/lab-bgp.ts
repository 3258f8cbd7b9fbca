/**
 * The lab's `up --bgp`: a BIRD 2 router (`ftl-<id>-router`) on the underlay, iBGP in AS 64512 with a passive
 * neighbour per host address, installing what the hosts' flanneld announce in its own kernel table; an office host
 * (`ftl-<id>-office`) behind it, on no node, whose only way to the pods is what the router learnt. Its files live in
 * `.lab/<id>/router`; BIRD is one of the lab's tracked processes (`router`).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Family } from '../flanneld/ip/address.js';
import { birdAnswers, birdArgv, birdcAt, birdFiles, birdPeers, birdRouterConfig, birdRoutes, type RouterRoute } from './bird-config.js';
import { isRunning, logTail, startDetached } from './lab-processes.js';
import { markdownTable, readSubnetEnv } from './lab-report.js';
import { formatCidr, parseCidr } from '../flanneld/ip/cidr.js';
import { addressOf, labDir, labNetns, stackFamilies, type HostRecord, type LabBgp, type LabState, type PodRecord, type ProcessRecord } from './lab-state.js';
import type { LabStack } from './lab-args.js';
import { createNetns, hostAddresses } from './lab-underlay.js';
import { Netns } from './netns.js';
import { routeOfficeThroughRouter, wireRouter } from './router-segments.js';
import { OFFICE_IP, OFFICE_IP6, OFFICE_NET, OFFICE_NET6, ROUTER_IP, ROUTER_IP6 } from './underlay-addresses.js';

/** The lab's AS, the router's and every host's: iBGP, so the router takes the hosts' next hops as they are. */
export const LAB_AS = 64512;
/** The name of BIRD among the lab's processes (`kill router`, `restart router`) and the router's short netns name. */
export const ROUTER = 'router';
export const OFFICE = 'office';
/** What flanneld is told (--bgp-graceful-restart-time's default) and the router keeps stale routes for. */
const GRACEFUL_RESTART_SEC = 120;

const routerDir = (id: string): string => join(labDir(id), ROUTER);
const socketOf = (id: string): string => birdFiles(routerDir(id)).socket;

const pick = <T>(families: readonly Family[], v4: T, v6: T): T[] => families.map((f) => (f === 4 ? v4 : v6));

/** The hosts' underlay addresses, every family of the lab: the router's passive neighbours. */
export function labBgpNeighbors(hosts: number, stack: LabStack): string[] {
  const families = stackFamilies(stack);
  return Array.from({ length: hosts }, (_, i) => hostAddresses(i + 1, stack)).flatMap((h) => families.map((f) => addressOf(h, f) as string));
}

export function labBirdConfig(bgp: LabBgp): string {
  const neighbors = bgp.neighbors.map((address) => ({ address, remoteAs: bgp.as, passive: true }));
  return birdRouterConfig({ localAs: bgp.as, routerId: ROUTER_IP, neighbors, gracefulRestart: { restartTimeSec: GRACEFUL_RESTART_SEC } });
}

/** The flags every host's flanneld gets on top of the lab's own: peer with the router, leave the office unmasqueraded. */
export function bgpFlanneldArgs(stack: LabStack): string[] {
  const families = stackFamilies(stack);
  const peers = pick(families, ROUTER_IP, ROUTER_IP6).map((address) => `${address};as=${LAB_AS}`);
  return [`--bgp-as=${LAB_AS}`, `--bgp-peers=${peers.join(',')}`, `--ip-masq-exclude=${pick(families, OFFICE_NET, OFFICE_NET6).join(',')}`];
}

/** The router and office as the progress line names them. */
export function describeRouter(id: string, stack: LabStack): string {
  const families = stackFamilies(stack);
  return `BGP router ${labNetns(id, ROUTER)} (BIRD, AS ${LAB_AS}, ${pick(families, ROUTER_IP, ROUTER_IP6).join(', ')}) `
    + `and office ${labNetns(id, OFFICE)} (${pick(families, OFFICE_IP, OFFICE_IP6).join(', ')}) behind it`;
}

/**
 * The router's and the office's namespaces wired to the hub, the hub's routes to the office, and BIRD started (and
 * answering) with a neighbour per host address; recorded as `state.processes.router`.
 */
export async function startLabRouter(state: LabState & { bgp: LabBgp }, save: () => void): Promise<void> {
  const families = stackFamilies(state.stack);
  const hub = new Netns(labNetns(state.id, 'hub'));
  const router = await createNetns(labNetns(state.id, ROUTER));
  const office = await createNetns(labNetns(state.id, OFFICE));
  await wireRouter(hub, router, office, families);
  await routeOfficeThroughRouter(hub, families);
  const dir = routerDir(state.id);
  mkdirSync(dir, { recursive: true });
  writeFileSync(birdFiles(dir).conf, labBirdConfig(state.bgp));
  state.processes[ROUTER] = startDetached(router.name, birdArgv(dir), join(dir, 'bird.log'));
  save();
  await waitForRouter(state.id, state.processes[ROUTER]);
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Until BIRD answers on its socket; fails at once, with its log, if it exits. */
export async function waitForRouter(id: string, record: ProcessRecord, timeoutMs = 10_000): Promise<void> {
  for (const deadline = Date.now() + timeoutMs; !(await birdAnswers(socketOf(id))); await sleep(100)) {
    if (!isRunning(record)) throw new Error(`bird exited; the end of ${record.log}:\n${logTail(record.log)}`);
    if (Date.now() > deadline) throw new Error(`bird does not answer on ${socketOf(id)} after ${timeoutMs} ms; see ${record.log}`);
  }
}

export const routerRoutes = (state: LabState & { bgp: LabBgp }): Promise<RouterRoute[]> =>
  birdRoutes((...command) => birdcAt(socketOf(state.id), ...command), birdPeers(state.bgp.neighbors.map((address) => ({ address }))));

/** The subnets the hosts' subnet.env name (the network, not the gateway address in the file): what each announces. */
export function hostSubnets(hosts: readonly HostRecord[]): string[] {
  const subnets = hosts.flatMap((h) => [readSubnetEnv(h).get('FLANNEL_SUBNET'), readSubnetEnv(h).get('FLANNEL_IPV6_SUBNET')]);
  return subnets.flatMap((s) => {
    const net = s === undefined ? undefined : parseCidr(s);
    return net ? [formatCidr(net)] : [];
  });
}

/** Until the router holds every subnet in `subnets` (each host's, both families); how many it holds by then. */
export async function waitForRoutes(state: LabState & { bgp: LabBgp }, subnets: readonly string[], timeoutMs = 30_000): Promise<number> {
  for (const deadline = Date.now() + timeoutMs; ; await sleep(200)) {
    const learnt = new Set((await routerRoutes(state).catch(() => [])).map((r) => r.prefix));
    const missing = subnets.filter((s) => !learnt.has(s));
    if (missing.length === 0) return learnt.size;
    if (Date.now() > deadline) throw new Error(`the router has not learnt ${missing.join(', ')} after ${timeoutMs} ms; see ${join(routerDir(state.id), 'bird.log')} and the hosts' flanneld.log`);
  }
}

/** The office as a source of the ping matrix: one more row, "office", to every pod. */
export function officeSource(state: Pick<LabState, 'id' | 'stack'>): PodRecord {
  const addresses = state.stack === 'v4' ? { ip: OFFICE_IP } : state.stack === 'dual' ? { ip: OFFICE_IP, ip6: OFFICE_IP6 } : { ip: OFFICE_IP6, ip6: OFFICE_IP6 };
  return { name: OFFICE, host: OFFICE, netns: labNetns(state.id, OFFICE), ...addresses };
}

/** The router's routes, prefix via next hop, with the host each came from (and "stale" while that host restarts). */
export function routesTable(routes: readonly RouterRoute[], hosts: readonly HostRecord[]): string {
  const hostOf = (address: string): string => hosts.find((h) => h.ip === address || h.ip6 === address)?.name ?? address;
  const rows = [...routes].sort((a, b) => a.prefix.localeCompare(b.prefix, 'en', { numeric: true }))
    .map((r) => [r.prefix, r.nextHop, hostOf(r.fromPeer), r.stale ? 'stale (graceful restart)' : 'learnt']);
  return markdownTable([`the router's routes (BIRD, AS ${LAB_AS})`, 'via', 'from', 'state'], rows);
}

/** The routes table, or why there is none (BIRD stopped or not answering). */
export async function routerReport(state: LabState & { bgp: LabBgp }): Promise<string> {
  const record = state.processes[ROUTER];
  if (!record || !isRunning(record)) return 'the router (BIRD) is stopped; its routes unknown';
  const routes = await routerRoutes(state).catch((err: Error) => err);
  return routes instanceof Error ? `the router does not answer: ${routes.message}` : routesTable(routes, state.hosts);
}

/** How to look at the router by hand; `idFlag` is ` --id <id>` or empty. */
export const routerHint = (state: Pick<LabState, 'id'>, idFlag: string): string =>
  `the router: npm run lab -- exec ${ROUTER}${idFlag} -- birdc -s ${socketOf(state.id)} show route · its log ${join(routerDir(state.id), 'bird.log')}`;
