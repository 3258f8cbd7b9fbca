/**
 * The wiring of a BGP router on the underlay, shared by the lab's `up --bgp` and the tests' routers: the router's
 * namespace on the hub's br0 (ROUTER_IP, ROUTER_IP6) with an office segment behind it (OFFICE_NET, OFFICE_NET6), and
 * the hub sending the office's networks to the router, as a site's core router would. Namespaces come from the
 * caller, so each names and removes its own.
 */
import type { Family } from '../flanneld/ip/address.js';
import { forwardAll, skipDad, type Netns } from './netns.js';
import {
  OFFICE_GATEWAY, OFFICE_GATEWAY6, OFFICE_IP, OFFICE_IP6, OFFICE_NET, OFFICE_NET6, ROUTER_IP, ROUTER_IP6,
} from './underlay-addresses.js';

/** The hub's end of the router's link to br0. */
export const ROUTER_HUB_SIDE = 'vrtr';
/**
 * Every router has the same MAC on br0: the hub and the nodes keep the previous router's neighbor entry for its
 * address for up to a minute, and with a new MAC behind it they would black-hole what they send there.
 */
const ROUTER_MAC = '02:00:c0:00:02:fa';

/** One address per family: IPv4 with its /24, IPv6 with its /64. */
type Addresses = Readonly<Record<Family, string>>;

/**
 * The router's eth0 on br0 and its eth1 to the office, the office's default routes through it, forwarding on in the
 * router; each in the `families` given.
 */
export async function wireRouter(hub: Netns, router: Netns, office: Netns, families: readonly Family[]): Promise<void> {
  await pinBridgeAddress(hub, 'br0');
  await hub.ip('link', 'add', ROUTER_HUB_SIDE, 'type', 'veth', 'peer', 'name', 'eth0', 'address', ROUTER_MAC, 'netns', router.name);
  await hub.ip('link', 'set', ROUTER_HUB_SIDE, 'master', 'br0', 'up');
  await router.ip('link', 'add', 'eth1', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', office.name);
  await addressLink(router, 'eth0', families, { 4: `${ROUTER_IP}/24`, 6: `${ROUTER_IP6}/64` });
  await addressLink(router, 'eth1', families, { 4: `${OFFICE_GATEWAY}/24`, 6: `${OFFICE_GATEWAY6}/64` });
  await addressLink(office, 'eth0', families, { 4: `${OFFICE_IP}/24`, 6: `${OFFICE_IP6}/64` });
  if (families.includes(4)) await office.ip('route', 'add', 'default', 'via', OFFICE_GATEWAY);
  if (families.includes(6)) await office.ip('-6', 'route', 'add', 'default', 'via', OFFICE_GATEWAY6);
  await forwardAll(router);
}

/**
 * A bridge whose address was never set takes its lowest port's, so adding or removing the router's port could change
 * the hub's MAC under the nodes' neighbor entries for it (their default gateway) and black-hole their replies until
 * those expire. Setting the address it has now keeps it whatever ports come and go.
 */
async function pinBridgeAddress(hub: Netns, bridge: string): Promise<void> {
  const links = JSON.parse(await hub.ip('-j', 'link', 'show', 'dev', bridge)) as { address?: unknown }[];
  const mac = links[0]?.address;
  if (typeof mac !== 'string') throw new Error(`no address on ${bridge} in ${hub.name}`);
  await hub.ip('link', 'set', bridge, 'address', mac);
}

/** The families' addresses on `dev`, IPv6 without duplicate address detection (see docs/lab.md), then the link up. */
async function addressLink(ns: Netns, dev: string, families: readonly Family[], addresses: Addresses): Promise<void> {
  if (families.includes(6)) await skipDad(ns, dev);
  for (const family of families) await ns.ip('addr', 'add', addresses[family], 'dev', dev, ...(family === 6 ? ['nodad'] : []));
  await ns.ip('link', 'set', dev, 'up');
}

/** A hub route, with how to undo it. */
export interface HubRoute {
  readonly add: readonly string[];
  readonly del: readonly string[];
}

/**
 * Pods answer the office through their host's default route, the hub, so the hub forwards and sends the office's
 * networks (of `families`) to the router. Returns the routes added, for callers that remove them before the hub goes.
 */
export async function routeOfficeThroughRouter(hub: Netns, families: readonly Family[]): Promise<HubRoute[]> {
  const routes: HubRoute[] = [];
  if (families.includes(4)) routes.push({ add: ['route', 'replace', OFFICE_NET, 'via', ROUTER_IP], del: ['route', 'del', OFFICE_NET] });
  if (families.includes(6)) routes.push({ add: ['-6', 'route', 'replace', OFFICE_NET6, 'via', ROUTER_IP6], del: ['-6', 'route', 'del', OFFICE_NET6] });
  await forwardAll(hub);
  for (const route of routes) await hub.ip(...route.add);
  return routes;
}
