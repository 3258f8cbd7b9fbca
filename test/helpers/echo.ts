/**
 * A UDP echo server that records each sender's address (the masquerade proof), and a one-shot client, both run
 * with node inside test namespaces. Bounded: the client waits at most `timeoutMs` for its reply.
 */
import type { Netns } from './netns.js';
import { spawnTracked, waitFor, type TrackedProcess } from './processes.js';

const SERVER = `
const d = require('dgram').createSocket(process.argv[2] === '6' ? { type: 'udp6', ipv6Only: true } : 'udp4');
d.on('message', (m, r) => { process.stdout.write('from ' + r.address + '\\n'); d.send(m, r.port, r.address); });
d.bind(Number(process.argv[1]), () => process.stdout.write('listening\\n'));
`;
const CLIENT = `
const d = require('dgram').createSocket(process.argv[1].includes(':') ? 'udp6' : 'udp4');
const t = setTimeout(() => process.exit(1), Number(process.argv[3]));
d.on('message', () => { clearTimeout(t); process.exit(0); });
d.send('probe', Number(process.argv[2]), process.argv[1]);
`;

export interface UdpEcho {
  readonly process: TrackedProcess;
  /** Sender addresses seen so far, in order. */
  senders(): string[];
  stop(): Promise<void>;
}

/** An echo on `port` of every address of one family in `ns`. */
export async function startUdpEcho(ns: Netns, port: number, family: 4 | 6 = 4): Promise<UdpEcho> {
  const proc = spawnTracked('ip', ['netns', 'exec', ns.name, process.execPath, '-e', SERVER, String(port), String(family)], {}, SERVER.slice(0, 40));
  await waitFor('echo server', () => (proc.output().includes('listening') ? true : undefined), 5000);
  return {
    process: proc,
    senders: () => [...proc.output().matchAll(/^from (\S+)$/gm)].map((m) => m[1] as string),
    stop: async () => {
      await proc.stop('SIGTERM', 1000);
    },
  };
}

/** Sends one datagram and waits for the echo; true when it came back. */
export async function udpProbe(ns: Netns, ip: string, port: number, timeoutMs = 2000): Promise<boolean> {
  return ns.exec(process.execPath, ['-e', CLIENT, ip, String(port), String(timeoutMs)]).then(
    () => true,
    () => false,
  );
}
