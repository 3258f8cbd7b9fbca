/**
 * The lab's underlay: a hub namespace bridging 192.0.2.0/24 (a documentation range) and, with IPv6, 2001:db8:2::/64
 * on br0, and one namespace per host with eth0 on that bridge. Everything lives in `ftl-<id>-` namespaces; the root
 * namespace is never touched. Links that carry IPv6 skip duplicate address detection (set per device before the
 * link goes up, addresses added `nodad`): a tentative address or link-local would black-hole the first second.
 */
import { join } from 'node:path';
import { mkdirSync } from 'node:fs';
import { Netns, sh, skipDad } from './netns.js';
import { HUB_IP, HUB_IP6 } from './underlay-addresses.js';
import type { LabStack } from './lab-args.js';
import { labDir, labNetns, type HostRecord } from './lab-state.js';

export async function createNetns(name: string): Promise<Netns> {
  await sh('ip', ['netns', 'add', name]);
  const ns = new Netns(name);
  await ns.ip('link', 'set', 'lo', 'up');
  return ns;
}

/** The underlay segment(s), as the progress line shows them. */
export const underlayText = (stack: LabStack): string =>
  stack === 'v4' ? '192.0.2.0/24' : stack === 'dual' ? '192.0.2.0/24 + 2001:db8:2::/64' : '2001:db8:2::/64';

const hostIp4 = (index: number): string => `192.0.2.${index}`;
const hostIp6 = (index: number): string => `2001:db8:2::${index.toString(16)}`;

/** Host N's underlay addresses in the lab's families: 192.0.2.N and/or 2001:db8:2::<N in hex>. */
export function hostAddresses(index: number, stack: LabStack): { ip: string; ip6?: string } {
  if (stack === 'v4') return { ip: hostIp4(index) };
  return { ip: stack === 'v6' ? hostIp6(index) : hostIp4(index), ip6: hostIp6(index) };
}

/** Adds `dev`'s addresses for the lab's families: IPv4 (`/24`) and IPv6 (`/64`, without DAD). */
async function addAddresses(ns: Netns, dev: string, stack: LabStack, ip4: string, ip6: string): Promise<void> {
  if (stack !== 'v6') await ns.ip('addr', 'add', `${ip4}/24`, 'dev', dev);
  if (stack !== 'v4') await ns.ip('addr', 'add', `${ip6}/64`, 'dev', dev, 'nodad');
}

export async function createHub(id: string, stack: LabStack): Promise<Netns> {
  const hub = await createNetns(labNetns(id, 'hub'));
  await hub.ip('link', 'add', 'br0', 'type', 'bridge');
  if (stack !== 'v4') await skipDad(hub, 'br0');
  await addAddresses(hub, 'br0', stack, HUB_IP, HUB_IP6);
  await hub.ip('link', 'set', 'br0', 'up');
  return hub;
}

export async function createHost(id: string, index: number, stack: LabStack): Promise<HostRecord> {
  const name = `h${index}`;
  const host = await createNetns(labNetns(id, name));
  const hub = new Netns(labNetns(id, 'hub'));
  await host.ip('link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', name, 'netns', hub.name);
  if (stack !== 'v4') {
    await skipDad(host, 'eth0');
    await skipDad(hub, name);
  }
  await addAddresses(host, 'eth0', stack, hostIp4(index), hostIp6(index));
  await host.ip('link', 'set', 'eth0', 'up');
  if (stack !== 'v6') await host.ip('route', 'add', 'default', 'via', HUB_IP);
  // flanneld finds each family's public address through that family's default route.
  if (stack !== 'v4') await host.ip('-6', 'route', 'add', 'default', 'via', HUB_IP6);
  await host.exec('sysctl', ['-qw', 'net.ipv4.ip_forward=1', ...(stack !== 'v4' ? ['net.ipv6.conf.all.forwarding=1'] : [])]);
  await hub.ip('link', 'set', name, 'master', 'br0', 'up');
  const dir = join(labDir(id), name);
  mkdirSync(dir, { recursive: true });
  return { name, ...hostAddresses(index, stack), netns: host.name, dir };
}
