#!/usr/bin/env node
/**
 * Serves the NetlinkDatapath over stdin/stdout JSON lines. Tests start it with `ip netns exec <ns>` so the
 * rtnetlink sockets live in that namespace: the test runner itself never opens one in the root namespace.
 */
import { createInterface } from 'node:readline';
import { NetlinkDatapath } from '../../backends/datapath/netlink-datapath.js';
import { decodeJson, encodeJson } from './json-bigint.js';

interface Call {
  readonly id: number;
  readonly method: string;
  readonly args: unknown[];
}

const datapath = new NetlinkDatapath();
const stopEvents = new AbortController();
const write = (msg: unknown): void => {
  process.stdout.write(`${encodeJson(msg)}\n`);
};

async function handle(call: Call): Promise<unknown> {
  switch (call.method) {
    case 'events': {
      void (async () => {
        for await (const event of datapath.events(stopEvents.signal)) write({ event });
      })();
      return null;
    }
    case 'link':
    case 'ensureVxlan':
    case 'deleteLink':
    case 'configureLink':
    case 'ensureAddress':
    case 'apply':
    case 'ensureBlackhole':
    case 'dump': {
      const fn = (datapath as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>)[call.method];
      return (await fn?.apply(datapath, call.args)) ?? null;
    }
    default:
      throw new Error(`unknown method ${call.method}`);
  }
}

const lines = createInterface({ input: process.stdin });
lines.on('line', (line) => {
  const call = decodeJson(line) as Call;
  handle(call).then(
    (result) => write({ id: call.id, result }),
    (err: unknown) => write({ id: call.id, error: err instanceof Error ? err.message : String(err) }),
  );
});
lines.on('close', () => {
  stopEvents.abort();
  datapath.close();
  process.exit(0);
});
write({ ready: true });
