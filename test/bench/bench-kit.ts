/**
 * What every benchmark entry point shares: a run-owned set of namespaces and processes that is torn down on success,
 * failure, a signal or the overall deadline; markdown tables; order statistics. Benchmarks print their table and,
 * given `--append <file>`, append it there (run-all.ts collects them into one results.md).
 */
import { appendFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { NetnsRun, removeStaleNamespaces } from '../helpers/netns.js';
import { killStaleTrackedProcesses } from '../helpers/processes.js';

export interface BenchContext {
  readonly run: NetnsRun;
  /** Registers teardown work (stopping processes); runs last-registered first, before the namespaces go. */
  defer(fn: () => Promise<unknown>): void;
  /** Progress on stderr, with seconds since the benchmark started. */
  note(text: string): void;
  /** Milliseconds left before the benchmark's overall deadline. */
  remainingMs(): number;
}

export interface BenchSpec {
  /** Short tag for namespace names (fts-<pid>-<tag>-…). */
  readonly tag: string;
  readonly title: string;
  /** Hard limit for the whole benchmark, set-up included; past it the benchmark is torn down and fails. */
  readonly deadlineMs: number;
  /** Returns the markdown to print and append. */
  readonly body: (ctx: BenchContext) => Promise<string>;
}

/** Runs one benchmark as a process's whole job and exits with 0 or 1; teardown always runs. */
export function benchMain(spec: BenchSpec): void {
  const appendTo = argValue('--append');
  const started = performance.now();
  const run = new NetnsRun(spec.tag);
  const deferred: (() => Promise<unknown>)[] = [];
  let tornDown: Promise<void> | undefined;
  const teardown = (): Promise<void> => {
    tornDown ??= (async () => {
      for (const fn of deferred.splice(0).reverse()) await fn().catch((err: unknown) => process.stderr.write(`teardown: ${String(err)}\n`));
      await run.cleanup();
    })();
    return tornDown;
  };
  const ctx: BenchContext = {
    run,
    defer: (fn) => deferred.push(fn),
    note: (text) => process.stderr.write(`[${spec.tag} ${((performance.now() - started) / 1000).toFixed(1)}s] ${text}\n`),
    remainingMs: () => spec.deadlineMs - (performance.now() - started),
  };
  const bail = (why: string): void => {
    process.stderr.write(`${spec.tag}: ${why}; cleaning up\n`);
    // A second cleanup catches a namespace the body created while the first one ran.
    void teardown()
      .then(() => run.cleanup())
      .finally(() => process.exit(1));
  };
  process.once('SIGINT', () => bail('interrupted'));
  process.once('SIGTERM', () => bail('terminated'));
  const deadline = setTimeout(() => bail(`over its ${spec.deadlineMs / 1000} s limit`), spec.deadlineMs);

  const main = async (): Promise<number> => {
    killStaleTrackedProcesses();
    await removeStaleNamespaces();
    try {
      const markdown = `## ${spec.title}\n\n${await spec.body(ctx)}\n`;
      process.stdout.write(`\n${markdown}\n`);
      if (appendTo) appendFileSync(appendTo, `${markdown}\n`);
      return 0;
    } catch (err) {
      process.stderr.write(`${spec.tag} failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      if (appendTo) appendFileSync(appendTo, `## ${spec.title}\n\nFailed: ${err instanceof Error ? err.message : String(err)}\n\n`);
      return 1;
    } finally {
      clearTimeout(deadline);
      await teardown();
    }
  };
  main().then(
    (code) => process.exit(code),
    (err: unknown) => {
      process.stderr.write(`${String(err)}\n`);
      process.exit(1);
    },
  );
}

function argValue(flag: string): string | undefined {
  const i = process.argv.indexOf(flag);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

/** Peer count for the kernel-facing benchmarks: 5000 (docs/benchmarks.md's scale) unless BENCH_PEERS asks otherwise. */
export function benchPeers(): number {
  const text = process.env['BENCH_PEERS'];
  const n = text === undefined ? 5000 : Number(text);
  if (!Number.isInteger(n) || n < 1 || n > 50_000) throw new Error(`BENCH_PEERS=${text}: need an integer 1..50000`);
  return n;
}

export const now = (): number => performance.now();
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Nearest-rank percentile (p in 0..100) of a non-empty sample. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[Math.min(rank, sorted.length) - 1] as number;
}

export const median = (values: readonly number[]): number => {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? (sorted[mid] as number) : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
};

export const ms = (v: number): string => (Number.isFinite(v) ? (v >= 100 ? `${v.toFixed(0)} ms` : `${v.toFixed(1)} ms`) : 'n/a');
export const ratio = (v: number, floor: number): string => (Number.isFinite(v) && floor > 0 ? `${(v / floor).toFixed(2)}×` : 'n/a');
export const mb = (kib: number): string => (Number.isFinite(kib) ? `${(kib / 1024).toFixed(1)} MB` : 'n/a');

/** A GitHub markdown table. */
export function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const line = (cells: readonly string[]): string => `| ${cells.join(' | ')} |`;
  return [line(header), line(header.map(() => '---')), ...rows.map(line)].join('\n');
}

/** "pass"/"FAIL" for a target, so the table says at a glance whether the target is met. */
export const verdict = (ok: boolean): string => (ok ? 'pass' : '**FAIL**');

/** A deterministic pause between `minMs` and `maxMs` for step `i`, so steps do not fall into step with a timer. */
export const gapMs = (i: number, minMs: number, maxMs: number): number => minMs + (((i * 2654435761) >>> 0) % 1000) / 1000 * (maxMs - minMs);

/** p50 / p99 / max cells and ratio cells of a latency sample against a floor sample. */
export function latencyCells(sample: readonly number[], floor: readonly number[]): string[] {
  const p50 = percentile(sample, 50);
  const p99 = percentile(sample, 99);
  return [ms(p50), ms(p99), ms(Math.max(...sample)), ratio(p50, percentile(floor, 50)), ratio(p99, percentile(floor, 99))];
}

/** Wall times of `runs` sequential calls of `fn`, in milliseconds. */
export async function timed(runs: number, fn: () => Promise<unknown>): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < runs; i++) {
    const started = now();
    await fn();
    out.push(now() - started);
  }
  return out;
}
