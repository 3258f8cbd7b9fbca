/**
 * A minimal Debian root filesystem from Debian's own packages (debootstrap's minbase variant plus the packages
 * asked for), trimmed of documentation, locales and apt's caches: the base an image is assembled on, in place of a
 * `FROM debian:…-slim` pulled from a registry. Cached outside the repository under a key of everything that decides
 * its contents, so it is made once per machine (about a minute) and then copied.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { sh } from '../lab/netns.js';

export interface DebianRootfsSpec {
  /** The Debian release, as debootstrap names it (the machine's own: bookworm). */
  readonly suite: string;
  readonly mirror: string;
  /** Packages on top of minbase (their dependencies come along). */
  readonly packages: readonly string[];
}

/** Folders nothing in a container reads; together about half of a minbase system with iptables and iproute2. */
const TRIMMED = ['usr/share/doc', 'usr/share/man', 'usr/share/info', 'usr/share/locale', 'var/cache/apt', 'var/lib/apt/lists', 'var/log'];

const DEBOOTSTRAP_TIMEOUT_MS = 15 * 60_000;

export const debianRootfsKey = (spec: DebianRootfsSpec): string =>
  createHash('sha256').update(JSON.stringify([spec.suite, spec.mirror, [...spec.packages].sort(), TRIMMED])).digest('hex').slice(0, 16);

/**
 * The folder holding the root filesystem for `spec` under `cacheDir`, made first if the cache lacks it. Made in a
 * temporary folder and renamed into place, so an interrupted run leaves nothing that looks finished.
 */
export async function debianRootfs(cacheDir: string, spec: DebianRootfsSpec, log: (line: string) => void): Promise<string> {
  const dir = join(cacheDir, `debian-${spec.suite}-${debianRootfsKey(spec)}`);
  if (existsSync(dir)) return dir;
  mkdirSync(cacheDir, { recursive: true });
  const tmp = `${dir}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  log(`debootstrap ${spec.suite} (minbase + ${spec.packages.join(', ')}) from ${spec.mirror}: about a minute, once per machine`);
  try {
    await sh('debootstrap', ['--variant=minbase', `--include=${spec.packages.join(',')}`, spec.suite, tmp, spec.mirror], undefined, DEBOOTSTRAP_TIMEOUT_MS);
    for (const d of TRIMMED) {
      rmSync(join(tmp, d), { recursive: true, force: true });
      mkdirSync(join(tmp, d), { recursive: true });
    }
    renameSync(tmp, dir);
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    // Another build of the same spec (a lab and a test run at once) finished first: its folder is as good as ours.
    if (isErrno(err, 'ENOTEMPTY') || isErrno(err, 'EEXIST')) return dir;
    throw err;
  }
  return dir;
}

function isErrno(err: unknown, code: string): boolean {
  return err instanceof Error && (err as NodeJS.ErrnoException).code === code;
}
