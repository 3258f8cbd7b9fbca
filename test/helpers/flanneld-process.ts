/** Runs the built flanneld (dist/) as a child process inside a test namespace, tracked by PID. */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { spawnTracked, type TrackedProcess } from './processes.js';

// This helper runs from test/helpers/ under vitest and from dist/test/helpers/ in the compiled benchmarks.
const FROM_DIST = fileURLToPath(import.meta.url).includes('/dist/test/helpers/');
export const FLANNELD_BIN = fileURLToPath(new URL(FROM_DIST ? '../../flanneld/main.js' : '../../dist/flanneld/main.js', import.meta.url));

export function startFlanneld(netns: string, args: readonly string[], env: Record<string, string> = {}): TrackedProcess {
  if (!existsSync(FLANNELD_BIN)) throw new Error(`${FLANNELD_BIN} is missing: run "npm run build" first`);
  return spawnTracked(
    'ip',
    ['netns', 'exec', netns, process.execPath, FLANNELD_BIN, ...args],
    { env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', ...env } },
    FLANNELD_BIN,
  );
}
