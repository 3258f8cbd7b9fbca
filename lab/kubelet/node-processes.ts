/**
 * Every process of a kubelet host, found from the kernel rather than from records: whatever runs in the host's
 * mount namespace (containerd, the kubelet, kube-proxy, the containerd shims) and everything they started (the
 * containers, each in namespaces of its own). What `down` stops after a crash left containers without their records.
 */
import { readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';

const nsOf = (pid: string): string | undefined => {
  try {
    return readlinkSync(`/proc/${pid}/ns/mnt`);
  } catch {
    return undefined;
  }
};

const parentOf = (pid: string): string | undefined => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1];
  } catch {
    return undefined;
  }
};

/** The mount namespace a namespace file holds, as /proc/<pid>/ns/mnt names it: `mnt:[<inode>]`. */
export const mountNsId = (mountNsFile: string): string => `mnt:[${statSync(mountNsFile).ino}]`;

/** PIDs in the mount namespace `nsId` and their descendants, children after parents. */
export function processTree(nsId: string, self = process.pid): number[] {
  const pids = readdirSync('/proc').filter((p) => /^\d+$/.test(p) && Number(p) !== self);
  const children = new Map<string, string[]>();
  for (const pid of pids) {
    const parent = parentOf(pid);
    if (parent) children.set(parent, [...(children.get(parent) ?? []), pid]);
  }
  const found: string[] = [];
  const seen = new Set<string>();
  const visit = (pid: string): void => {
    if (seen.has(pid)) return;
    seen.add(pid);
    found.push(pid);
    for (const child of children.get(pid) ?? []) visit(child);
  };
  for (const pid of pids) if (nsOf(pid) === nsId) visit(pid);
  return found.map(Number);
}
