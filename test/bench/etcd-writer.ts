#!/usr/bin/env node
/**
 * Writes to the hub's etcd from inside the hub namespace (the benchmark process, in the root namespace, cannot
 * reach it): JSON lines on stdin, one reply line per request on stdout. Bulk puts go as transactions of 128
 * operations (etcd's default --max-txn-ops), a few in flight; a single put is one plain Put, so the benchmark can
 * time a lease change from the moment it asks for it. Usage: etcd-writer.js <endpoint>
 */
import { createInterface } from 'node:readline';
import { Etcd3, type IRequestOp } from 'etcd3';

interface Request {
  readonly id: number;
  readonly op: 'put' | 'del';
  readonly kvs?: readonly (readonly [string, string])[];
  readonly keys?: readonly string[];
}

const TXN_OPS = 128;
const IN_FLIGHT = 4;

const endpoint = process.argv[2];
if (!endpoint) {
  process.stderr.write('usage: etcd-writer.js <endpoint>\n');
  process.exit(2);
}
const client = new Etcd3({ hosts: endpoint });
const reply = (msg: object): void => {
  process.stdout.write(`${JSON.stringify(msg)}\n`);
};

async function inTxns(ops: IRequestOp[]): Promise<void> {
  const chunks: IRequestOp[][] = [];
  for (let i = 0; i < ops.length; i += TXN_OPS) chunks.push(ops.slice(i, i + TXN_OPS));
  let next = 0;
  const worker = async (): Promise<void> => {
    for (let i = next++; i < chunks.length; i = next++) await client.kv.txn({ compare: [], success: chunks[i] as IRequestOp[], failure: [] });
  };
  await Promise.all(Array.from({ length: Math.min(IN_FLIGHT, chunks.length) }, worker));
}

async function handle(req: Request): Promise<void> {
  if (req.op === 'put') {
    const kvs = req.kvs ?? [];
    if (kvs.length === 1) {
      const [key, value] = kvs[0] as readonly [string, string];
      await client.kv.put({ key: Buffer.from(key), value: Buffer.from(value) });
    } else {
      await inTxns(kvs.map(([key, value]) => ({ request_put: { key: Buffer.from(key), value: Buffer.from(value) } })));
    }
  } else {
    await inTxns((req.keys ?? []).map((key) => ({ request_delete_range: { key: Buffer.from(key) } })));
  }
}

const lines = createInterface({ input: process.stdin });
lines.on('line', (line) => {
  const req = JSON.parse(line) as Request;
  handle(req).then(
    () => reply({ id: req.id, ok: true }),
    (err: unknown) => reply({ id: req.id, error: err instanceof Error ? err.message : String(err) }),
  );
});
lines.on('close', () => {
  client.close();
  process.exit(0);
});
client
  .get('/coreos.com/network/config')
  .string()
  .then(
    () => reply({ ready: true }),
    (err: unknown) => {
      process.stderr.write(`etcd-writer: cannot reach ${endpoint}: ${String(err)}\n`);
      process.exit(1);
    },
  );
