/**
 * Every image the kubelet lab runs, built from this checkout and Debian's packages: flannel-ts (the manifest's
 * reference and tag, so kube-flannel.yml applies as shipped), the sandbox image and the lab's pod image.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { sh } from '../lab/netns.js';
import { debianRootfs, debianRootfsKey } from './debian-rootfs.js';
import {
  FLANNEL_BASE, FLANNEL_CONFIG, FLANNEL_IMAGE_REPOSITORY, fillFlannelRootfs, flannelImageInputs,
} from './flannel-image.js';
import { cachedImage, imageCacheDir, type BuiltImage } from './image-cache.js';
import { PAUSE_IMAGE, POD_IMAGE, type ImageRecipe } from './lab-images.js';

export interface LabImages {
  readonly flannel: BuiltImage;
  readonly pause: BuiltImage;
  readonly pod: BuiltImage;
}

export interface ImageBuildOptions {
  /** The checkout whose build output (dist/, production node_modules) goes in. */
  readonly repo: string;
  readonly cacheDir?: string;
  readonly mirror?: string;
  readonly nodeBinary?: string;
  readonly log: (line: string) => void;
}

/** The version in package.json: the manifest's image tag. */
export const flannelVersion = (repo: string): string => (JSON.parse(readFileSync(join(repo, 'package.json'), 'utf8')) as { version: string }).version;

export async function buildLabImages(opts: ImageBuildOptions): Promise<LabImages> {
  const cacheDir = opts.cacheDir ?? imageCacheDir();
  const base = { ...FLANNEL_BASE, mirror: opts.mirror ?? 'http://deb.debian.org/debian' };
  const nodeBinary = opts.nodeBinary ?? process.execPath;
  const baseDir = await debianRootfs(cacheDir, base, opts.log);
  const flannel: ImageRecipe = {
    repository: FLANNEL_IMAGE_REPOSITORY,
    tag: flannelVersion(opts.repo),
    config: FLANNEL_CONFIG,
    inputs: flannelImageInputs(opts.repo, nodeBinary),
    keyParts: [debianRootfsKey(base)],
    fill: async (rootfs) => {
      // cp -a: the base has device nodes and hard links, which a plain recursive copy in Node refuses or splits.
      await sh('cp', ['-a', `${baseDir}/.`, rootfs], undefined, 300_000);
      await fillFlannelRootfs(rootfs, opts.repo, nodeBinary);
    },
  };
  return {
    flannel: await cachedImage(flannel, cacheDir, opts.log),
    pause: await cachedImage(PAUSE_IMAGE, cacheDir, opts.log),
    pod: await cachedImage(POD_IMAGE, cacheDir, opts.log),
  };
}
