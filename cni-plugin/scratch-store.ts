/**
 * dataDir/<containerID>: the rendered delegate config saved on ADD (upstream's format and place), so DEL undoes
 * exactly what ADD did even if subnet.env changed meanwhile. Written durably (0700 dir, 0600 file, fsync).
 * A sidecar <containerID>.ifname records the interface name, which GC needs to release host-local's address.
 */
import { mkdir, open, readFile, readdir, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';

const IFNAME_SUFFIX = '.ifname';

async function writeDurably(path: string, text: string): Promise<void> {
  const temp = `${path}.tmp`;
  const handle = await open(temp, 'w', 0o600);
  try {
    await handle.writeFile(text);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await rename(temp, path);
}

export async function saveScratch(dataDir: string, containerId: string, ifname: string, conf: string): Promise<void> {
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  // The config first: a sidecar without its config is then always a leftover (see sweepOrphanSidecars), and a config
  // without its sidecar reads as eth0, as upstream's files do.
  await writeDurably(join(dataDir, containerId), conf);
  await writeDurably(join(dataDir, `${containerId}${IFNAME_SUFFIX}`), ifname);
}

export async function loadScratch(dataDir: string, containerId: string): Promise<string | undefined> {
  try {
    return await readFile(join(dataDir, containerId), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

const unlinkIfThere = (path: string): Promise<void> => unlink(path).catch((err: NodeJS.ErrnoException) => {
  if (err.code !== 'ENOENT') throw err;
});

export async function removeScratch(dataDir: string, containerId: string): Promise<void> {
  for (const name of [containerId, `${containerId}${IFNAME_SUFFIX}`]) await unlinkIfThere(join(dataDir, name));
  await sweepOrphanSidecars(dataDir);
}

/**
 * Removes the sidecars whose config is gone. Upstream's plugin knows only the config file: a pod we added and
 * upstream's plugin deleted (a node moving back to upstream's DaemonSet) leaves our sidecar behind, which nothing
 * else would ever remove.
 */
async function sweepOrphanSidecars(dataDir: string): Promise<void> {
  let names: string[];
  try {
    names = await readdir(dataDir);
  } catch {
    return;
  }
  const present = new Set(names);
  for (const name of names) {
    if (name.endsWith(IFNAME_SUFFIX) && !present.has(name.slice(0, -IFNAME_SUFFIX.length))) await unlinkIfThere(join(dataDir, name));
  }
}

/** Every saved attachment, with its interface name ("eth0" when the sidecar is missing, e.g. upstream's files). */
export async function listScratch(dataDir: string): Promise<{ containerId: string; ifname: string }[]> {
  let names: string[];
  try {
    names = await readdir(dataDir);
  } catch {
    return [];
  }
  const out: { containerId: string; ifname: string }[] = [];
  for (const name of names) {
    if (name.startsWith('.') || name.endsWith(IFNAME_SUFFIX) || name.endsWith('.tmp')) continue;
    const ifname = (await readFile(join(dataDir, `${name}${IFNAME_SUFFIX}`), 'utf8').catch(() => 'eth0')).trim() || 'eth0';
    out.push({ containerId: name, ifname });
  }
  return out;
}
