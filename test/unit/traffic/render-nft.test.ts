import { describe, expect, it } from 'vitest';
import { parseCidr } from '../../../flanneld/ip/cidr.js';
import {
  NFT_FORWARD,
  NFT_POSTRTG,
  NFT_TABLE_V4,
  NFT_TABLE_V6,
  nftMatches,
  nftRules,
  parseNftTable,
  parseNftTableList,
  renderNftEnsure,
  renderNftRemoval,
} from '../../../flanneld/traffic/render-nft.js';
import type { FamilyTraffic, TrafficPlan } from '../../../flanneld/traffic/traffic-manager.js';
import { GOLDEN_V4, goldenNft, nftTableListing } from '../../helpers/golden-rules.js';

const net = (t: string) => parseCidr(t)!;
const V4: FamilyTraffic = { clusterCidr: net('10.244.0.0/16'), podCidr: net('10.244.1.0/24') };
const V6: FamilyTraffic = { clusterCidr: net('fd00:10:244::/56'), podCidr: net('fd00:10:244:1::/64') };
const plan = (over: Partial<TrafficPlan> = {}): TrafficPlan => ({
  families: [V4], masquerade: true, fullyRandom: true, forward: true, masqueradeExclude: [], ...over,
});

const { postrtg: POSTRTG_V4, forward: FORWARD_V4 } = goldenNft(GOLDEN_V4, 'ip');

// What nft 1.0.6 printed for `nft list table ip flannel-ipv4` after our ensure script.
const LISTED_V4 = `${nftTableListing('ip', 'flannel-ipv4', POSTRTG_V4, FORWARD_V4)}\n`;

describe('nftRules', () => {
  it('renders the documented rule set for IPv4', () => {
    expect(nftRules(plan(), V4)).toEqual({
      table: NFT_TABLE_V4,
      chains: [
        { spec: NFT_POSTRTG, rules: POSTRTG_V4 },
        { spec: NFT_FORWARD, rules: FORWARD_V4 },
      ],
    });
  });

  it('returns before masquerading for each --ip-masq-exclude network of the family', () => {
    const excluded = plan({ masqueradeExclude: [net('203.0.113.0/24'), net('2001:db8:3::/64')] });
    expect(nftRules(excluded, V4).chains[0]!.rules[4]).toBe('ip saddr 10.244.0.0/16 ip daddr 203.0.113.0/24 return');
    expect(nftRules(excluded, V6).chains[0]!.rules[4]).toBe('ip6 saddr fd00:10:244::/56 ip6 daddr 2001:db8:3::/64 return');
    expect(nftRules(excluded, V4).chains[0]!.rules).toHaveLength(7);
  });

  it('uses ip6 matches and ff00::/8 for IPv6', () => {
    const { table, chains } = nftRules(plan(), V6);
    expect(table).toBe(NFT_TABLE_V6);
    expect(chains[0]!.rules).toEqual([
      'meta mark & 0x00004000 == 0x00004000 return',
      'ip6 saddr fd00:10:244:1::/64 ip6 daddr fd00:10:244::/56 return',
      'ip6 saddr fd00:10:244::/56 ip6 daddr fd00:10:244:1::/64 return',
      'ip6 saddr != fd00:10:244::/56 ip6 daddr fd00:10:244:1::/64 return',
      'ip6 saddr fd00:10:244::/56 ip6 daddr != ff00::/8 masquerade fully-random',
      'ip6 saddr != fd00:10:244::/56 ip6 daddr fd00:10:244::/56 masquerade fully-random',
    ]);
    expect(chains[1]!.rules).toEqual(['ip6 saddr fd00:10:244::/56 accept', 'ip6 daddr fd00:10:244::/56 accept']);
  });

  it('drops fully-random when the plan says so, and chains whose flag is off', () => {
    expect(nftRules(plan({ fullyRandom: false }), V4).chains[0]!.rules.slice(4)).toEqual([
      'ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade',
      'ip saddr != 10.244.0.0/16 ip daddr 10.244.0.0/16 masquerade',
    ]);
    expect(nftRules(plan({ masquerade: false }), V4).chains.map((c) => c.spec)).toEqual([NFT_FORWARD]);
    expect(nftRules(plan({ forward: false }), V4).chains.map((c) => c.spec)).toEqual([NFT_POSTRTG]);
  });
});

describe('renderNftEnsure', () => {
  it('adds the table and chains, flushes and refills them in one script', () => {
    expect(renderNftEnsure(plan())).toBe(
      [
        'add table ip flannel-ipv4 { comment "rules for flannel-ipv4" ; }',
        'add chain ip flannel-ipv4 postrtg { type nat hook postrouting priority srcnat ; comment "chain to manage traffic masquerading by flannel" ; }',
        'flush chain ip flannel-ipv4 postrtg',
        ...POSTRTG_V4.map((r) => `add rule ip flannel-ipv4 postrtg ${r}`),
        'add chain ip flannel-ipv4 forward { type filter hook forward priority filter ; policy accept ; comment "chain to accept flannel traffic" ; }',
        'flush chain ip flannel-ipv4 forward',
        ...FORWARD_V4.map((r) => `add rule ip flannel-ipv4 forward ${r}`),
        '',
      ].join('\n'),
    );
  });

  it('deletes the chains the plan does not use, safely whether or not they exist', () => {
    const script = renderNftEnsure(plan({ masquerade: false }));
    expect(script).toContain('add chain ip flannel-ipv4 postrtg\nflush chain ip flannel-ipv4 postrtg\ndelete chain ip flannel-ipv4 postrtg\n');
    expect(script).not.toContain('masquerade');
    expect(script).toContain('add rule ip flannel-ipv4 forward ip saddr 10.244.0.0/16 accept');
  });

  it('covers both families of a dual-stack plan in the same transaction', () => {
    const script = renderNftEnsure(plan({ families: [V4, V6] }));
    expect(script).toContain('add table ip6 flannel-ipv6 { comment "rules for flannel-ipv6" ; }');
    expect(script).toContain('add rule ip6 flannel-ipv6 postrtg ip6 saddr fd00:10:244::/56 ip6 daddr != ff00::/8 masquerade fully-random');
    expect(script.indexOf('flannel-ipv4')).toBeLessThan(script.indexOf('flannel-ipv6'));
  });

  it('removal adds then deletes both tables so it succeeds when they are absent', () => {
    expect(renderNftRemoval()).toBe(
      'add table ip flannel-ipv4\ndelete table ip flannel-ipv4\nadd table ip6 flannel-ipv6\ndelete table ip6 flannel-ipv6\n',
    );
  });
});

describe('parseNftTable and nftMatches', () => {
  it('reads chains with hook, numeric priority, policy and rules', () => {
    const chains = parseNftTable(LISTED_V4);
    expect(chains.get('postrtg')).toEqual({ type: 'nat', hook: 'postrouting', priority: 100, policy: 'accept', rules: POSTRTG_V4 });
    expect(chains.get('forward')).toEqual({ type: 'filter', hook: 'forward', priority: 0, policy: 'accept', rules: FORWARD_V4 });
  });

  it('matches the listing of what ensure wrote, also when nft prints numeric priorities', () => {
    expect(nftMatches(nftRules(plan(), V4), parseNftTable(LISTED_V4))).toBe(true);
    const numeric = LISTED_V4.replace('priority srcnat;', 'priority 100;').replace('priority filter;', 'priority 0;');
    expect(nftMatches(nftRules(plan(), V4), parseNftTable(numeric))).toBe(true);
  });

  it('detects a missing rule, a reordered rule, a missing chain and a changed hook', () => {
    const want = nftRules(plan(), V4);
    const missing = LISTED_V4.replace(`\t\t${POSTRTG_V4[2]}\n`, '');
    const reordered = LISTED_V4.replace(FORWARD_V4.map((r) => `\t\t${r}`).join('\n'), [...FORWARD_V4].reverse().map((r) => `\t\t${r}`).join('\n'));
    const noForward = LISTED_V4.slice(0, LISTED_V4.indexOf('\tchain forward')) + '}\n';
    const hook = LISTED_V4.replace('priority srcnat;', 'priority dstnat;');
    for (const text of [missing, reordered, noForward, hook]) expect(nftMatches(want, parseNftTable(text))).toBe(false);
    // An extra chain we do not want (forward off) does not make the wanted ones mismatch.
    expect(nftMatches(nftRules(plan({ forward: false }), V4), parseNftTable(LISTED_V4))).toBe(true);
  });

  it('lists table names from `nft list tables`', () => {
    expect([...parseNftTableList('table ip nat\ntable ip flannel-ipv4\ntable ip6 flannel-ipv6\n')]).toEqual([
      'ip nat', 'ip flannel-ipv4', 'ip6 flannel-ipv6',
    ]);
  });
});
