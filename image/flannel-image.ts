/**
 * The flannel-ts image without Docker: the same files at the same paths as the Dockerfile's runtime stage (a test
 * compares the two recipes), on a Debian root filesystem made from Debian's packages plus this machine's `node`,
 * packed by umoci. The Dockerfile stays the recipe for people with a Docker engine.
 */
import { cpSync, mkdirSync, symlinkSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { sh } from '../lab/netns.js';
import type { DebianRootfsSpec } from './debian-rootfs.js';
import type { ImageConfig } from './oci-layout.js';

/** The image reference manifests/kube-flannel.yml names; importing under it lets the manifest apply unchanged. */
export const FLANNEL_IMAGE_REPOSITORY = 'ghcr.io/flannel-ts/flannel-ts';

export const APP_DIR = '/opt/flannel-ts';

/** What the runtime stage installs from Debian (the Dockerfile's `apt-get install` there). */
export const FLANNEL_BASE: Omit<DebianRootfsSpec, 'mirror'> = {
  suite: 'bookworm',
  // libstdc++6 is named because node links it; iptables/nftables for the traffic rules, iproute2 to look around,
  // wireguard-go for the wireguard backend on nodes whose kernel has no WireGuard.
  packages: ['iptables', 'nftables', 'iproute2', 'wireguard-go', 'libstdc++6', 'ca-certificates'],
};

/** One copy from the build output (a path in the checkout) into the image. */
export interface ImageCopy {
  readonly from: string;
  readonly to: string;
}

/** The Dockerfile's `COPY --from=build /src/<from> <to>` lines of the runtime stage, in the same order. */
export const FLANNEL_COPIES: readonly ImageCopy[] = [
  { from: 'package.json', to: `${APP_DIR}/package.json` },
  { from: 'node_modules/', to: `${APP_DIR}/node_modules/` },
  { from: 'dist/flanneld/', to: `${APP_DIR}/dist/flanneld/` },
  { from: 'dist/backends/', to: `${APP_DIR}/dist/backends/` },
  { from: 'dist/native/', to: `${APP_DIR}/dist/native/` },
  { from: 'dist/cni/flannel-sea', to: '/opt/cni-bin/flannel' },
];

/** The Dockerfile's `RUN ln -s`: flanneld on PATH, resolving to main.js so its shebang and relative imports work. */
export const FLANNEL_SYMLINKS: readonly ImageCopy[] = [{ from: `${APP_DIR}/dist/flanneld/main.js`, to: '/usr/local/bin/flanneld' }];

export const FLANNEL_CONFIG: ImageConfig = { entrypoint: ['/usr/local/bin/flanneld'], workdir: APP_DIR, env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'] };

/** Where the node image (`FROM node:20-bookworm-slim`) keeps node; the image gets this machine's, which built dist/. */
export const NODE_PATH = '/usr/local/bin/node';

/** The production dependencies only (`npm prune --omit=dev` in the Dockerfile): npm's own list of what they are. */
async function productionPackages(repo: string): Promise<string[]> {
  const out = await sh('npm', ['ls', '--omit=dev', '--all', '--parseable'], undefined, 120_000).catch((err: Error) => {
    throw new Error(`npm ls --omit=dev in ${repo} failed (run npm ci first): ${err.message}`);
  });
  return out.split('\n').map((p) => relative(repo, p.trim())).filter((p) => p.startsWith('node_modules/'));
}

/** Writes the image's own files (on top of the Debian base) into `rootfs`, taking them from the checkout `repo`. */
export async function fillFlannelRootfs(rootfs: string, repo: string, nodeBinary: string): Promise<void> {
  const put = (from: string, to: string): void => {
    mkdirSync(dirname(join(rootfs, to)), { recursive: true });
    cpSync(from, join(rootfs, to), { recursive: true, dereference: false });
  };
  put(nodeBinary, NODE_PATH);
  const packages = await productionPackages(repo);
  for (const copy of FLANNEL_COPIES) {
    if (copy.from === 'node_modules/') {
      for (const p of packages) put(join(repo, p), join(dirname(copy.to), p));
    } else {
      put(join(repo, copy.from), copy.to);
    }
  }
  for (const link of FLANNEL_SYMLINKS) {
    mkdirSync(dirname(join(rootfs, link.to)), { recursive: true });
    symlinkSync(link.from, join(rootfs, link.to));
  }
}

/** The inputs of the image in the checkout `repo`: what the copies above take, the lock file and the node binary. */
export const flannelImageInputs = (repo: string, nodeBinary: string): string[] =>
  [...FLANNEL_COPIES.map((c) => join(repo, c.from === 'node_modules/' ? 'package-lock.json' : c.from)), nodeBinary];
