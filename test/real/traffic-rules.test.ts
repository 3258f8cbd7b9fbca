/**
 * The traffic managers against the real iptables (nf_tables variant) and nft, every command inside a namespace of
 * this run: the managers get an Exec that prefixes `ip netns exec <ns>`, so the root namespace's firewall is never
 * touched. Checks upstream's golden lines as iptables-save prints them, our documented nft rendering, idempotence,
 * repair, foreign rules left alone, removal, and switching between the two modes.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseCidr } from '../../flanneld/ip/cidr.js';
import { execCommand, type Exec } from '../../flanneld/runtime/exec.js';
import { IptablesTrafficManager } from '../../flanneld/traffic/iptables-manager.js';
import { NftablesTrafficManager } from '../../flanneld/traffic/nftables-manager.js';
import type { FamilyTraffic, TrafficPlan } from '../../flanneld/traffic/traffic-manager.js';
import { NetnsRun, removeStaleNamespaces, type Netns } from '../helpers/netns.js';
import { GOLDEN_V4, GOLDEN_V6, goldenIptables, goldenNft, nftTableListing } from '../helpers/golden-rules.js';

const run = new NetnsRun('tr');
const signal = new AbortController().signal;
const net = (t: string) => parseCidr(t)!;
const V4: FamilyTraffic = { clusterCidr: net('10.244.0.0/16'), podCidr: net('10.244.1.0/24') };
const V6: FamilyTraffic = { clusterCidr: net('fd00:10:244::/56'), podCidr: net('fd00:10:244:1::/64') };
const PLAN: TrafficPlan = { families: [V4, V6], masquerade: true, fullyRandom: true, forward: true, masqueradeExclude: [] };

const inNs = (ns: Netns): Exec => (argv, opts) => execCommand(['ip', 'netns', 'exec', ns.name, ...argv], opts);

const FOREIGN_NAT = '-A POSTROUTING -s 192.0.2.0/24 -j MASQUERADE';
const FOREIGN_FWD = '-A FORWARD -s 198.51.100.0/24 -j DROP';
const FOREIGN_FWD6 = '-A FORWARD -s 2001:db8::/32 -j DROP';
// Upstream's golden rules (test/helpers/golden-rules.ts) as iptables-save prints them, after the foreign rule added
// first.
const v4 = goldenIptables(GOLDEN_V4);
const v6 = goldenIptables(GOLDEN_V6);
const NAT_V4 = [':FLANNEL-POSTRTG - [0:0]', FOREIGN_NAT, v4.natJump, ...v4.nat];
const FILTER_V4 = [':FLANNEL-FWD - [0:0]', FOREIGN_FWD, v4.forwardJump, ...v4.forward];
const NAT_V6 = [':FLANNEL-POSTRTG - [0:0]', v6.natJump, ...v6.nat];
const FILTER_V6 = [':FLANNEL-FWD - [0:0]', FOREIGN_FWD6, v6.forwardJump, ...v6.forward];

// Our nftables rendering, as `nft list ruleset` prints it.
const nft4 = goldenNft(GOLDEN_V4, 'ip');
const nft6 = goldenNft(GOLDEN_V6, 'ip6');
const RULESET = [
  nftTableListing('ip', 'flannel-ipv4', nft4.postrtg, nft4.forward),
  nftTableListing('ip6', 'flannel-ipv6', nft6.postrtg, nft6.forward),
].join('\n');

/** Rule and user-chain lines of one table (no header, built-in policies or timestamps). */
const saved = async (ns: Netns, tool: 'iptables-save' | 'ip6tables-save', table: 'nat' | 'filter') =>
  (await ns.exec(tool, ['-t', table])).split('\n').filter((l) => l.startsWith('-A ') || l.startsWith(':FLANNEL'));

const allSaved = async (ns: Netns) => (await ns.exec('iptables-save', [])) + (await ns.exec('ip6tables-save', []));
/** An iptables-save line as argv, honouring its double-quoted comment. */
const argvOf = (line: string): string[] => (line.match(/"[^"]*"|\S+/g) ?? []).map((a) => a.replaceAll('"', ''));

const ruleset = async (ns: Netns) => (await ns.exec('nft', ['list', 'ruleset'])).trim();

beforeAll(() => removeStaleNamespaces());
afterAll(() => run.cleanup());

describe('IptablesTrafficManager in a namespace', () => {
  let ns: Netns;
  let mgr: IptablesTrafficManager;

  beforeAll(async () => {
    ns = await run.create('ipt');
    mgr = new IptablesTrafficManager({ exec: inNs(ns) });
    await ns.exec('iptables', ['-t', 'nat', ...argvOf(FOREIGN_NAT)]);
    await ns.exec('iptables', argvOf(FOREIGN_FWD));
    await ns.exec('ip6tables', argvOf(FOREIGN_FWD6));
  });

  const expectGolden = async () => {
    expect(await saved(ns, 'iptables-save', 'nat')).toEqual(NAT_V4);
    expect(await saved(ns, 'iptables-save', 'filter')).toEqual(FILTER_V4);
    expect(await saved(ns, 'ip6tables-save', 'nat')).toEqual(NAT_V6);
    expect(await saved(ns, 'ip6tables-save', 'filter')).toEqual(FILTER_V6);
  };

  it('installs upstream golden rules line for line, jumps appended after foreign rules', async () => {
    expect(await mgr.supportsRandomFully(signal)).toBe(true);
    expect(await mgr.matches(PLAN, signal)).toBe(false);
    await mgr.ensure(PLAN, signal);
    await expectGolden();
    expect(await mgr.matches(PLAN, signal)).toBe(true);
  });

  it('leaves exactly one jump after ensure runs twice', async () => {
    await mgr.ensure(PLAN, signal);
    await expectGolden();
  });

  it('sees a rule deleted by hand, a reordered rule and a missing jump, and ensure repairs each', async () => {
    await ns.exec('iptables', ['-t', 'nat', '-D', ...argvOf(NAT_V4[5]!).slice(1)]);
    expect(await mgr.matches(PLAN, signal)).toBe(false);
    await mgr.ensure(PLAN, signal);
    await expectGolden();

    await ns.exec('iptables', ['-t', 'nat', '-D', 'FLANNEL-POSTRTG', '1']);
    await ns.exec('iptables', ['-t', 'nat', ...argvOf(NAT_V4[3]!)]);
    expect(await mgr.matches(PLAN, signal)).toBe(false);
    await mgr.ensure(PLAN, signal);
    await expectGolden();

    await ns.exec('ip6tables', ['-D', ...argvOf(FILTER_V6[2]!).slice(1)]);
    expect(await mgr.matches(PLAN, signal)).toBe(false);
    await mgr.ensure(PLAN, signal);
    await expectGolden();
  });

  it('adds a RETURN per --ip-masq-exclude network before the MASQUERADE rules, as iptables-save spells it', async () => {
    const excluded = { ...PLAN, masqueradeExclude: [net('203.0.113.0/24'), net('2001:db8:3::/64')] };
    await mgr.ensure(excluded, signal);
    expect((await saved(ns, 'iptables-save', 'nat'))[7]).toBe('-A FLANNEL-POSTRTG -s 10.244.0.0/16 -d 203.0.113.0/24 -m comment --comment "flanneld masq" -j RETURN');
    expect((await saved(ns, 'ip6tables-save', 'nat'))[6]).toBe('-A FLANNEL-POSTRTG -s fd00:10:244::/56 -d 2001:db8:3::/64 -m comment --comment "flanneld masq" -j RETURN');
    expect(await mgr.matches(excluded, signal)).toBe(true);
    expect(await mgr.matches(PLAN, signal)).toBe(false);
    await mgr.ensure(PLAN, signal);
    await expectGolden();
  });

  it('removes FLANNEL-POSTRTG and its jump when masquerade is turned off, keeping FLANNEL-FWD', async () => {
    await mgr.ensure({ ...PLAN, masquerade: false }, signal);
    expect(await saved(ns, 'iptables-save', 'nat')).toEqual([FOREIGN_NAT]);
    expect(await saved(ns, 'iptables-save', 'filter')).toEqual(FILTER_V4);
    expect(await mgr.matches({ ...PLAN, masquerade: false }, signal)).toBe(true);
  });

  it('removeAll removes every chain and jump of ours and nothing else, and may run twice', async () => {
    await mgr.ensure(PLAN, signal);
    await mgr.removeAll(signal);
    await mgr.removeAll(signal);
    expect(await allSaved(ns)).not.toContain('FLANNEL');
    expect(await saved(ns, 'iptables-save', 'nat')).toEqual([FOREIGN_NAT]);
    expect(await saved(ns, 'iptables-save', 'filter')).toEqual([FOREIGN_FWD]);
    expect(await saved(ns, 'ip6tables-save', 'filter')).toEqual([FOREIGN_FWD6]);
  });
});

describe('NftablesTrafficManager in a namespace', () => {
  let ns: Netns;
  let mgr: NftablesTrafficManager;
  const FOREIGN = 'table inet foreign {\n\tchain guard {\n\t\ttype filter hook forward priority filter + 10; policy accept;\n\t\tip saddr 198.51.100.0/24 drop\n\t}\n}';

  beforeAll(async () => {
    ns = await run.create('nft');
    mgr = new NftablesTrafficManager({ exec: inNs(ns) });
  });

  it('renders the documented rule set in ip flannel-ipv4 and ip6 flannel-ipv6, without leaving a probe behind', async () => {
    expect(await mgr.supportsRandomFully(signal)).toBe(true);
    expect(await ruleset(ns)).toBe('');
    expect(await mgr.matches(PLAN, signal)).toBe(false);
    await mgr.ensure(PLAN, signal);
    expect(await ruleset(ns)).toBe(RULESET);
    expect(await mgr.matches(PLAN, signal)).toBe(true);
  });

  it('is idempotent and leaves a foreign table alone', async () => {
    await ns.exec('nft', ['-f', '-'], `${FOREIGN}\n`);
    await mgr.ensure(PLAN, signal);
    expect(await ruleset(ns)).toBe(`${RULESET}\n${FOREIGN}`);
  });

  it('sees a rule deleted by hand and ensure restores it', async () => {
    const listed = await ns.exec('nft', ['-a', 'list', 'chain', 'ip', 'flannel-ipv4', 'postrtg']);
    const handle = /ip saddr 10\.244\.0\.0\/16 ip daddr 10\.244\.1\.0\/24 return # handle (\d+)/.exec(listed)?.[1];
    expect(handle).toBeDefined();
    await ns.exec('nft', ['delete', 'rule', 'ip', 'flannel-ipv4', 'postrtg', 'handle', handle!]);
    expect(await mgr.matches(PLAN, signal)).toBe(false);
    await mgr.ensure(PLAN, signal);
    expect(await mgr.matches(PLAN, signal)).toBe(true);
    expect(await ruleset(ns)).toBe(`${RULESET}\n${FOREIGN}`);
  });

  it('adds a return per --ip-masq-exclude network before masquerading, as nft lists it', async () => {
    const excluded = { ...PLAN, masqueradeExclude: [net('203.0.113.0/24'), net('2001:db8:3::/64')] };
    await mgr.ensure(excluded, signal);
    expect(await mgr.matches(excluded, signal)).toBe(true);
    const listed = await ruleset(ns);
    expect(listed).toContain('\t\tip saddr 10.244.0.0/16 ip daddr 203.0.113.0/24 return\n\t\tip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random');
    expect(listed).toContain('\t\tip6 saddr fd00:10:244::/56 ip6 daddr 2001:db8:3::/64 return\n');
    await mgr.ensure(PLAN, signal);
    expect(await ruleset(ns)).toBe(`${RULESET}\n${FOREIGN}`);
  });

  it('removeAll deletes both tables, keeps the foreign one, and may run twice', async () => {
    await mgr.removeAll(signal);
    await mgr.removeAll(signal);
    expect(await ruleset(ns)).toBe(FOREIGN);
  });
});

describe('switching modes in a namespace', () => {
  let ns: Netns;
  let ipt: IptablesTrafficManager;
  let nft: NftablesTrafficManager;

  beforeAll(async () => {
    ns = await run.create('sw');
    ipt = new IptablesTrafficManager({ exec: inNs(ns) });
    nft = new NftablesTrafficManager({ exec: inNs(ns) });
  });

  it('iptables -> nftables leaves no FLANNEL-* chain behind', async () => {
    await ipt.ensure(PLAN, signal);
    expect(await allSaved(ns)).toContain('FLANNEL-FWD');
    await ipt.removeAll(signal);
    await nft.ensure(PLAN, signal);
    expect(await allSaved(ns)).not.toContain('FLANNEL');
    const rules = await ruleset(ns);
    expect(rules).not.toContain('FLANNEL');
    expect(rules).toContain(RULESET);
  });

  it('nftables -> iptables leaves no flannel-ipv4/ipv6 table behind', async () => {
    await nft.removeAll(signal);
    await ipt.ensure(PLAN, signal);
    expect(await ipt.matches(PLAN, signal)).toBe(true);
    expect(await ruleset(ns)).not.toMatch(/flannel-ipv[46]/);
    await ipt.removeAll(signal);
    expect(await ruleset(ns)).not.toContain('FLANNEL');
  });
});
