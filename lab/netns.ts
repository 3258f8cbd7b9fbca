/**
 * Commands in network namespaces: the lab and the tests build every host and pod as a namespace of their own and
 * never touch the root namespace.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** Runs a command and returns its stdout; fails naming the command and its stderr, or after `timeoutMs`. */
export async function sh(cmd: string, args: readonly string[], input?: string, timeoutMs = 60_000): Promise<string> {
  try {
    const child = run(cmd, [...args], { maxBuffer: 64 * 1024 * 1024, timeout: timeoutMs });
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
  exec(cmd: string, args: readonly string[], input?: string, timeoutMs?: number): Promise<string> {
    return sh('ip', ['netns', 'exec', this.name, cmd, ...args], input, timeoutMs);
  }

  ip(...args: string[]): Promise<string> {
    return sh('ip', ['-n', this.name, ...args]);
  }
}

/** No duplicate address detection on `dev`; set before the link goes up (docs/lab.md, "IPv6 and DAD", says why). */
export async function skipDad(ns: Netns, dev: string): Promise<void> {
  await ns.exec('sysctl', ['-qw', `net.ipv6.conf.${dev}.accept_dad=0`]);
}

/** IPv4 and IPv6 forwarding on in `ns`: for namespaces that route (a hub, a router, a node). */
export async function forwardAll(ns: Netns): Promise<void> {
  await ns.exec('sysctl', ['-qw', 'net.ipv4.ip_forward=1', 'net.ipv6.conf.all.forwarding=1']);
}
