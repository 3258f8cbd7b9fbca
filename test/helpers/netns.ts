/**
 * Network namespaces owned by one test run: every name starts with `fts-<runner pid>-`, so a later run can tell
 * which leftovers belong to runs that died and remove exactly those. Nothing here touches the root namespace.
 */
import { readdirSync } from 'node:fs';
import { Netns, sh } from '../../lab/netns.js';
import { isAlive } from './processes.js';

export { Netns, sh };

export const NETNS_PREFIX = 'fts-';

export class NetnsRun {
  private readonly created: Netns[] = [];
  private readonly stoppers: (() => Promise<void>)[] = [];
  readonly prefix: string;

  constructor(tag = 't') {
    this.prefix = `${NETNS_PREFIX}${process.pid}-${tag}-`;
  }

  async create(shortName: string): Promise<Netns> {
    const ns = new Netns(this.prefix + shortName);
    await sh('ip', ['netns', 'add', ns.name]);
    this.created.push(ns);
    await ns.ip('link', 'set', 'lo', 'up');
    return ns;
  }

  /** Runs `stop` at cleanup before any namespace goes (newest first): for daemons living in this run's namespaces. */
  onCleanup(stop: () => Promise<void>): void {
    this.stoppers.push(stop);
  }

  /** Deletes one namespace of this run before cleanup, e.g. so that its short name can be created again. */
  async remove(ns: Netns): Promise<void> {
    const at = this.created.indexOf(ns);
    if (at >= 0) this.created.splice(at, 1);
    await sh('ip', ['netns', 'del', ns.name]).catch(() => undefined);
  }

  /** Stops what onCleanup registered, then removes every namespace this run made; safe to call twice. */
  async cleanup(): Promise<void> {
    for (const stop of this.stoppers.splice(0).reverse()) await stop().catch(() => undefined);
    for (const ns of this.created.splice(0).reverse()) {
      await sh('ip', ['netns', 'del', ns.name]).catch(() => undefined);
    }
  }
}

/** Deletes namespaces left by earlier runs whose runner process is gone. */
export async function removeStaleNamespaces(): Promise<void> {
  let names: string[] = [];
  try {
    names = readdirSync('/run/netns');
  } catch {
    return;
  }
  for (const name of names) {
    const m = /^fts-(\d+)-/.exec(name);
    if (!m) continue;
    const pid = Number(m[1]);
    if (pid === process.pid || isAlive(pid)) continue;
    await sh('ip', ['netns', 'del', name]).catch(() => undefined);
  }
}


/**
 * Two namespaces joined by a veth pair: `host` gets `hostAddr/24` and a default route via `peerAddr`, so it looks
 * like a node on an underlay (192.0.2.0/24, a documentation range).
 */
export async function linkPair(host: Netns, peer: Netns, hostAddr: string, peerAddr: string, prefixLen = 24): Promise<void> {
  const a = 'eth0';
  const b = `v${host.name.slice(-8)}`.slice(0, 15);
  await host.ip('link', 'add', a, 'type', 'veth', 'peer', 'name', b, 'netns', peer.name);
  await host.ip('addr', 'add', `${hostAddr}/${prefixLen}`, 'dev', a);
  await host.ip('link', 'set', a, 'up');
  await peer.ip('addr', 'add', `${peerAddr}/${prefixLen}`, 'dev', b);
  await peer.ip('link', 'set', b, 'up');
  await host.ip('route', 'add', 'default', 'via', peerAddr);
}
