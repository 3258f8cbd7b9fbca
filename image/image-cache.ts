/**
 * Built images as OCI archives in a cache outside the repository (FLANNEL_TS_IMAGE_CACHE, default
 * /var/cache/flannel-ts/images), one file per recipe and content key: a second build of unchanged inputs costs a
 * hash. Older archives of the same repository are removed when a new one is made, so the cache stays bounded.
 */
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { contentHash } from './content-hash.js';
import type { ImageRecipe } from './lab-images.js';
import { archiveLayout, buildImage, layoutSize } from './oci-layout.js';

export const imageCacheDir = (env: NodeJS.ProcessEnv = process.env): string => env.FLANNEL_TS_IMAGE_CACHE ?? '/var/cache/flannel-ts/images';

export interface BuiltImage {
  /** repository:tag, what pods name and containerd lists. */
  readonly reference: string;
  readonly repository: string;
  readonly tag: string;
  /** The OCI archive for `ctr images import`. */
  readonly archive: string;
  /** Compressed layers plus manifest and config: the size a registry would report. */
  readonly bytes: number;
}

const safeName = (repository: string): string => repository.replace(/[^a-z0-9.-]+/g, '_');

/** The archive of `recipe` in `cacheDir`, built first when the cache has none for these inputs. */
export async function cachedImage(recipe: ImageRecipe, cacheDir: string, log: (line: string) => void): Promise<BuiltImage> {
  const key = contentHash(recipe.inputs, [recipe.repository, recipe.tag, JSON.stringify(recipe.config), ...(recipe.keyParts ?? [])]);
  const stem = `${safeName(recipe.repository)}-${recipe.tag}-`;
  const archive = join(cacheDir, `${stem}${key}.tar`);
  const sizeFile = `${archive}.bytes`;
  const reference = `${recipe.repository}:${recipe.tag}`;
  if (!existsSync(archive)) {
    mkdirSync(cacheDir, { recursive: true });
    const work = mkdtempSync(join(cacheDir, '.build-'));
    try {
      log(`building ${reference}`);
      const layout = join(work, 'layout');
      await buildImage(layout, recipe.tag, recipe.config, (rootfs) => recipe.fill(rootfs));
      await archiveLayout(layout, join(work, 'image.tar'));
      writeFileSync(join(work, 'bytes'), String(await layoutSize(layout)));
      for (const old of readdirSync(cacheDir).filter((f) => f.startsWith(stem))) rmSync(join(cacheDir, old), { force: true });
      renameSync(join(work, 'bytes'), sizeFile);
      renameSync(join(work, 'image.tar'), archive);
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  }
  return { reference, repository: recipe.repository, tag: recipe.tag, archive, bytes: Number(readFileSync(sizeFile, 'utf8')) };
}
