#!/usr/bin/env node
/**
 * The `flannel` CNI plugin's entry: CNI_* env and the config on stdin in, a result or a CNI error object on stdout.
 * Nothing is printed to stderr on success, and nothing beyond the plugin's own small modules is loaded (no logger,
 * no etcd or Kubernetes client), so a pod start pays for little more than Node itself.
 */
import { readFileSync, writeSync } from 'node:fs';
import { isObject, parseNetConf } from './netconf.js';
import { CniCode, CniError, isSupportedVersion, LATEST_VERSION, parseCniEnv, SUPPORTED_VERSIONS } from './protocol.js';
import { cmdAdd } from './verbs/add.js';
import { cmdCheck } from './verbs/check.js';
import { cmdDel } from './verbs/del.js';
import { cmdGc } from './verbs/gc.js';
import { cmdStatus } from './verbs/status.js';

async function main(): Promise<number> {
  let cniVersion = LATEST_VERSION;
  try {
    const env = parseCniEnv(process.env);
    const stdin = readStdin();
    // Read before full validation, so even a config that fails it gets its error in the version it asked for.
    const asked = askedVersion(stdin);
    if (env.command === 'VERSION') {
      writeStdout(JSON.stringify({ cniVersion: asked || LATEST_VERSION, supportedVersions: SUPPORTED_VERSIONS }));
      return 0;
    }
    if (asked && isSupportedVersion(asked)) cniVersion = asked;
    const conf = parseNetConf(stdin);
    switch (env.command) {
      case 'ADD':
        writeStdout(JSON.stringify(await cmdAdd(env, conf)));
        return 0;
      case 'DEL':
        cmdDel(env, conf);
        return 0;
      case 'CHECK':
        cmdCheck(env, conf);
        return 0;
      case 'STATUS':
        cmdStatus(env, conf);
        return 0;
      case 'GC':
        cmdGc(env, conf);
        return 0;
    }
  } catch (err) {
    const error = err instanceof CniError ? err : new CniError(CniCode.Internal, err instanceof Error ? err.message : String(err));
    writeStdout(error.toJson(cniVersion));
    return 1;
  }
}

/** The top-level cniVersion of the config on stdin, if it is JSON with one (a delegate's inner one does not count). */
function askedVersion(stdin: string): string | undefined {
  try {
    const doc: unknown = JSON.parse(stdin);
    const version = isObject(doc) ? doc['cniVersion'] : undefined;
    return typeof version === 'string' ? version : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Straight to fd 1: building process.stdout's stream over the runtime's pipe or socket costs each pod start about
 * 2 ms. A non-blocking stdout that is full (EAGAIN) gets the rest through the stream, which waits for room.
 */
function writeStdout(text: string): void {
  const bytes = Buffer.from(text);
  let done = 0;
  while (done < bytes.length) {
    try {
      done += writeSync(1, bytes, done);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') throw err;
      process.stdout.write(bytes.subarray(done));
      return;
    }
  }
}

function readStdin(): string {
  try {
    return readFileSync(0, 'utf8');
  } catch {
    return '';
  }
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  () => {
    process.exitCode = 1;
  },
);
