/**
 * dataDir/<containerID>: the rendered delegate config saved on ADD (upstream's format and place), so DEL undoes
 * exactly what ADD did even if subnet.env changed meanwhile. Written durably (0700 dir, 0600 file, fsync).
 * A sidecar <containerID>.ifname records the interface name, which GC needs to release host-local's address.
 * Synchronous, as a one-shot plugin process can be: no thread-pool round trip per file operation.
 */
import { mkdirSync, readFileSync, readdirSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../flanneld/runtime/atomic-file.js';

const IFNAME_SUFFIX = '.ifname';

const writeDurably = (path: string, text: string): void => writeFileAtomic(path, text, 0o600);

export function saveScratch(dataDir: string, containerId: string, ifname: string, conf: string): void {
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  // The config first: a sidecar without its config is then always a leftover (see sweepOrphanSidecars), and a config
  // without its sidecar reads as eth0, as upstream's files do.
  writeDurably(join(dataDir, containerId), conf);
  writeDurably(join(dataDir, `${containerId}${IFNAME_SUFFIX}`), ifname);
}

export function loadScratch(dataDir: string, containerId: string): string | undefined {
  try {
    return readFileSync(join(dataDir, containerId), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

function unlinkIfThere(path: string): void {
  try {
    unlinkSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

export function removeScratch(dataDir: string, containerId: string): void {
  for (const name of [containerId, `${containerId}${IFNAME_SUFFIX}`]) unlinkIfThere(join(dataDir, name));
  sweepOrphanSidecars(dataDir);
}

/**
 * Removes the sidecars whose config is gone. Upstream's plugin knows only the config file: a pod we added and
 * upstream's plugin deleted (a node moving back to upstream's DaemonSet) leaves our sidecar behind, which nothing
 * else would ever remove.
 */
function sweepOrphanSidecars(dataDir: string): void {
  let names: string[];
  try {
    names = readdirSync(dataDir);
  } catch {
    return;
  }
  const present = new Set(names);
  for (const name of names) {
    if (name.endsWith(IFNAME_SUFFIX) && !present.has(name.slice(0, -IFNAME_SUFFIX.length))) unlinkIfThere(join(dataDir, name));
  }
}

/** Every saved attachment, with its interface name ("eth0" when the sidecar is missing, e.g. upstream's files). */
export function listScratch(dataDir: string): { containerId: string; ifname: string }[] {
  let names: string[];
  try {
    names = readdirSync(dataDir);
  } catch {
    return [];
  }
  const out: { containerId: string; ifname: string }[] = [];
  for (const name of names) {
    if (name.startsWith('.') || name.endsWith(IFNAME_SUFFIX) || name.endsWith('.tmp')) continue;
    out.push({ containerId: name, ifname: savedIfname(dataDir, name) });
  }
  return out;
}

function savedIfname(dataDir: string, containerId: string): string {
  try {
    return readFileSync(join(dataDir, `${containerId}${IFNAME_SUFFIX}`), 'utf8').trim() || 'eth0';
  } catch {
    return 'eth0';
  }
}
