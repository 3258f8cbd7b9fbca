/**
 * Import boundaries (docs/architecture.md#import-boundaries): the CNI plugin loads only pure leaves, runtime/ and ip/
 * depend on nothing outside themselves, and backends never reach into the daemon. Checked on the source text of every
 * module.
 */
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

function sources(dir: string): string[] {
  return readdirSync(join(ROOT, dir)).flatMap((name) => {
    const path = join(dir, name);
    return statSync(join(ROOT, path)).isDirectory() ? sources(path) : name.endsWith('.ts') ? [path] : [];
  });
}

/** Repository-relative paths of the local modules a file imports, plus its package imports. */
function importsOf(file: string): { local: string[]; packages: string[] } {
  const text = readFileSync(join(ROOT, file), 'utf8');
  const specs = [...text.matchAll(/^\s*(?:import|export)[^'"]*?from\s+'([^']+)'/gm)].map((m) => m[1] as string);
  const local = specs.filter((s) => s.startsWith('.')).map((s) => relative(ROOT, resolve(ROOT, dirname(file), s)).replace(/\.js$/, '.ts'));
  const packages = specs.filter((s) => !s.startsWith('.'));
  return { local, packages };
}

describe('architecture', () => {
  it('keeps the CNI plugin on pure leaves: no logger, no etcd or Kubernetes client', () => {
    const allowed = (p: string): boolean =>
      p.startsWith('cni-plugin/') || p.startsWith('flanneld/ip/') || p === 'flanneld/subnet/subnet-env.ts' || p === 'flanneld/runtime/errors.ts';
    for (const file of sources('cni-plugin')) {
      const { local, packages } = importsOf(file);
      expect(local.filter((p) => !allowed(p)), file).toEqual([]);
      expect(packages.filter((p) => !p.startsWith('node:')), file).toEqual([]);
    }
  });

  it('keeps runtime/ and ip/ self-contained', () => {
    for (const dir of ['flanneld/runtime', 'flanneld/ip']) {
      for (const file of sources(dir)) {
        const { local } = importsOf(file);
        expect(local.filter((p) => !p.startsWith(`${dir}/`) && !(dir === 'flanneld/ip' && p.startsWith('flanneld/runtime/'))), file).toEqual([]);
      }
    }
  });

  it('never lets backends import the daemon or main', () => {
    for (const file of sources('backends')) {
      const { local } = importsOf(file);
      expect(local.filter((p) => p === 'flanneld/daemon.ts' || p === 'flanneld/main.ts'), file).toEqual([]);
    }
  });
});
