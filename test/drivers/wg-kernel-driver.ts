#!/usr/bin/env node
/**
 * Runs the kernel WgDevice once in the current network namespace and prints one JSON line: what the cheap probe
 * says, how long ensure() took and what it threw (name, code, message). A device it did make is closed again.
 * Tests start it with `ip netns exec <ns>` so the netlink sockets and any link live in that namespace: the test
 * runner itself never opens one in the root namespace.
 *
 *   node dist/test/drivers/wg-kernel-driver.js <device name>
 */
import { performance } from 'node:perf_hooks';
import { generateWgPrivateKey, encodeWgKey } from '../../backends/wireguard/wg-key.js';
import { WgKernelDevice, kernelWireguardAvailable, openWgKernelSockets } from '../../backends/wireguard/wg-kernel-device.js';

const name = process.argv[2];
if (!name) {
  process.stderr.write('usage: wg-kernel-driver <device name>\n');
  process.exit(2);
}

const sockets = openWgKernelSockets();
try {
  const available = await kernelWireguardAvailable(sockets.genl);
  const device = new WgKernelDevice(name, sockets);
  const started = performance.now();
  const outcome = await device.ensure({ privateKey: encodeWgKey(generateWgPrivateKey()), listenPort: 51820 }, AbortSignal.timeout(10_000)).then(
    (index) => ({ index }),
    (err: unknown) => ({ error: { name: (err as Error).name, code: (err as { code?: string }).code, message: (err as Error).message } }),
  );
  const ensureMs = performance.now() - started;
  if ('index' in outcome) await device.close();
  process.stdout.write(`${JSON.stringify({ available, ensureMs, ...outcome })}\n`);
} finally {
  sockets.close();
}
