/**
 * The two small images a kubelet lab needs besides flannel-ts, made offline from Debian's static binaries:
 * - the sandbox ("pause") image containerd starts first in every pod: catatonit in its pause mode (-P);
 * - the lab's pod image: busybox-static with every applet linked, so a pod can ping, run a TCP echo and sleep.
 */
import { chmodSync, copyFileSync, mkdirSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { sh } from '../lab/netns.js';
import type { ImageConfig } from './oci-layout.js';

export interface ImageRecipe {
  /** The reference containerd knows the image by once imported: repository and tag. */
  readonly repository: string;
  readonly tag: string;
  readonly config: ImageConfig;
  /** Every file or folder that decides the image's bytes besides the code here (the cache key). */
  readonly inputs: readonly string[];
  /** Further parts of the cache key, such as the base root filesystem's own key. */
  readonly keyParts?: readonly string[];
  fill(rootfs: string): Promise<void>;
}

const CATATONIT = '/usr/bin/catatonit';
const BUSYBOX = '/bin/busybox';

const placeBinary = (from: string, rootfs: string, to: string): void => {
  mkdirSync(join(rootfs, to, '..'), { recursive: true });
  copyFileSync(from, join(rootfs, to));
  chmodSync(join(rootfs, to), 0o755);
};

/** containerd's CRI `sandbox_image`: a process that only waits, holding the pod's namespaces. */
export const PAUSE_IMAGE: ImageRecipe = {
  repository: 'flannel-ts.local/pause',
  tag: '3.10',
  config: { entrypoint: ['/catatonit', '-P'] },
  inputs: [CATATONIT],
  fill: async (rootfs) => placeBinary(CATATONIT, rootfs, 'catatonit'),
};

/** Every busybox applet as a symlink in /bin, as `busybox --install -s` would make them. */
async function installBusybox(rootfs: string): Promise<void> {
  placeBinary(BUSYBOX, rootfs, 'bin/busybox');
  const applets = (await sh(BUSYBOX, ['--list'])).split('\n').map((a) => a.trim()).filter((a) => a && a !== 'busybox');
  for (const applet of applets) symlinkSync('busybox', join(rootfs, 'bin', applet));
  for (const dir of ['tmp', 'etc', 'proc', 'sys', 'dev']) mkdirSync(join(rootfs, dir), { recursive: true });
}

/** The lab's pods: `ping`, `nc` (the TCP echo on port 8080 the lab starts), `ip`, `wget` and a shell. */
export const POD_IMAGE: ImageRecipe = {
  repository: 'flannel-ts.local/lab-pod',
  tag: '1',
  config: { entrypoint: ['/bin/sh'], env: ['PATH=/bin'] },
  inputs: [BUSYBOX],
  fill: installBusybox,
};
