/**
 * Running one CNI plugin process as a runtime does (`ip netns exec <node> <plugin>`, only the env given, config on
 * stdin, stdout parsed), the two installable forms of `flannel`, and libcni's way of serialising a config. Shared by
 * the real tests (cni-runtime.ts) and the CNI latency benchmark.
 */
import { spawn } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import type { Netns } from './netns.js';

export type JsonObject = Record<string, unknown>;

/** The repository root, from test/helpers (vitest) or dist/test/helpers (compiled benchmarks). */
export const REPO = ((): string => {
  for (let dir = dirname(fileURLToPath(import.meta.url)); dir !== dirname(dir); dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'scripts/build-cni.mjs'))) return dir;
  }
  throw new Error('cni-invoke: cannot find the repository root above this module');
})();
export const IP = ['/usr/sbin/ip', '/sbin/ip', '/usr/bin/ip', '/bin/ip'].find((p) => existsSync(p)) ?? 'ip';
const INVOKE_TIMEOUT_MS = 30_000;

/** One installable form of the plugin. */
export interface PluginForm {
  readonly name: 'script' | 'sea';
  readonly executable: string;
  /** PATH the runtime gives the plugin: the script form needs node on it; the SEA form gets a PATH without node. */
  readonly pathEnv: string;
}

export const SCRIPT_FORM: PluginForm = {
  name: 'script',
  executable: join(REPO, 'dist/cni/flannel'),
  pathEnv: `${dirname(process.execPath)}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`,
};
export const SEA_FORM: PluginForm = {
  name: 'sea',
  executable: join(REPO, 'dist/cni/flannel-sea'),
  pathEnv: '/usr/sbin:/sbin',
};

/** Why a form cannot be tested right now, or undefined when it can. */
export function formUnavailable(form: PluginForm): string | undefined {
  if (!existsSync(form.executable)) {
    return `${relative(REPO, form.executable)} is not built (${form.name === 'sea' ? 'npm run build:cni-sea' : 'npm run build'})`;
  }
  if (form.name === 'sea' && existsSync(SCRIPT_FORM.executable) && statSync(form.executable).mtimeMs < statSync(SCRIPT_FORM.executable).mtimeMs) {
    return `${relative(REPO, form.executable)} is older than dist/cni/flannel (run npm run build:cni-sea)`;
  }
  return undefined;
}

/** What one plugin process did. */
export interface CniOutcome {
  /** Exit code; null when killed by a signal. */
  readonly code: number | null;
  readonly stdout: string;
  /** stdout parsed as JSON, or undefined when empty or not JSON. */
  readonly json: unknown;
  readonly stderr: string;
  /** Wall time from spawning `ip netns exec` until the process exited. */
  readonly ms: number;
}

/**
 * Runs `executable` inside `host` (`ip netns exec`) with exactly `env` and `stdin`, as a runtime would (runtimes
 * pass no arguments; `argv` is for floors such as `node -e 0`).
 * The process is killed by PID after 30 s.
 */
export function invokePlugin(
  host: Netns,
  executable: string,
  env: Readonly<Record<string, string>>,
  stdin: string,
  argv: readonly string[] = [],
): Promise<CniOutcome> {
  return new Promise((resolveOutcome, reject) => {
    const started = performance.now();
    const child = spawn(IP, ['netns', 'exec', host.name, executable, ...argv], { env: { ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.stdin.on('error', () => undefined); // a plugin may exit without reading stdin
    const timer = setTimeout(() => {
      if (child.pid !== undefined && child.exitCode === null) process.kill(child.pid, 'SIGKILL');
    }, INVOKE_TIMEOUT_MS);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      const ms = performance.now() - started;
      let json: unknown;
      try {
        json = stdout.trim() === '' ? undefined : JSON.parse(stdout);
      } catch {
        json = undefined;
      }
      resolveOutcome({ code, stdout, json, stderr, ms });
    });
    child.stdin.end(stdin);
  });
}

/** JSON with keys sorted at every level and no spaces: how libcni re-serialises a config (Go map encoding). */
export function runtimeJson(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) => {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) return v;
    const o = v as JsonObject;
    return Object.fromEntries(Object.keys(o).sort().map((k) => [k, o[k]]));
  });
}
