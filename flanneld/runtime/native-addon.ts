/**
 * Loading one of our N-API addons (native/, built into dist/native/ by scripts/build-native.mjs) on first use, so a
 * node that never needs one never loads it, and a missing build fails only the feature that needs it, naming the
 * file and where it was looked for.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { FlannelError } from './errors.js';

/** `candidates` are absolute paths, tried in order (the source tree under vitest, then the build). */
export function lazyAddon<T>(candidates: readonly string[], purpose: string): () => T {
  let addon: T | undefined;
  return () => {
    if (addon) return addon;
    const path = candidates.find((p) => existsSync(p));
    if (!path) throw new FlannelError('ERR_IO', `${purpose} is missing (looked for ${candidates.join(', ')}); build it with "npm run build"`);
    addon = createRequire(import.meta.url)(path) as T;
    return addon;
  };
}
