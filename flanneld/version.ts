import { readFileSync } from 'node:fs';

/** The package version, read once from package.json next to the build (dist/flanneld -> package root). */
export function readVersion(): string {
  try {
    const pkg: unknown = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8'));
    const version = typeof pkg === 'object' && pkg !== null ? (pkg as { version?: unknown }).version : undefined;
    return typeof version === 'string' ? version : 'dev';
  } catch {
    return 'dev';
  }
}
