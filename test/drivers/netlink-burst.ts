#!/usr/bin/env node
/**
 * A NetlinkDatapath whose event loop the test can stall, for the overrun test (test/real/netlink-overrun.test.ts).
 * Started with `ip netns exec <ns>`, so its netlink sockets live in the test namespace. JSON lines on stdin/stdout:
 * { id, method, args } in, { id, result } or { id, error } out. It subscribes to events at start and counts them
 * here rather than streaming every one of a 100,000-notice burst back to the runner.
 *
 *   block(flagPath, maxMs)  answers at once, then stalls the event loop (a synchronous wait) until flagPath
 *                           exists or maxMs passed, as a long garbage collection or a huge JSON parse would
 *   stats()                 event counts, the datapath's netlinkStats(), the last stall and the deleted routes
 *                           seen most recently
 *   apply(changes), link(name)   the datapath's own calls, to show it still works after the burst
 */
import { existsSync, writeSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { NetlinkDatapath } from '../../backends/datapath/netlink-datapath.js';
import type { DatapathChange } from '../../backends/datapath/datapath.js';
import { formatCidr } from '../../flanneld/ip/cidr.js';
import { decodeJson, encodeJson } from './json-bigint.js';

interface Call {
  readonly id: number;
  readonly method: string;
  readonly args: unknown[];
}

const RECENT = 64;
const datapath = new NetlinkDatapath();
const stopEvents = new AbortController();
const counts = { overrun: 0, entryDeleted: 0, linkDeleted: 0 };
const recentDeletedRoutes: string[] = [];
let lastBlock: { blockedMs: number; flagSeen: boolean } | undefined;

// Synchronous, so an answer written just before a stall is out before the loop stops.
const write = (msg: unknown): void => {
  writeSync(1, `${encodeJson(msg)}\n`);
};

void (async () => {
  for await (const event of datapath.events(stopEvents.signal)) {
    if (event.type === 'overrun') counts.overrun++;
    else if (event.type === 'link-deleted') counts.linkDeleted++;
    else {
      counts.entryDeleted++;
      if (event.entry.kind === 'route') {
        recentDeletedRoutes.push(formatCidr(event.entry.dst));
        if (recentDeletedRoutes.length > RECENT) recentDeletedRoutes.shift();
      }
    }
  }
})();

/** Blocks this thread without spinning: Atomics.wait on a private buffer nobody notifies, in 10 ms steps. */
function stall(flagPath: string, maxMs: number): void {
  const cell = new Int32Array(new SharedArrayBuffer(4));
  const started = Date.now();
  let flagSeen = false;
  for (let i = 0; i < Math.ceil(maxMs / 10) + 1; i++) {
    if (existsSync(flagPath)) {
      flagSeen = true;
      break;
    }
    if (Date.now() - started >= maxMs) break;
    Atomics.wait(cell, 0, 0, 10);
  }
  lastBlock = { blockedMs: Date.now() - started, flagSeen };
}

async function handle(call: Call): Promise<unknown> {
  switch (call.method) {
    case 'block': {
      const [flagPath, maxMs] = call.args as [string, number];
      write({ id: call.id, result: 'blocking' });
      stall(flagPath, maxMs);
      return undefined;
    }
    case 'stats':
      return {
        counts: { ...counts },
        netlink: datapath.netlinkStats(),
        lastBlock,
        recentDeletedRoutes: [...recentDeletedRoutes],
        rssBytes: process.memoryUsage().rss,
      };
    case 'apply':
      return datapath.apply(call.args[0] as DatapathChange[]);
    case 'link':
      return (await datapath.link(call.args[0] as string)) ?? null;
    default:
      throw new Error(`unknown method ${call.method}`);
  }
}

const lines = createInterface({ input: process.stdin });
lines.on('line', (line) => {
  const call = decodeJson(line) as Call;
  handle(call).then(
    (result) => {
      if (result !== undefined) write({ id: call.id, result });
    },
    (err: unknown) => write({ id: call.id, error: err instanceof Error ? err.message : String(err) }),
  );
});
lines.on('close', () => {
  stopEvents.abort();
  datapath.close();
  process.exit(0);
});
write({ ready: true });
