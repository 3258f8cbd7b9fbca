/**
 * flannel's nftables rules as pure text: the tables, chains and rules of upstream's nftables manager with the
 * differences of docs/compatibility.md#traffic-rules applied (masked kube-proxy mark, `saddr != clusterCIDR` in the 4th
 * rule, so both modes mean the same). Rules are spelled as `nft list table` prints them, so a listing compares line for
 * line. The ensure script is one `nft -f` transaction; adding an existing table or chain is a no-op, so it is
 * idempotent.
 */
import type { Family } from '../ip/address.js';
import { formatCidr } from '../ip/cidr.js';
import { excludedFor } from './render-iptables.js';
import type { FamilyTraffic, TrafficPlan } from './traffic-manager.js';

export interface NftTableRef {
  readonly family: 'ip' | 'ip6';
  readonly name: string;
}

export const NFT_TABLE_V4: NftTableRef = Object.freeze({ family: 'ip', name: 'flannel-ipv4' });
export const NFT_TABLE_V6: NftTableRef = Object.freeze({ family: 'ip6', name: 'flannel-ipv6' });
export const NFT_TABLES: readonly NftTableRef[] = Object.freeze([NFT_TABLE_V4, NFT_TABLE_V6]);

export function nftTableFor(family: Family): NftTableRef {
  return family === 4 ? NFT_TABLE_V4 : NFT_TABLE_V6;
}

/** A base chain of ours; `priority` is the number nft's named priority stands for in the ip/ip6 families. */
export interface NftChainSpec {
  readonly name: string;
  readonly type: 'nat' | 'filter';
  readonly hook: 'postrouting' | 'forward';
  readonly priorityName: 'srcnat' | 'filter';
  readonly priority: number;
  /** Upstream sets a policy only on the forward chain; nat chains default to accept anyway. */
  readonly policy?: 'accept';
  readonly comment: string;
}

export const NFT_POSTRTG: NftChainSpec = Object.freeze({
  name: 'postrtg',
  type: 'nat',
  hook: 'postrouting',
  priorityName: 'srcnat',
  priority: 100,
  // verbatim upstream: flannel pkg/trafficmngr/nftables/nftables.go chain comment
  comment: 'chain to manage traffic masquerading by flannel',
});

export const NFT_FORWARD: NftChainSpec = Object.freeze({
  name: 'forward',
  type: 'filter',
  hook: 'forward',
  priorityName: 'filter',
  priority: 0,
  policy: 'accept',
  // verbatim upstream: flannel pkg/trafficmngr/nftables/nftables.go chain comment
  comment: 'chain to accept flannel traffic',
});

export const NFT_CHAINS: readonly NftChainSpec[] = Object.freeze([NFT_POSTRTG, NFT_FORWARD]);

export interface NftChainRules {
  readonly spec: NftChainSpec;
  /** Rule bodies in order, as `nft list` prints them. */
  readonly rules: readonly string[];
}

export interface NftTableRules {
  readonly table: NftTableRef;
  /** Only the chains the plan uses. */
  readonly chains: readonly NftChainRules[];
}

export function nftRules(plan: TrafficPlan, family: FamilyTraffic): NftTableRules {
  const fam = family.clusterCidr.family;
  const ip = fam === 4 ? 'ip' : 'ip6';
  const cluster = formatCidr(family.clusterCidr);
  const pod = formatCidr(family.podCidr);
  const chains: NftChainRules[] = [];
  if (plan.masquerade) {
    const masq = plan.fullyRandom ? 'masquerade fully-random' : 'masquerade';
    const multicast = fam === 4 ? '224.0.0.0/4' : 'ff00::/8';
    chains.push({
      spec: NFT_POSTRTG,
      rules: [
        'meta mark & 0x00004000 == 0x00004000 return',
        `${ip} saddr ${pod} ${ip} daddr ${cluster} return`,
        `${ip} saddr ${cluster} ${ip} daddr ${pod} return`,
        `${ip} saddr != ${cluster} ${ip} daddr ${pod} return`,
        ...excludedFor(plan, family).map((dest) => `${ip} saddr ${cluster} ${ip} daddr ${dest} return`),
        `${ip} saddr ${cluster} ${ip} daddr != ${multicast} ${masq}`,
        `${ip} saddr != ${cluster} ${ip} daddr ${cluster} ${masq}`,
      ],
    });
  }
  if (plan.forward) {
    chains.push({ spec: NFT_FORWARD, rules: [`${ip} saddr ${cluster} accept`, `${ip} daddr ${cluster} accept`] });
  }
  return { table: nftTableFor(fam), chains };
}

/** One transaction: per family, create the table and used chains, flush and refill them, delete unused chains. */
export function renderNftEnsure(plan: TrafficPlan): string {
  const lines: string[] = [];
  for (const family of plan.families) {
    const { table, chains } = nftRules(plan, family);
    const t = `${table.family} ${table.name}`;
    // verbatim upstream: flannel pkg/trafficmngr/nftables/nftables.go, the table comment "rules for <name>"
    lines.push(`add table ${t} { comment "rules for ${table.name}" ; }`);
    for (const spec of NFT_CHAINS) {
      const wanted = chains.find((c) => c.spec === spec);
      if (wanted) {
        lines.push(`add chain ${t} ${spec.name} { ${chainSpecText(spec)} }`, `flush chain ${t} ${spec.name}`);
        lines.push(...wanted.rules.map((rule) => `add rule ${t} ${spec.name} ${rule}`));
      } else {
        // nft 1.0.6 has no `destroy`: adding first makes the delete safe whether or not the chain exists.
        lines.push(`add chain ${t} ${spec.name}`, `flush chain ${t} ${spec.name}`, `delete chain ${t} ${spec.name}`);
      }
    }
  }
  return lines.map((line) => `${line}\n`).join('');
}

function chainSpecText(spec: NftChainSpec): string {
  const policy = spec.policy ? ` policy ${spec.policy} ;` : '';
  return `type ${spec.type} hook ${spec.hook} priority ${spec.priorityName} ;${policy} comment "${spec.comment}" ;`;
}

/** Deletes both tables in one transaction, whether or not they exist. */
export function renderNftRemoval(): string {
  return NFT_TABLES.map((t) => `add table ${t.family} ${t.name}\ndelete table ${t.family} ${t.name}\n`).join('');
}

/** A `nft --check` script that fails where the kernel or nft cannot do `masquerade fully-random`. */
export function renderNftFullyRandomProbe(): string {
  const t = `${NFT_TABLE_V4.family} ${NFT_TABLE_V4.name}`;
  return [
    `add table ${t}`,
    `add chain ${t} masqueradeTest { type nat hook postrouting priority srcnat ; }`,
    `add rule ${t} masqueradeTest masquerade fully-random`,
    '',
  ].join('\n');
}

/** One chain as `nft list table` shows it; the hook fields are absent for a regular chain. */
export interface ListedNftChain {
  readonly type?: string;
  readonly hook?: string;
  readonly priority?: number;
  readonly policy?: string;
  readonly rules: readonly string[];
}

/** Names of the ip/ip6 families' standard priorities (nft(8), "PRIORITY"); older nft prints the numbers. */
const PRIORITY_NAMES: Readonly<Record<string, number>> = Object.freeze({
  raw: -300, mangle: -150, dstnat: -100, filter: 0, security: 50, srcnat: 100,
});

/** Chains by name from `nft list table <family> <name>` output. */
export function parseNftTable(text: string): ReadonlyMap<string, ListedNftChain> {
  const chains = new Map<string, ListedNftChain>();
  let current: { name: string; hook: Omit<ListedNftChain, 'rules'>; rules: string[] } | undefined;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    const start = /^chain (\S+) \{$/.exec(line);
    if (start) {
      current = { name: start[1] as string, hook: {}, rules: [] };
    } else if (!current) {
      continue;
    } else if (line === '}') {
      chains.set(current.name, { ...current.hook, rules: current.rules });
      current = undefined;
    } else if (line.startsWith('type ')) {
      current.hook = parseChainHeader(line);
    } else if (line !== '' && !line.startsWith('comment "')) {
      current.rules.push(line);
    }
  }
  return chains;
}

function parseChainHeader(line: string): Omit<ListedNftChain, 'rules'> {
  const m = /^type (\S+) hook (\S+)(?: device \S+)? priority ([^;]+);(?: policy (\w+);)?/.exec(line);
  if (!m) return {};
  const prio = (m[3] as string).trim();
  const priority = /^-?\d+$/.test(prio) ? Number(prio) : PRIORITY_NAMES[prio];
  return {
    type: m[1] as string,
    hook: m[2] as string,
    ...(priority !== undefined ? { priority } : {}),
    ...(m[4] !== undefined ? { policy: m[4] } : {}),
  };
}

/** True when every wanted chain has our hook, priority and policy and holds exactly the wanted rules in order. */
export function nftMatches(wanted: NftTableRules, listed: ReadonlyMap<string, ListedNftChain>): boolean {
  return wanted.chains.every(({ spec, rules }) => {
    const chain = listed.get(spec.name);
    return (
      chain !== undefined &&
      chain.type === spec.type &&
      chain.hook === spec.hook &&
      chain.priority === spec.priority &&
      (chain.policy ?? 'accept') === (spec.policy ?? 'accept') &&
      chain.rules.length === rules.length &&
      chain.rules.every((rule, i) => rule === rules[i])
    );
  });
}

/** "family name" keys from `nft list tables` output ("table ip flannel-ipv4" lines). */
export function parseNftTableList(text: string): ReadonlySet<string> {
  const names = new Set<string>();
  for (const line of text.split('\n')) {
    const m = /^table (\S+) (\S+)$/.exec(line.trim());
    if (m) names.add(`${m[1]} ${m[2]}`);
  }
  return names;
}
