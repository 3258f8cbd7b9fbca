/**
 * The kernel wireguard path on a kernel without the wireguard module (this machine's): inside a throwaway
 * namespace, ensure() must reject with WgKernelUnsupportedError within a second, naming the device and the errno,
 * the probe must say no, and no link may be left behind. The driver (test/drivers/wg-kernel-driver.ts) runs in
 * the namespace. On a kernel that can make wireguard links the test is skipped: it is about the fallback signal.
 */
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NetnsRun, removeStaleNamespaces, type Netns } from '../helpers/netns.js';
import { killStaleTrackedProcesses, spawnTracked, waitFor } from '../helpers/processes.js';

const DRIVER = fileURLToPath(new URL('../../dist/test/drivers/wg-kernel-driver.js', import.meta.url));
const DEVICE = 'flannel-wg';

interface DriverResult {
  readonly available: boolean;
  readonly ensureMs: number;
  readonly index?: number;
  readonly error?: { name: string; code?: string; message: string };
}

const run = new NetnsRun('wgk');
let ns: Netns;
let kernelHasWireguard = false;

beforeAll(async () => {
  killStaleTrackedProcesses();
  await removeStaleNamespaces();
  ns = await run.create('h1');
  // iproute2's own attempt, as a witness of what this kernel can do.
  kernelHasWireguard = await ns.ip('link', 'add', 'wg-witness', 'type', 'wireguard').then(
    () => true,
    () => false,
  );
  if (kernelHasWireguard) await ns.ip('link', 'del', 'wg-witness');
});

afterAll(async () => {
  await run.cleanup();
});

async function runDriver(): Promise<DriverResult> {
  const proc = spawnTracked('ip', ['netns', 'exec', ns.name, process.execPath, DRIVER, DEVICE], {}, DRIVER);
  try {
    const code = await waitFor('wg-kernel-driver to exit', () => proc.child.exitCode ?? proc.child.signalCode ?? undefined, 30_000);
    expect(code, proc.output()).toBe(0);
  } finally {
    await proc.stop('SIGKILL');
  }
  const line = proc.output().split('\n').find((l) => l.startsWith('{'));
  if (!line) throw new Error(`wg-kernel-driver printed no result: ${proc.output()}`);
  return JSON.parse(line) as DriverResult;
}

describe('the kernel wireguard path without the module', () => {
  it('rejects ensure() with WgKernelUnsupportedError within a second and leaves no link', async (ctx) => {
    if (kernelHasWireguard) ctx.skip();
    const result = await runDriver();
    expect(result.error, JSON.stringify(result)).toMatchObject({ name: 'WgKernelUnsupportedError', code: 'ERR_DEVICE' });
    expect(result.error!.message).toMatch(/^wireguard device flannel-wg: .*\((EOPNOTSUPP|ENOENT)\b/);
    expect(result.ensureMs).toBeLessThan(1000);
    expect(result.available).toBe(false);
    expect(await ns.ip('-o', 'link', 'show')).not.toContain(DEVICE);
  });
});
