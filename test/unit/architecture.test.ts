/**
 * Import boundaries (docs/architecture.md#import-boundaries): the CNI plugin loads only pure leaves, runtime/ and ip/
 * depend on nothing outside themselves, backends never reach into the daemon, and the product's modules import one
 * another without a cycle. Checked on the source text of every module, dynamic `import()` included.
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

/** `import … from`, `export … from` (`export *` too) and bare `import '…'` statements, type-only ones included. */
const STATIC_IMPORT = /^\s*(?:import|export)\s(?:[^'";]*?\sfrom\s*)?['"]([^'"]+)['"]/gm;
/** `import('…')` calls, awaited or not: a module loaded lazily is still a dependency. */
const DYNAMIC_IMPORT = /\bimport\(\s*['"]([^'"]+)['"]\s*\)/g;

/** The module specifiers a source text names, static and dynamic. */
function specifiersIn(text: string): string[] {
  return [...text.matchAll(STATIC_IMPORT), ...text.matchAll(DYNAMIC_IMPORT)].map((m) => m[1] as string);
}

/** Repository-relative paths of the local modules a file imports, plus its package imports. */
function importsOf(file: string): { local: string[]; packages: string[] } {
  const specs = specifiersIn(readFileSync(join(ROOT, file), 'utf8'));
  const local = specs.filter((s) => s.startsWith('.')).map((s) => relative(ROOT, resolve(ROOT, dirname(file), s)).replace(/\.js$/, '.ts'));
  const packages = specs.filter((s) => !s.startsWith('.'));
  return { local, packages };
}

/** The product's modules: what ships, so what must load without a cycle. */
const PRODUCT = ['flanneld', 'backends', 'cni-plugin', 'lab', 'image'];

/** Each product module's imports of other product modules. */
function productImportGraph(): Map<string, string[]> {
  const files = PRODUCT.flatMap(sources);
  const product = new Set(files);
  return new Map(files.map((file) => [file, importsOf(file).local.filter((p) => product.has(p))]));
}

/**
 * The cycles a depth-first walk meets, one per edge back into its path, each as the files along it ending where it
 * started. Empty exactly when the graph has no cycle.
 */
function cyclesIn(graph: ReadonlyMap<string, readonly string[]>): string[][] {
  const cycles: string[][] = [];
  const finished = new Set<string>();
  const path: string[] = [];
  const visit = (file: string): void => {
    const start = path.indexOf(file);
    if (start >= 0) {
      cycles.push([...path.slice(start), file]);
      return;
    }
    if (finished.has(file)) return;
    path.push(file);
    for (const next of graph.get(file) ?? []) visit(next);
    path.pop();
    finished.add(file);
  };
  for (const file of [...graph.keys()].sort()) visit(file);
  return cycles;
}

describe('import scanning', () => {
  it('sees static, re-exported, bare and dynamic imports', () => {
    const text = [
      "import type { A } from './a.js';",
      'import {\n  b,\n  c,\n} from "./b.js";',
      "export * from './c.js';",
      "export { d } from './d.js';",
      "import './e.js';",
      "const f = await import('./f.js');",
      "void import(\n  './g.js'\n).then(() => undefined);",
      "export const h = 'not an import';",
    ].join('\n');
    expect(specifiersIn(text).sort()).toEqual(['./a.js', './b.js', './c.js', './d.js', './e.js', './f.js', './g.js']);
  });

  it('finds a cycle and names its files in order', () => {
    const graph = new Map([
      ['a.ts', ['b.ts']],
      ['b.ts', ['c.ts']],
      ['c.ts', ['a.ts', 'd.ts']],
      ['d.ts', []],
    ]);
    expect(cyclesIn(graph)).toEqual([['a.ts', 'b.ts', 'c.ts', 'a.ts']]);
    expect(cyclesIn(new Map([['a.ts', ['b.ts']], ['b.ts', []]]))).toEqual([]);
  });
});

describe('architecture', () => {
  it('keeps the CNI plugin on pure leaves: no logger, no etcd or Kubernetes client', () => {
    const allowed = (p: string): boolean =>
      p.startsWith('cni-plugin/') || p.startsWith('flanneld/ip/') || p === 'flanneld/subnet/subnet-env.ts' || p === 'flanneld/runtime/errors.ts' || p === 'flanneld/runtime/atomic-file.ts';
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

  it('has no import cycle among the product modules, type-only imports included', () => {
    const graph = productImportGraph();
    expect(graph.size).toBeGreaterThan(100);
    expect(cyclesIn(graph)).toEqual([]);
  });
});
