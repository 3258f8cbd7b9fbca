/** A digest of files and folders by content and relative name, for cache keys that change exactly when inputs do. */
import { createHash, type Hash } from 'node:crypto';
import { readdirSync, readFileSync, readlinkSync, lstatSync } from 'node:fs';
import { basename, join } from 'node:path';

function hashInto(hash: Hash, path: string, name: string): void {
  const st = lstatSync(path);
  if (st.isSymbolicLink()) {
    hash.update(`link ${name} ${readlinkSync(path)}\n`);
  } else if (st.isDirectory()) {
    for (const entry of readdirSync(path).sort()) hashInto(hash, join(path, entry), `${name}/${entry}`);
  } else {
    hash.update(`file ${name} ${st.mode & 0o777} ${st.size}\n`);
    hash.update(readFileSync(path));
  }
}

/**
 * sha256 (hex, first 16 digits) of `parts` (plain strings) and of every file under `paths`. Each input is named by
 * its position and base name, not its absolute path, so the same inputs in another checkout hash the same.
 */
export function contentHash(paths: readonly string[], parts: readonly string[] = []): string {
  const hash = createHash('sha256');
  for (const part of parts) hash.update(`part ${part}\n`);
  for (const [i, path] of paths.entries()) hashInto(hash, path, `${i}:${basename(path)}`);
  return hash.digest('hex').slice(0, 16);
}
