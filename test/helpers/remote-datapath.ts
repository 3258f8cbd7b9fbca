/** A Datapath whose calls run in a child process inside a test namespace (see test/drivers/datapath-rpc.ts). */
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import type { Datapath, DatapathEvent } from '../../backends/datapath/datapath.js';
import { AsyncQueue } from '../../flanneld/runtime/async-queue.js';
import { decodeJson, encodeJson } from '../drivers/json-bigint.js';
import { spawnTracked, type TrackedProcess } from './processes.js';

const DRIVER = fileURLToPath(new URL('../../dist/test/drivers/datapath-rpc.js', import.meta.url));

export interface RemoteDatapath extends Datapath {
  readonly process: TrackedProcess;
  close(): Promise<void>;
}

export async function startRemoteDatapath(netns: string): Promise<RemoteDatapath> {
  const proc = spawnTracked('ip', ['netns', 'exec', netns, process.execPath, DRIVER], { stdio: ['pipe', 'pipe', 'pipe'] }, DRIVER);
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  const events = new AsyncQueue<DatapathEvent>();
  let nextId = 1;
  let ready: () => void = () => undefined;
  const readyP = new Promise<void>((r) => (ready = r));
  createInterface({ input: proc.child.stdout! }).on('line', (line) => {
    const msg = decodeJson(line) as { id?: number; result?: unknown; error?: string; event?: DatapathEvent; ready?: boolean };
    if (msg.ready) ready();
    else if (msg.event) events.push(msg.event);
    else if (msg.id !== undefined) {
      const p = pending.get(msg.id);
      pending.delete(msg.id);
      if (msg.error !== undefined) p?.reject(new Error(msg.error));
      else p?.resolve(msg.result);
    }
  });
  void proc.exited.then(() => {
    for (const p of pending.values()) p.reject(new Error(`datapath driver exited: ${proc.output().slice(-500)}`));
    events.end();
  });
  await Promise.race([readyP, proc.exited.then(() => Promise.reject(new Error(`driver failed: ${proc.output()}`)))]);
  const call = (method: string, ...args: unknown[]): Promise<never> =>
    new Promise((resolve, reject) => {
      const id = nextId++;
      pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      proc.child.stdin!.write(`${encodeJson({ id, method, args })}\n`);
    });
  return {
    process: proc,
    link: (name) => call('link', name),
    ensureVxlan: (spec) => call('ensureVxlan', spec),
    deleteLink: (index) => call('deleteLink', index),
    configureLink: (index, mtu) => call('configureLink', index, mtu),
    ensureAddress: (index, wanted, within) => call('ensureAddress', index, wanted, within),
    apply: (changes) => call('apply', changes),
    ensureBlackhole: (dst) => call('ensureBlackhole', dst),
    dump: (scope) => call('dump', scope),
    events() {
      void call('events');
      return events;
    },
    async close() {
      proc.child.stdin!.end();
      await proc.stop('SIGTERM', 3000);
    },
  };
}
