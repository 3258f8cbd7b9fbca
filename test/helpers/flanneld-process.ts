/** Runs the built flanneld (dist/) as a child process inside a test namespace, tracked by PID. */
import { existsSync } from 'node:fs';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { upstreamFlanneld } from '../../lab/kube/kube-tools.js';
import { withPrivateWireguardRun } from '../../lab/lab-processes.js';
import { spawnTracked, type TrackedProcess } from './processes.js';

// This helper runs from test/helpers/ under vitest and from dist/test/helpers/ in the compiled benchmarks.
const FROM_DIST = fileURLToPath(import.meta.url).includes('/dist/test/helpers/');
export const FLANNELD_BIN = fileURLToPath(new URL(FROM_DIST ? '../../flanneld/main.js' : '../../dist/flanneld/main.js', import.meta.url));

export function startFlanneld(netns: string, args: readonly string[], env: Record<string, string> = {}): TrackedProcess {
  if (!existsSync(FLANNELD_BIN)) throw new Error(`${FLANNELD_BIN} is missing: run "npm run build" first`);
  // Executed as an operator would, through its shebang (which carries flanneld's node flags), with a /run/wireguard
  // of its own; `ip netns exec`, sh and env exec in place, so the tracked PID is node's.
  const path = `${dirname(process.execPath)}:${process.env['PATH'] ?? '/usr/bin:/bin'}`;
  return spawnTracked('ip', ['netns', 'exec', netns, ...withPrivateWireguardRun([FLANNELD_BIN, ...args])], { env: { PATH: path, ...env } }, FLANNELD_BIN);
}

/** Where the wireguard-go device `device` of the flanneld with `pid` answers (see withPrivateWireguardRun). */
export function wireguardSocketOf(pid: number, device: string): string {
  return `/proc/${pid}/root/run/wireguard/${device}.sock`;
}

/** Upstream flanneld (built by tools/build.sh flannel) in a test namespace, with the same arguments as ours. */
export function startUpstreamFlanneld(netns: string, args: readonly string[], env: Record<string, string> = {}): TrackedProcess {
  const binary = upstreamFlanneld();
  return spawnTracked('ip', ['netns', 'exec', netns, binary, ...args], { env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', ...env } }, binary);
}
