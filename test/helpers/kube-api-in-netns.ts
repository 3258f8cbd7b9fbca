/**
 * Makes a FakeKubeApi (which lives in the test runner) reachable at host:port inside a network namespace, through
 * test/drivers/unix-forward.ts running in that namespace and the fake's unix socket.
 */
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { FakeKubeApi } from './fake-kube-api.js';
import type { Netns } from './netns.js';
import { spawnTracked, waitFor, type TrackedProcess } from './processes.js';

const DRIVER = fileURLToPath(new URL('../../dist/test/drivers/unix-forward.js', import.meta.url));
const READY_TIMEOUT_MS = 10_000;

/** Resolves once the forwarder is listening; the caller stops it (TrackedProcess.stop, by PID). */
export async function exposeInNetns(api: FakeKubeApi, ns: Netns, host: string, port: number): Promise<TrackedProcess> {
  const proc = spawnTracked('ip', ['netns', 'exec', ns.name, process.execPath, DRIVER, host, String(port), api.socketPath], {}, DRIVER);
  let listening = false;
  createInterface({ input: proc.child.stdout! }).on('line', (line) => {
    if (line.trim() === 'listening') listening = true;
  });
  // An early exit (port taken, no such namespace, driver not built) fails at once instead of after the timeout.
  const exited = proc.exited.then((code) => {
    throw new Error(`kube API forwarder in ${ns.name} exited (${code}): ${proc.output().trim()}`);
  });
  const ready = waitFor(`the kube API forwarder on ${host}:${port} in ${ns.name}`, () => (listening ? true : undefined), READY_TIMEOUT_MS, 20);
  try {
    await Promise.race([ready, exited]);
  } catch (err) {
    await proc.stop('SIGKILL');
    throw err;
  } finally {
    exited.catch(() => undefined);
    ready.catch(() => undefined);
  }
  return proc;
}
