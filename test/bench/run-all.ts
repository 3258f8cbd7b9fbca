#!/usr/bin/env node
/**
 * `npm run bench [-- name…]`: runs each benchmark as its own node process, one after another (they share the
 * machine's kernel and CPUs), and collects their tables into test/bench/results.md, rewritten on every run. A
 * benchmark that overruns is stopped by PID; it tears its namespaces down on SIGTERM.
 */
import { spawn } from 'node:child_process';
import { cpus } from 'node:os';
import { readFileSync, writeFileSync, appendFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const BENCHMARKS = ['cold-start', 'event-latency', 'repair-latency', 'throughput', 'cni-latency', 'probe-cost', 'dual-stack-cold-start', 'kube-node-latency', 'scale-cold-start', 'kubelet-pods', 'bgp'];
const LIMIT_MS = 240_000;
/**
 * Benchmarks that need longer: throughput alternates six paths over five clusters for five rounds (161 s measured on
 * a loaded machine; its own deadline, 390 s, leaves room for one slow round), kubelet-pods brings a kubelet cluster up and measures 104 pods
 * one by one (about 7 min).
 */
const LIMITS_MS: Readonly<Record<string, number>> = { throughput: 420_000, 'kubelet-pods': 600_000 };
const RESULTS = fileURLToPath(new URL('../../../test/bench/results.md', import.meta.url));

function runOne(name: string): Promise<number | string> {
  const limitMs = LIMITS_MS[name] ?? LIMIT_MS;
  const script = fileURLToPath(new URL(`./${name}.js`, import.meta.url));
  const child = spawn(process.execPath, [script, '--append', RESULTS], { stdio: ['ignore', 'inherit', 'inherit'] });
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      process.stderr.write(`${name}: over ${limitMs / 1000} s, stopping it\n`);
      if (child.pid !== undefined) process.kill(child.pid, 'SIGTERM');
      setTimeout(() => child.exitCode === null && child.pid !== undefined && process.kill(child.pid, 'SIGKILL'), 20_000).unref();
    }, limitMs);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      resolve(code ?? signal ?? 'unknown');
    });
  });
}

const wanted = process.argv.slice(2);
const unknown = wanted.filter((n) => !BENCHMARKS.includes(n));
if (unknown.length > 0) {
  process.stderr.write(`unknown benchmark ${unknown.join(', ')} (known: ${BENCHMARKS.join(', ')})\n`);
  process.exit(2);
}
const chosen = wanted.length > 0 ? wanted : BENCHMARKS;
const kernel = readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim();
writeFileSync(RESULTS, [
  '# flannel-ts benchmarks',
  '',
  `${new Date().toISOString().slice(0, 10)}, \`npm run bench\`: ${cpus().length} × ${cpus()[0]?.model ?? 'unknown CPU'}, Linux ${kernel}, Node ${process.version}. ` +
    'Ratios are against floors measured in the same run.',
  '',
  '',
].join('\n'));
const failed: string[] = [];
for (const name of chosen) {
  process.stderr.write(`\n=== ${name} ===\n`);
  const started = Date.now();
  const before = readFileSync(RESULTS, 'utf8').length;
  const result = await runOne(name);
  process.stderr.write(`=== ${name}: ${result === 0 ? 'done' : `failed (${result})`} in ${((Date.now() - started) / 1000).toFixed(1)} s ===\n`);
  if (result !== 0) {
    failed.push(name);
    // A benchmark that failed by itself has written why; one that was stopped has not.
    if (!readFileSync(RESULTS, 'utf8').slice(before).includes('Failed:')) appendFileSync(RESULTS, `## ${name}\n\nDid not finish (${result}).\n\n`);
  }
}
process.stdout.write(`\nbenchmarks: ${chosen.length - failed.length} finished, ${failed.length} failed${failed.length ? ` (${failed.join(', ')})` : ''}; tables in ${RESULTS}\n`);
process.exit(failed.length > 0 ? 1 : 0);
