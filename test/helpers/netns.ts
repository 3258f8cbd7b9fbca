/**
 * Network namespaces owned by one test run: every name starts with `fts-<runner pid>-`, so a later run can tell
 * which leftovers belong to runs that died and remove exactly those. Nothing here touches the root namespace.
 */
import { execFile } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { promisify } from 'node:util';
import { isAlive } from './processes.js';

const run = promisify(execFile);
export const NETNS_PREFIX = 'fts-';

export async function sh(cmd: string, args: readonly string[], input?: string): Promise<string> {
  try {
    const child = run(cmd, [...args], { maxBuffer: 64 * 1024 * 1024, timeout: 60_000 });
    if (input !== undefined) {
      child.child.stdin?.end(input);
    }
    const { stdout } = await child;
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')}: ${e.stderr?.trim() || e.message}`, { cause: err });
  }
}

export class Netns {
  constructor(readonly name: string) {}

  /** Runs a command inside the namespace. */
  exec(cmd: string, args: readonly string[], input?: string): Promise<string> {
    return sh('ip', ['netns', 'exec', this.name, cmd, ...args], input);
  }

  ip(...args: string[]): Promise<string> {
    return sh('ip', ['-n', this.name, ...args]);
  }
}

export class NetnsRun {
  private readonly created: Netns[] = [];
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

  /** Removes every namespace this run made; safe to call twice. */
  async cleanup(): Promise<void> {
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
