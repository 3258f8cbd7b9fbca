/**
 * Finding and running the delegate plugin (the CNI library's invoke package): look it up in CNI_PATH, run it
 * with our CNI_* environment and a config on stdin, pass its stderr through, and turn its stdout into a result
 * or its error object into a CniError that keeps the delegate's code and message.
 */
import { spawn } from 'node:child_process';
import { constants } from 'node:fs';
import { access, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { isObject, type JsonObject } from './netconf.js';
import { CniCode, CniError } from './protocol.js';

export async function findPlugin(type: string, paths: readonly string[]): Promise<string> {
  if (type.includes('/')) throw new CniError(CniCode.InvalidConfig, `delegate type ${JSON.stringify(type)} must be a plugin name, not a path`);
  for (const dir of paths) {
    const candidate = join(dir, type);
    try {
      await access(candidate, constants.X_OK);
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

export function runPlugin(path: string, env: Readonly<Record<string, string>>, stdin: string): Promise<PluginRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(path, [], { env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', (err) => reject(new CniError(CniCode.IoFailure, `failed to run ${path}: ${err.message}`)));
    child.stdin.on('error', () => undefined);
    child.stdin.end(stdin);
    child.on('close', (code) => {
      let parsed: unknown;
      try {
        parsed = out.trim() === '' ? undefined : JSON.parse(out);
      } catch {
        parsed = undefined;
      }
      if (code === 0) {
        resolve(isObject(parsed) ? { output: parsed } : {});
        return;
      }
      if (isObject(parsed) && typeof parsed['code'] === 'number') {
        const msg = typeof parsed['msg'] === 'string' ? parsed['msg'] : 'delegate failed';
        reject(new CniError(parsed['code'], msg, typeof parsed['details'] === 'string' ? parsed['details'] : ''));
        return;
      }
      reject(new CniError(CniCode.Internal, `${path} exited with ${code}: ${out.trim()}`));
    });
  });
}

/**
 * The spec versions a delegate supports, from its VERSION answer, cached in the data dir by binary path, size and
 * mtime so ADD does not pay for an extra exec every time.
 */
export async function delegateVersions(path: string, cacheDir: string): Promise<readonly string[]> {
  const st = await stat(path);
  const stamp = `${path}:${st.size}:${st.mtimeMs}`;
  const cacheFile = join(cacheDir, `.versions-${path.replace(/[^a-zA-Z0-9]/g, '_')}`);
  try {
    const cached: unknown = JSON.parse(await readFile(cacheFile, 'utf8'));
    if (isObject(cached) && cached['stamp'] === stamp && Array.isArray(cached['versions'])) return cached['versions'] as string[];
  } catch {
    // no cache yet
  }
  const { output } = await runPlugin(path, { CNI_COMMAND: 'VERSION' }, '{"cniVersion":"0.4.0"}');
  const versions = output && Array.isArray(output['supportedVersions']) ? (output['supportedVersions'] as unknown[]).filter((v): v is string => typeof v === 'string') : [];
  await mkdir(cacheDir, { recursive: true, mode: 0o700 }).then(() => writeFile(cacheFile, JSON.stringify({ stamp, versions }), { mode: 0o600 })).catch(() => undefined);
  return versions;
}
