#!/usr/bin/env node
/**
 * CNI ADD and DEL latency of the `flannel` plugin over 200 pods, for the script form and the self-contained (SEA)
 * form, driven as a runtime drives it (cni-runtime.ts: Debian's bridge + host-local, pods as namespaces). Floors in
 * the same run: the same pods made by calling `bridge` directly with the config flannel renders for it, `node -e 0`,
 * and each form's own startup (CNI_COMMAND=VERSION). Rounds interleave everything (floors, then direct, script and
 * SEA ADD+DEL of one pod each), so drift on a shared machine hits all of them alike.
 * Target (issue 6): at p50, the plugin's ADD minus the direct delegate's ADD ≤ `node -e 0` + 15 ms.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CniNode, formUnavailable, invokePlugin, REPO, SCRIPT_FORM, SEA_FORM, type CniOutcome, type CniPod, type PluginForm } from '../helpers/cni-runtime.js';
import { benchMain, latencyCells, ms, percentile, table, verdict } from './bench-kit.js';

const PODS = 200;
const WARMUP = 5;
const TARGET_EXTRA_MS = 15;

type Variant = 'direct' | PluginForm['name'];

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

/**
 * `node -e 0` with the plugin's own environment (PATH only): an inherited NODE_EXTRA_CA_CERTS or NODE_OPTIONS would
 * make the floor slower than what a runtime's plugin process pays.
 */
async function nodeStart(node: CniNode): Promise<number> {
  const r = await invokePlugin(node.host, process.execPath, { PATH: SCRIPT_FORM.pathEnv }, '', ['-e', '0']);
  must(r, 'node -e 0');
  return r.ms;
}

/** The form's own startup floor: VERSION loads and runs the whole bundle but spawns nothing. */
async function versionStart(node: CniNode): Promise<number> {
  const v = await node.version('1.0.0');
  must(v, `${node.form.name} VERSION`);
  return v.ms;
}

benchMain({
  tag: 'cl',
  title: `CNI plugin ADD/DEL latency over ${PODS} pods`,
  deadlineMs: 230_000,
  body: async (ctx) => {
    const scriptMissing = formUnavailable(SCRIPT_FORM);
    if (scriptMissing) throw new Error(scriptMissing);
    const seaMissing = ensureSea((t) => ctx.note(t));
    const forms: PluginForm[] = seaMissing ? [SCRIPT_FORM] : [SCRIPT_FORM, SEA_FORM];
    if (seaMissing) ctx.note(`SEA form left out: ${seaMissing}`);

    // One node (host namespace, cni0, host-local store) shared by every variant; each form has its own CNI bin dir
    // view of the same state dirs, so all variants hit the same bridge and the same address pool.
    const script = await CniNode.create(ctx.run, { name: 'node', form: SCRIPT_FORM });
    ctx.defer(() => script.cleanup());
    const sea = forms.includes(SEA_FORM) ? await CniNode.create(ctx.run, { name: 'seanode', form: SEA_FORM }) : undefined;
    if (sea) ctx.defer(() => sea.cleanup());
    const pods: CniPod[] = [];
    for (let i = 0; i < PODS + WARMUP; i++) pods.push(await script.pod(`p${i}`));
    ctx.note(`${pods.length} pod namespaces ready`);

    // The direct delegate gets exactly what flannel saved for a pod: bridge + host-local over the node subnet.
    const probe = pods[0]!;
    const first = await script.add(probe);
    must(first, 'flannel ADD (probe)');
    const delegateConf = readFileSync(join(script.dataDir, probe.containerId), 'utf8');
    must(await script.del(probe, { prevResult: first.json }), 'flannel DEL (probe)');

    // The SEA form runs in its own host namespace (a second node) with the same subnet; its direct floor is the
    // script node's, which runs the same bridge on an identical node.
    const seaPods: CniPod[] = [];
    if (sea) for (let i = 0; i < PODS + WARMUP; i++) seaPods.push(await sea.pod(`s${i}`));

    const direct = (verb: 'ADD' | 'DEL', pod: CniPod, id: string): Promise<CniOutcome> =>
      invokePlugin(script.host, join(script.binDir, 'bridge'), {
        PATH: SCRIPT_FORM.pathEnv, CNI_COMMAND: verb, CNI_CONTAINERID: id, CNI_NETNS: pod.netnsPath, CNI_IFNAME: 'eth0', CNI_PATH: script.binDir,
      }, delegateConf);

    const samples: Record<Variant, { add: number[]; del: number[] }> = { direct: { add: [], del: [] }, script: { add: [], del: [] }, sea: { add: [], del: [] } };
    const starts = { node: [] as number[], script: [] as number[], sea: [] as number[] };
    for (let r = 0; r < PODS + WARMUP; r++) {
      const keep = r >= WARMUP;
      const nodeMs = await nodeStart(script);
      const scriptMs = await versionStart(script);
      const seaMs = sea ? await versionStart(sea) : Number.NaN;
      if (keep) {
        starts.node.push(nodeMs);
        starts.script.push(scriptMs);
        if (sea) starts.sea.push(seaMs);
      }
      const pod = pods[r]!;
      const id = `d${process.pid}-${r}`;
      const dAdd = await direct('ADD', pod, id);
      must(dAdd, `bridge ADD ${r}`);
      const dDel = await direct('DEL', pod, id);
      must(dDel, `bridge DEL ${r}`);
      const fAdd = await script.add(pod);
      must(fAdd, `flannel (script) ADD ${r}`);
      const fDel = await script.del(pod, { prevResult: fAdd.json });
      must(fDel, `flannel (script) DEL ${r}`);
      if (keep) {
        samples.direct.add.push(dAdd.ms);
        samples.direct.del.push(dDel.ms);
        samples.script.add.push(fAdd.ms);
        samples.script.del.push(fDel.ms);
      }
      if (sea) {
        const sp = seaPods[r]!;
        const sAdd = await sea.add(sp);
        must(sAdd, `flannel (SEA) ADD ${r}`);
        const sDel = await sea.del(sp, { prevResult: sAdd.json });
        must(sDel, `flannel (SEA) DEL ${r}`);
        if (keep) {
          samples.sea.add.push(sAdd.ms);
          samples.sea.del.push(sDel.ms);
        }
      }
      if ((r + 1) % 50 === 0) ctx.note(`${r + 1} rounds`);
    }
    for (const n of [script, sea]) {
      if (n && n.reservations().length > 0) throw new Error(`${n.form.name} node still holds ${n.reservations().length} addresses after all DELs`);
    }

    const p50 = (v: readonly number[]): number => percentile(v, 50);
    const nodeP50 = p50(starts.node);
    const budget = nodeP50 + TARGET_EXTRA_MS;
    const floorRow = (label: string, v: readonly number[], floor: readonly number[]): string[] => [label, String(v.length), ...latencyCells(v, floor), '', ''];
    const addRow = (form: Variant, label: string): string[] => {
      const overhead = p50(samples[form].add) - p50(samples.direct.add);
      return [label, String(samples[form].add.length), ...latencyCells(samples[form].add, samples.direct.add),
        `p50 − direct ≤ ${ms(budget)}`, `${verdict(overhead <= budget)} (${ms(overhead)})`];
    };
    const delRow = (form: Variant, label: string): string[] => [label, String(samples[form].del.length), ...latencyCells(samples[form].del, samples.direct.del), '', `(${ms(p50(samples[form].del) - p50(samples.direct.del))} over direct)`];
    const header = ['measure', 'samples', 'p50', 'p99', 'max', 'p50 × floor', 'p99 × floor', 'target', 'verdict'];
    const rows: string[][] = [
      floorRow('floor: `node -e 0` in the host namespace, same env as the plugin', starts.node, samples.direct.add),
      floorRow('startup: script form, CNI_COMMAND=VERSION', starts.script, samples.direct.add),
      ...(sea ? [floorRow('startup: SEA form, CNI_COMMAND=VERSION', starts.sea, samples.direct.add)] : []),
      floorRow('floor: `bridge` ADD called directly (same delegate config)', samples.direct.add, samples.direct.add),
      addRow('script', 'flannel ADD, script form'),
      ...(sea ? [addRow('sea', 'flannel ADD, SEA form')] : []),
      floorRow('floor: `bridge` DEL called directly', samples.direct.del, samples.direct.del),
      delRow('script', 'flannel DEL, script form'),
      ...(sea ? [delRow('sea', 'flannel DEL, SEA form')] : []),
    ];
    const notes = [
      `${PODS} pods per variant after ${WARMUP} warm-up rounds; each round times \`node -e 0\` and each form's VERSION, then makes and removes ` +
        `one pod with \`bridge\` directly, then with the script form${sea ? ', then with the SEA form (on a second, identical node)' : ''}. Pods are named namespaces; times are wall times of \`ip netns exec <node> <plugin>\`, ` +
        'process start to exit, as a runtime waits for them; ratios are against the direct `bridge` call of the same verb.',
      `Target: flannel's ADD p50 minus the direct ADD p50 at most \`node -e 0\` p50 (${ms(nodeP50)}) + ${TARGET_EXTRA_MS} ms.`,
      ...(seaMissing ? [`SEA form not measured: ${seaMissing}.`] : []),
    ];
    return `${table(header, rows)}\n\n${notes.map((n) => `- ${n}`).join('\n')}\n`;
  },
});
