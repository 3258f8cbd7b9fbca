/**
 * OCI image layouts made with Debian's umoci, without a container engine or a registry: a folder (or its tar) that
 * containerd imports with `ctr images import`. Each image here is one layer: the whole root filesystem of a bundle.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sh } from '../lab/netns.js';

/** What `umoci config` sets on an image: the process containerd starts when a pod names no command. */
export interface ImageConfig {
  readonly entrypoint: readonly string[];
  readonly workdir?: string;
  readonly env?: readonly string[];
}

/** umoci's unpack/repack of a large root filesystem (gzip of some 100 MB) takes tens of seconds on a loaded machine. */
const UMOCI_TIMEOUT_MS = 10 * 60_000;
const umoci = (args: readonly string[]): Promise<string> => sh('umoci', args, undefined, UMOCI_TIMEOUT_MS);

/**
 * Builds a one-layer image `name:tag` in a new layout at `layoutDir`: `fill(rootfs)` writes the root filesystem
 * into an empty folder, umoci packs it as a layer and sets the config. The layout is left for `archiveLayout`.
 */
export async function buildImage(layoutDir: string, tag: string, config: ImageConfig, fill: (rootfs: string) => Promise<void>): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'flannel-ts-image-'));
  try {
    await umoci(['init', '--layout', layoutDir]);
    await umoci(['new', '--image', `${layoutDir}:${tag}`]);
    const bundle = join(work, 'bundle');
    await umoci(['unpack', '--image', `${layoutDir}:${tag}`, bundle]);
    await fill(join(bundle, 'rootfs'));
    await umoci(['repack', '--image', `${layoutDir}:${tag}`, bundle]);
    const entry = config.entrypoint.flatMap((arg) => ['--config.entrypoint', arg]);
    const env = (config.env ?? []).flatMap((e) => ['--config.env', e]);
    await umoci(['config', '--image', `${layoutDir}:${tag}`, ...entry, ...env, ...(config.workdir ? ['--config.workingdir', config.workdir] : [])]);
    await umoci(['gc', '--layout', layoutDir]);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/** The layout as one tar (what `ctr images import` reads); names inside are relative, as the OCI layout spec wants. */
export async function archiveLayout(layoutDir: string, tarPath: string): Promise<void> {
  await sh('tar', ['-C', layoutDir, '-cf', tarPath, '.'], undefined, UMOCI_TIMEOUT_MS);
}

/** Bytes of the image as shipped: its compressed layers, manifest and config, i.e. what a registry would serve. */
export async function layoutSize(layoutDir: string): Promise<number> {
  const out = await sh('du', ['-sb', join(layoutDir, 'blobs')]);
  return Number(out.split(/\s/)[0]);
}
