/**
 * flannel's iptables rules as pure text. Rules are spelled exactly as iptables-save prints them (and as flannel's
 * e2e golden output shows them), so a saved chain compares line for line with the plan. The restore payload
 * declares our chain, which under --noflush flushes it, refills it, and moves the jump to the end of the parent
 * chain; it deletes only jumps that iptables-save showed, because a `-D` of an absent rule fails the whole table.
 */
import type { Family } from '../ip/address.js';
import { formatCidr } from '../ip/cidr.js';
import type { FamilyTraffic, TrafficPlan } from './traffic-manager.js';

export type IptablesTable = 'nat' | 'filter';

/** One chain of ours: the table it lives in and the built-in chain that jumps to it. */
export interface IptablesChainRef {
  readonly table: IptablesTable;
  readonly chain: string;
  readonly parent: string;
  readonly comment: string;
}

export const MASQ_CHAIN: IptablesChainRef = Object.freeze({
  table: 'nat',
  chain: 'FLANNEL-POSTRTG',
  parent: 'POSTROUTING',
  // verbatim upstream: flannel pkg/trafficmngr/iptables/iptables.go rule comment
  comment: 'flanneld masq',
});

export const FORWARD_CHAIN: IptablesChainRef = Object.freeze({
  table: 'filter',
  chain: 'FLANNEL-FWD',
  parent: 'FORWARD',
  // verbatim upstream: flannel pkg/trafficmngr/iptables/iptables.go rule comment
  comment: 'flanneld forward',
});

/** Every chain this mode may own, per family; removeAll and ensure walk this list. */
export const IPTABLES_CHAINS: readonly IptablesChainRef[] = Object.freeze([MASQ_CHAIN, FORWARD_CHAIN]);

/** What one of our chains should hold. */
export interface IptablesChainRules {
  readonly ref: IptablesChainRef;
  /** `-A <chain> ...` lines in order, in iptables-save's spelling. */
  readonly rules: readonly string[];
  /** The `-A <parent> ... -j <chain>` line. */
  readonly jump: string;
}

/** What iptables-save showed of one of our chains. */
export interface SavedIptablesChain {
  readonly chainExists: boolean;
  readonly rules: readonly string[];
  /** Every parent-chain rule that jumps to ours, as saved: normally none or one. */
  readonly jumps: readonly string[];
}

export function iptablesTools(family: Family): { readonly save: string; readonly restore: string } {
  return family === 4
    ? { save: 'iptables-save', restore: 'iptables-restore' }
    : { save: 'ip6tables-save', restore: 'ip6tables-restore' };
}

/** The chains the plan needs for one family, in table order (nat, then filter); unused chains are absent. */
export function iptablesRules(plan: TrafficPlan, family: FamilyTraffic): readonly IptablesChainRules[] {
  const out: IptablesChainRules[] = [];
  if (plan.masquerade) out.push(chainRules(MASQ_CHAIN, masqRuleBodies(family, plan.fullyRandom, excludedFor(plan, family))));
  if (plan.forward) out.push(chainRules(FORWARD_CHAIN, forwardRuleBodies(family)));
  return out;
}

function masqRuleBodies(family: FamilyTraffic, fullyRandom: boolean, excluded: readonly string[]): string[] {
  const cluster = formatCidr(family.clusterCidr);
  const pod = formatCidr(family.podCidr);
  const multicast = family.clusterCidr.family === 4 ? '224.0.0.0/4' : 'ff00::/8';
  const masq = fullyRandom ? 'MASQUERADE --random-fully' : 'MASQUERADE';
  // The kube-proxy mark comes first: packets kube-proxy will masquerade must not be NATed twice.
  const rows: ReadonlyArray<readonly [match: string, target: string]> = [
    ['-m mark --mark 0x4000/0x4000', 'RETURN'],
    [`-s ${pod} -d ${cluster}`, 'RETURN'],
    [`-s ${cluster} -d ${pod}`, 'RETURN'],
    [`! -s ${cluster} -d ${pod}`, 'RETURN'],
    ...excluded.map((dest) => [`-s ${cluster} -d ${dest}`, 'RETURN'] as const),
    [`-s ${cluster} ! -d ${multicast}`, masq],
    [`! -s ${cluster} -d ${cluster}`, masq],
  ];
  return rows.map(([match, target]) => withComment(match, MASQ_CHAIN.comment, target));
}

/** The --ip-masq-exclude networks of this family, as both rule languages spell them. */
export function excludedFor(plan: TrafficPlan, family: FamilyTraffic): string[] {
  return plan.masqueradeExclude.filter((n) => n.family === family.clusterCidr.family).map(formatCidr);
}

function forwardRuleBodies(family: FamilyTraffic): string[] {
  const cluster = formatCidr(family.clusterCidr);
  return [`-s ${cluster}`, `-d ${cluster}`].map((match) => withComment(match, FORWARD_CHAIN.comment, 'ACCEPT'));
}

function withComment(match: string, comment: string, target: string): string {
  return `${match} -m comment --comment "${comment}" -j ${target}`;
}

function chainRules(ref: IptablesChainRef, bodies: readonly string[]): IptablesChainRules {
  return {
    ref,
    rules: bodies.map((body) => `-A ${ref.chain} ${body}`),
    jump: `-A ${ref.parent} -m comment --comment "${ref.comment}" -j ${ref.chain}`,
  };
}

/** The iptables-restore --noflush payload that makes one table hold exactly `wanted`, with the jump appended last. */
export function renderIptablesRestore(wanted: IptablesChainRules, saved: SavedIptablesChain): string {
  const { table, chain } = wanted.ref;
  return [
    `*${table}`,
    `:${chain} - [0:0]`,
    ...saved.jumps.map(deleteLine),
    ...wanted.rules,
    wanted.jump,
    'COMMIT',
    '',
  ].join('\n');
}

/** The payload that removes our chain and every jump to it, or undefined when neither is there. */
export function renderIptablesRemoval(ref: IptablesChainRef, saved: SavedIptablesChain): string | undefined {
  if (!saved.chainExists && saved.jumps.length === 0) return undefined;
  // A chain must be empty and unreferenced before -X; declaring it flushes it under --noflush.
  const dropChain = saved.chainExists ? [`:${ref.chain} - [0:0]`, `-X ${ref.chain}`] : [];
  return [`*${ref.table}`, ...saved.jumps.map(deleteLine), ...dropChain, 'COMMIT', ''].join('\n');
}

function deleteLine(saved: string): string {
  return `-D${saved.slice(2)}`;
}

/** Reads our chain and its jumps out of `iptables-save -t <table>` output (other tables' sections are ignored). */
export function parseIptablesSave(text: string, ref: IptablesChainRef): SavedIptablesChain {
  let inTable = false;
  let chainExists = false;
  const rules: string[] = [];
  const jumps: string[] = [];
  const jumpTarget = new RegExp(`\\s-j ${escapeRegExp(ref.chain)}(\\s|$)`);
  for (const raw of text.split('\n')) {
    const line = raw.trimEnd();
    if (line.startsWith('*')) inTable = line === `*${ref.table}`;
    else if (!inTable) continue;
    else if (line === 'COMMIT') inTable = false;
    else if (line.startsWith(`:${ref.chain} `)) chainExists = true;
    else if (line.startsWith(`-A ${ref.chain} `)) rules.push(line);
    else if (line.startsWith(`-A ${ref.parent} `) && jumpTarget.test(line)) jumps.push(line);
  }
  return { chainExists, rules, jumps };
}

/** True when the chain holds exactly the wanted rules in order and the parent jumps to it exactly once. */
export function iptablesMatches(wanted: IptablesChainRules, saved: SavedIptablesChain): boolean {
  return (
    saved.chainExists &&
    saved.rules.length === wanted.rules.length &&
    saved.rules.every((line, i) => line === wanted.rules[i]) &&
    saved.jumps.length === 1 &&
    saved.jumps[0] === wanted.jump
  );
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** The x.y.z of `iptables --version` ("iptables v1.8.9 (nf_tables)"), or undefined when it cannot be read. */
export function parseIptablesVersion(text: string): readonly [number, number, number] | undefined {
  const m = /v(\d+)\.(\d+)\.(\d+)/.exec(text);
  return m ? [Number(m[1]), Number(m[2]), Number(m[3])] : undefined;
}

/** iptables 1.6.2 brought both `--random-fully` and `iptables-restore --wait` (go-iptables uses the same cut). */
export function hasRandomFullyAndWait(version: readonly [number, number, number]): boolean {
  const [major, minor, patch] = version;
  return major > 1 || (major === 1 && (minor > 6 || (minor === 6 && patch >= 2)));
}
