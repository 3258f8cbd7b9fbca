#!/usr/bin/env node
/**
 * CNI ADD and DEL latency of the `flannel` plugin over 200 pods, for the script form and the self-contained (SEA) form,
 * driven as a runtime drives it (cni-runtime.ts: Debian's bridge + host-local, pods as namespaces), beside upstream's
 * Go plugin (containernetworking/plugins v0.9.1) on its own identical node. Floors in the same run: the same pods made
 * by calling `bridge` directly with the config flannel renders for it, `node -e 0`, and each plugin's own startup
 * (CNI_COMMAND=VERSION). Rounds interleave everything (floors, then direct, script, SEA and upstream ADD+DEL of one pod
 * each), so drift on a shared machine hits all of them alike. Targets: at p50, the plugin's ADD minus the direct
 * delegate's ADD ≤ `node -e 0` + 15 ms (docs/benchmarks.md#cni-plugin-adddel-latency-over-200-pods); the SEA form's ADD
 * minus upstream's ADD ≤ 10 ms.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  CniNode, formUnavailable, invokePlugin, REPO, SCRIPT_FORM, SEA_FORM, upstreamForm, type CniOutcome, type CniPod, type NodeForm,
} from '../helpers/cni-runtime.js';
import { benchMain, latencyCells, ms, percentile, ratio, table, verdict } from './bench-kit.js';

const PODS = 200;
const WARMUP = 5;
const TARGET_EXTRA_MS = 15;
const TARGET_VS_UPSTREAM_MS = 10;

type Variant = 'direct' | NodeForm['name'];

function must(outcome: CniOutcome, what: string): void {
  if (outcome.code !== 0 || outcome.stderr !== '') {
    throw new Error(`${what}: exit ${outcome.code}, stdout ${outcome.stdout.trim() || '(empty)'}, stderr ${outcome.stderr.trim() || '(empty)'}`);
  }
}

/** The SEA form is built here when missing or older than the script bundle (about 4 s). */
function ensureSea(note: (t: string) => void): string | undefined {
  if (formUnavailable(SEA_FORM) === undefined) return undefined;
  note('building the SEA form (node scripts/build-cni.mjs --sea)');
  try {
    execFileSync(process.execPath, [join(REPO, 'scripts/build-cni.mjs'), '--sea'], { cwd: REPO, stdio: ['ignore', 'ignore', 'pipe'], timeout: 120_000 });
  } catch (err) {
    return `SEA build failed: ${err instanceof Error ? err.message : String(err)}`;
  }
  return formUnavailable(SEA_FORM);
}

/** Upstream's plugin, or why it cannot be measured (tools/build.sh cni-flannel builds it once, then finds it). */
function upstreamPlugin(): NodeForm | string {
  try {
    const form = upstreamForm();
    return existsSync(form.executable) ? form : `${form.executable} is missing`;
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
  }
}

/**
 * `node -e 0` with the plugin's own environment (PATH only): an inherited NODE_EXTRA_CA_CERTS or NODE_OPTIONS would
 * make the floor slower than what a runtime's plugin process pays.
 */
async function nodeStart(node: CniNode): Promise<number> {
  const r = await invokePlugin(node.host, process.execPath, { PATH: SCRIPT_FORM.pathEnv }, '', ['-e', '0']);
  must(r, 'node -e 0');
  return r.ms;
}

/** The plugin's own startup floor: VERSION loads and runs the whole program but spawns nothing. */
async function versionStart(node: CniNode): Promise<number> {
  const v = await node.version('1.0.0');
  must(v, `${node.form.name} VERSION`);
  return v.ms;
}

/** One namespace per round (and warm-up round) for a node's pods. */
async function podsFor(node: CniNode, prefix: string): Promise<CniPod[]> {
  const pods: CniPod[] = [];
  for (let i = 0; i < PODS + WARMUP; i++) pods.push(await node.pod(`${prefix}${i}`));
  return pods;
}

benchMain({
  tag: 'cl',
  title: `CNI plugin ADD/DEL latency over ${PODS} pods`,
  deadlineMs: 230_000,
  body: async (ctx) => {
    const scriptMissing = formUnavailable(SCRIPT_FORM);
    if (scriptMissing) throw new Error(scriptMissing);
    const seaMissing = ensureSea((t) => ctx.note(t));
    if (seaMissing) ctx.note(`SEA form left out: ${seaMissing}`);
    const upstream = upstreamPlugin();
    if (typeof upstream === 'string') ctx.note(`upstream's plugin left out: ${upstream}`);

    // One node (host namespace, cni0, host-local store) per plugin, each with the same subnet: every variant runs the
    // same bridge on an identical node. The direct floor runs on the script form's node.
    const script = await CniNode.create(ctx.run, { name: 'node', form: SCRIPT_FORM });
    ctx.defer(() => script.cleanup());
    const sea = seaMissing ? undefined : await CniNode.create(ctx.run, { name: 'seanode', form: SEA_FORM });
    if (sea) ctx.defer(() => sea.cleanup());
    const up = typeof upstream === 'string' ? undefined : await CniNode.create(ctx.run, { name: 'upnode', form: upstream });
    if (up) ctx.defer(() => up.cleanup());
    const plugins = [script, sea, up].filter((n): n is CniNode => n !== undefined);
    const pods = new Map<CniNode, CniPod[]>();
    const prefix: Record<NodeForm['name'], string> = { script: 'p', sea: 's', upstream: 'u' };
    for (const n of plugins) pods.set(n, await podsFor(n, prefix[n.form.name]));
    ctx.note(`${plugins.length * (PODS + WARMUP)} pod namespaces ready`);

    // The direct delegate gets exactly what flannel saved for a pod: bridge + host-local over the node subnet.
    const probe = pods.get(script)![0]!;
    const first = await script.add(probe);
    must(first, 'flannel ADD (probe)');
    const delegateConf = readFileSync(join(script.dataDir, probe.containerId), 'utf8');
    must(await script.del(probe, { prevResult: first.json }), 'flannel DEL (probe)');

    const direct = (verb: 'ADD' | 'DEL', pod: CniPod, id: string): Promise<CniOutcome> =>
      invokePlugin(script.host, join(script.binDir, 'bridge'), {
        PATH: SCRIPT_FORM.pathEnv, CNI_COMMAND: verb, CNI_CONTAINERID: id, CNI_NETNS: pod.netnsPath, CNI_IFNAME: 'eth0', CNI_PATH: script.binDir,
      }, delegateConf);

    const samples: Record<Variant, { add: number[]; del: number[] }> = {
      direct: { add: [], del: [] }, script: { add: [], del: [] }, sea: { add: [], del: [] }, upstream: { add: [], del: [] },
    };
    const starts: Record<'node' | NodeForm['name'], number[]> = { node: [], script: [], sea: [], upstream: [] };
    for (let r = 0; r < PODS + WARMUP; r++) {
      const keep = r >= WARMUP;
      const nodeMs = await nodeStart(script);
      if (keep) starts.node.push(nodeMs);
      for (const n of plugins) {
        const v = await versionStart(n);
        if (keep) starts[n.form.name].push(v);
      }
      const pod = pods.get(script)![r]!;
      const id = `d${process.pid}-${r}`;
      const dAdd = await direct('ADD', pod, id);
      must(dAdd, `bridge ADD ${r}`);
      const dDel = await direct('DEL', pod, id);
      must(dDel, `bridge DEL ${r}`);
      if (keep) {
        samples.direct.add.push(dAdd.ms);
        samples.direct.del.push(dDel.ms);
      }
      for (const n of plugins) {
        const p = pods.get(n)![r]!;
        const add = await n.add(p);
        must(add, `${n.form.name} ADD ${r}`);
        const del = await n.del(p, { prevResult: add.json });
        must(del, `${n.form.name} DEL ${r}`);
        if (keep) {
          samples[n.form.name].add.push(add.ms);
          samples[n.form.name].del.push(del.ms);
        }
      }
      if ((r + 1) % 50 === 0) ctx.note(`${r + 1} rounds`);
    }
    for (const n of plugins) {
      if (n.reservations().length > 0) throw new Error(`${n.form.name} node still holds ${n.reservations().length} addresses after all DELs`);
    }

    const p50 = (v: readonly number[]): number => percentile(v, 50);
    const p99 = (v: readonly number[]): number => percentile(v, 99);
    const nodeP50 = p50(starts.node);
    const budget = nodeP50 + TARGET_EXTRA_MS;
    const floorRow = (label: string, v: readonly number[], floor: readonly number[]): string[] => [label, String(v.length), ...latencyCells(v, floor), '', ''];
    const addRow = (form: Variant, label: string): string[] => {
      const overhead = p50(samples[form].add) - p50(samples.direct.add);
      return [label, String(samples[form].add.length), ...latencyCells(samples[form].add, samples.direct.add),
        `p50 − direct ≤ ${ms(budget)}`, `${verdict(overhead <= budget)} (${ms(overhead)})`];
    };
    const delRow = (form: Variant, label: string): string[] => [label, String(samples[form].del.length), ...latencyCells(samples[form].del, samples.direct.del), '', `(${ms(p50(samples[form].del) - p50(samples.direct.del))} over direct)`];
    const upstreamRow = (verb: 'add' | 'del', label: string): string[] =>
      [label, String(samples.upstream[verb].length), ...latencyCells(samples.upstream[verb], samples.direct[verb]), '', `(${ms(p50(samples.upstream[verb]) - p50(samples.direct[verb]))} over direct)`];
    // Ours minus upstream's at p50 and p99; the ratio columns are ours over upstream's.
    const versusRow = (verb: 'add' | 'del', label: string, target: boolean): string[] => {
      const ours = samples.sea[verb];
      const theirs = samples.upstream[verb];
      const gap = p50(ours) - p50(theirs);
      return [label, String(ours.length), ms(gap), ms(p99(ours) - p99(theirs)), '', ratio(p50(ours), p50(theirs)), ratio(p99(ours), p99(theirs)),
        target ? `p50 gap ≤ ${ms(TARGET_VS_UPSTREAM_MS)}` : '', target ? `${verdict(gap <= TARGET_VS_UPSTREAM_MS)} (${ms(gap)})` : ''];
    };
    const header = ['measure', 'samples', 'p50', 'p99', 'max', 'p50 × floor', 'p99 × floor', 'target', 'verdict'];
    const both = sea && up;
    const rows: string[][] = [
      floorRow('floor: `node -e 0` in the host namespace, same env as the plugin', starts.node, samples.direct.add),
      floorRow('startup: script form, CNI_COMMAND=VERSION', starts.script, samples.direct.add),
      ...(sea ? [floorRow('startup: SEA form, CNI_COMMAND=VERSION', starts.sea, samples.direct.add)] : []),
      ...(up ? [floorRow('startup: upstream\'s Go plugin, CNI_COMMAND=VERSION', starts.upstream, samples.direct.add)] : []),
      floorRow('floor: `bridge` ADD called directly (same delegate config)', samples.direct.add, samples.direct.add),
      addRow('script', 'flannel ADD, script form'),
      ...(sea ? [addRow('sea', 'flannel ADD, SEA form')] : []),
      ...(up ? [upstreamRow('add', 'upstream\'s plugin ADD')] : []),
      ...(both ? [versusRow('add', 'flannel ADD, SEA form − upstream\'s ADD', true)] : []),
      floorRow('floor: `bridge` DEL called directly', samples.direct.del, samples.direct.del),
      delRow('script', 'flannel DEL, script form'),
      ...(sea ? [delRow('sea', 'flannel DEL, SEA form')] : []),
      ...(up ? [upstreamRow('del', 'upstream\'s plugin DEL')] : []),
      ...(both ? [versusRow('del', 'flannel DEL, SEA form − upstream\'s DEL', false)] : []),
    ];
    const notes = [
      `${PODS} pods per variant after ${WARMUP} warm-up rounds; each round times \`node -e 0\` and each plugin's VERSION, then makes and removes ` +
        `one pod with \`bridge\` directly, then with the script form${sea ? ', then with the SEA form' : ''}${up ? ', then with upstream\'s plugin' : ''}, ` +
        'each plugin on its own identical node (host namespace, cni0, host-local store, same subnet). Pods are named namespaces; times are wall times of ' +
        '`ip netns exec <node> <plugin>`, process start to exit, as a runtime waits for them; ratios are against the direct `bridge` call of the same verb.',
      'Rows: `floor` is what no plugin can go under (Node starting and exiting; the delegate alone); `startup` is a plugin answering VERSION, ' +
        'which loads the whole program and spawns nothing; `flannel ADD/DEL` is our plugin as a runtime runs it (the DEL with the ADD result as prevResult)' +
        (up ? '; `upstream\'s plugin` is containernetworking/plugins v0.9.1 plugins/meta/flannel (Go), driven the same way; ' +
          '`SEA form − upstream\'s` is the difference of the two p50s (and p99s), its ratio columns ours over upstream\'s' : '') + '.',
      `Target: flannel's ADD p50 minus the direct ADD p50 at most \`node -e 0\` p50 (${ms(nodeP50)}) + ${TARGET_EXTRA_MS} ms.`,
      ...(both ? [upstreamGapNote(p50(samples.sea.add) - p50(samples.upstream.add), nodeP50 - p50(starts.upstream))] : []),
      ...(seaMissing ? [`SEA form not measured: ${seaMissing}.`] : []),
      ...(typeof upstream === 'string' ? [`Upstream's plugin not measured: ${upstream}.`] : []),
    ];
    return `${table(header, rows)}\n\n${notes.map((n) => `- ${n}`).join('\n')}\n`;
  },
});

/** How much of the gap to upstream is Node's own process start and exit, which no code of ours can remove. */
function upstreamGapNote(gap: number, nodeOwn: number): string {
  return `Target: the SEA form's ADD p50 minus upstream's ADD p50 at most ${ms(TARGET_VS_UPSTREAM_MS)}; it is ${ms(gap)}. ` +
    `Of that, ${ms(nodeOwn)} is \`node -e 0\` p50 minus upstream's VERSION p50: Node's own start and exit against a Go binary's, ` +
    `which no code of ours can remove; the other ${ms(gap - nodeOwn)} is loading our bundle and our work around the delegate.`;
}
