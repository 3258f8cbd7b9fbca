/**
 * Finding and running the delegate plugin (the CNI library's invoke package): look it up in CNI_PATH, run it
 * with our CNI_* environment and a config on stdin, pass its stderr through, and turn its stdout into a result
 * or its error object into a CniError that keeps the delegate's code and message.
 * Synchronous on purpose, like the rest of the plugin: a plugin process has nothing to do while it waits, and
 * spawnSync and sync fs calls spare every pod start the stream, event and thread-pool machinery of async ones.
 */
import { spawnSync } from 'node:child_process';
import { accessSync, constants, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { isObject, type JsonObject } from './netconf.js';
import { CniCode, CniError } from './protocol.js';

export function findPlugin(type: string, paths: readonly string[]): string {
  if (type.includes('/')) throw new CniError(CniCode.InvalidConfig, `delegate type ${JSON.stringify(type)} must be a plugin name, not a path`);
  for (const dir of paths) {
    const candidate = join(dir, type);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // try the next directory
    }
  }
  throw new CniError(CniCode.InvalidConfig, `failed to find plugin ${JSON.stringify(type)} in path [${paths.join(' ')}]`);
}

export interface PluginRun {
  /** Parsed stdout; undefined when the plugin printed nothing (DEL, GC). */
  readonly output?: JsonObject;
}

export function runPlugin(path: string, env: Readonly<Record<string, string>>, stdin: string): PluginRun {
  const child = spawnSync(path, [], { env: { ...process.env, ...env }, input: stdin, stdio: ['pipe', 'pipe', 'inherit'], maxBuffer: Infinity });
  // EPIPE only says the delegate exited without reading all of its stdin: its status and output still count.
  if (child.error && (child.error as NodeJS.ErrnoException).code !== 'EPIPE') {
    // Worded as an async spawn words it ("spawn <path> ENOENT").
    throw new CniError(CniCode.IoFailure, `failed to run ${path}: ${child.error.message.replace(/^spawnSync /, 'spawn ')}`);
  }
  const out = child.stdout.toString();
  let parsed: unknown;
  try {
    parsed = out.trim() === '' ? undefined : JSON.parse(out);
  } catch {
    parsed = undefined;
  }
  if (child.status === 0) return isObject(parsed) ? { output: parsed } : {};
  if (isObject(parsed) && typeof parsed['code'] === 'number') {
    const msg = typeof parsed['msg'] === 'string' ? parsed['msg'] : 'delegate failed';
    throw new CniError(parsed['code'], msg, typeof parsed['details'] === 'string' ? parsed['details'] : '');
  }
  throw new CniError(CniCode.Internal, `${path} exited with ${child.status}: ${out.trim()}`);
}

/**
 * The spec versions a delegate supports, from its VERSION answer, cached in the data dir by binary path, size and
 * mtime so ADD does not pay for an extra exec every time.
 */
export function delegateVersions(path: string, cacheDir: string): readonly string[] {
  const st = statSync(path);
  const stamp = `${path}:${st.size}:${st.mtimeMs}`;
  const cacheFile = join(cacheDir, `.versions-${path.replace(/[^a-zA-Z0-9]/g, '_')}`);
  try {
    const cached: unknown = JSON.parse(readFileSync(cacheFile, 'utf8'));
    if (isObject(cached) && cached['stamp'] === stamp && Array.isArray(cached['versions'])) return cached['versions'] as string[];
  } catch {
    // no cache yet
  }
  const { output } = runPlugin(path, { CNI_COMMAND: 'VERSION' }, '{"cniVersion":"0.4.0"}');
  const versions = output && Array.isArray(output['supportedVersions']) ? (output['supportedVersions'] as unknown[]).filter((v): v is string => typeof v === 'string') : [];
  try {
    mkdirSync(cacheDir, { recursive: true, mode: 0o700 });
    writeFileSync(cacheFile, JSON.stringify({ stamp, versions }), { mode: 0o600 });
  } catch {
    // an unwritten cache costs the next ADD one more VERSION call, nothing else
  }
  return versions;
}
