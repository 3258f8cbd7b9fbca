import { describe, expect, it } from 'vitest';
import { parseCidr } from '../../../flanneld/ip/cidr.js';
import {
  FORWARD_CHAIN,
  MASQ_CHAIN,
  hasRandomFullyAndWait,
  iptablesMatches,
  iptablesRules,
  parseIptablesSave,
  parseIptablesVersion,
  renderIptablesRemoval,
  renderIptablesRestore,
  type IptablesChainRules,
} from '../../../flanneld/traffic/render-iptables.js';
import type { FamilyTraffic, TrafficPlan } from '../../../flanneld/traffic/traffic-manager.js';
import { GOLDEN_V4, GOLDEN_V6, goldenIptables } from '../../helpers/golden-rules.js';

const net = (t: string) => parseCidr(t)!;
const V4: FamilyTraffic = { clusterCidr: net('10.244.0.0/16'), podCidr: net('10.244.1.0/24') };
const V6: FamilyTraffic = { clusterCidr: net('fd00:10:244::/56'), podCidr: net('fd00:10:244:1::/64') };
const plan = (over: Partial<TrafficPlan> = {}): TrafficPlan => ({
  families: [V4], masquerade: true, fullyRandom: true, forward: true, masqueradeExclude: [], ...over,
});

const GOLDEN = goldenIptables(GOLDEN_V4);
const GOLDEN_NAT = GOLDEN.nat;
const GOLDEN_NAT_JUMP = GOLDEN.natJump;
const GOLDEN_FWD = GOLDEN.forward;
const GOLDEN_FWD_JUMP = GOLDEN.forwardJump;

const natOf = (p: TrafficPlan, f: FamilyTraffic = V4): IptablesChainRules => iptablesRules(p, f).find((c) => c.ref === MASQ_CHAIN)!;
const absent = { chainExists: false, rules: [], jumps: [] };

describe('iptablesRules', () => {
  it('renders upstream golden nat and filter rules in order', () => {
    const [nat, filter] = iptablesRules(plan(), V4);
    expect(nat).toEqual({ ref: MASQ_CHAIN, rules: GOLDEN_NAT, jump: GOLDEN_NAT_JUMP });
    expect(filter).toEqual({ ref: FORWARD_CHAIN, rules: GOLDEN_FWD, jump: GOLDEN_FWD_JUMP });
  });

  it('drops --random-fully when fullyRandom is off', () => {
    const rules = natOf(plan({ fullyRandom: false })).rules;
    expect(rules.slice(0, 4)).toEqual(GOLDEN_NAT.slice(0, 4));
    expect(rules.slice(4)).toEqual(GOLDEN_NAT.slice(4).map((r) => r.replace(' --random-fully', '')));
  });

  it('uses ff00::/8 for IPv6 and otherwise the same rules', () => {
    const [nat, filter] = iptablesRules(plan(), V6);
    expect(nat!.rules).toEqual(goldenIptables(GOLDEN_V6).nat);
    expect(filter!.rules).toEqual(goldenIptables(GOLDEN_V6).forward);
  });

  it('returns before masquerading for each --ip-masq-exclude network of the family, and only then', () => {
    const excluded = plan({ masqueradeExclude: [net('203.0.113.0/24'), net('2001:db8:3::/64')] });
    const rules = iptablesRules(excluded, V4)[0]!.rules;
    expect(rules[4]).toBe('-A FLANNEL-POSTRTG -s 10.244.0.0/16 -d 203.0.113.0/24 -m comment --comment "flanneld masq" -j RETURN');
    expect(rules).toHaveLength(7);
    expect(iptablesRules(excluded, V6)[0]!.rules[4]).toBe('-A FLANNEL-POSTRTG -s fd00:10:244::/56 -d 2001:db8:3::/64 -m comment --comment "flanneld masq" -j RETURN');
    expect(iptablesRules(plan(), V4)[0]!.rules).toEqual(GOLDEN.nat);
  });

  it('leaves out the chains whose flag is off', () => {
    expect(iptablesRules(plan({ masquerade: false }), V4).map((c) => c.ref)).toEqual([FORWARD_CHAIN]);
    expect(iptablesRules(plan({ forward: false }), V4).map((c) => c.ref)).toEqual([MASQ_CHAIN]);
    expect(iptablesRules(plan({ masquerade: false, forward: false }), V4)).toEqual([]);
  });
});

describe('renderIptablesRestore', () => {
  it('declares (flushes) the chain, refills it and appends the jump, with no -D when the jump is absent', () => {
    expect(renderIptablesRestore(natOf(plan()), absent)).toBe(['*nat', ':FLANNEL-POSTRTG - [0:0]', ...GOLDEN_NAT, GOLDEN_NAT_JUMP, 'COMMIT', ''].join('\n'));
  });

  it('deletes each saved jump before appending it again, so exactly one ends up last', () => {
    const saved = { chainExists: true, rules: [], jumps: [GOLDEN_NAT_JUMP, '-A POSTROUTING -j FLANNEL-POSTRTG'] };
    const lines = renderIptablesRestore(natOf(plan()), saved).split('\n');
    expect(lines.slice(0, 4)).toEqual([
      '*nat',
      ':FLANNEL-POSTRTG - [0:0]',
      '-D POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG',
      '-D POSTROUTING -j FLANNEL-POSTRTG',
    ]);
    expect(lines.slice(-3)).toEqual([GOLDEN_NAT_JUMP, 'COMMIT', '']);
  });

  it('renders the filter table payload', () => {
    const fwd = iptablesRules(plan(), V4)[1]!;
    expect(renderIptablesRestore(fwd, { chainExists: true, rules: GOLDEN_FWD, jumps: [GOLDEN_FWD_JUMP] })).toBe(
      ['*filter', ':FLANNEL-FWD - [0:0]', `-D${GOLDEN_FWD_JUMP.slice(2)}`, ...GOLDEN_FWD, GOLDEN_FWD_JUMP, 'COMMIT', ''].join('\n'),
    );
  });
});

describe('renderIptablesRemoval', () => {
  it('deletes the jumps, flushes and deletes the chain', () => {
    expect(renderIptablesRemoval(FORWARD_CHAIN, { chainExists: true, rules: GOLDEN_FWD, jumps: [GOLDEN_FWD_JUMP] })).toBe(
      ['*filter', '-D FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD', ':FLANNEL-FWD - [0:0]', '-X FLANNEL-FWD', 'COMMIT', ''].join('\n'),
    );
  });

  it('renders nothing when neither chain nor jump is there', () => {
    expect(renderIptablesRemoval(MASQ_CHAIN, absent)).toBeUndefined();
  });
});

const SAVED_NAT = `# Generated by iptables-save v1.8.9 (nf_tables) on Mon Nov 23 21:37:42 2026
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:FLANNEL-POSTRTG - [0:0]
:FLANNEL-POSTRTG-X - [0:0]
-A POSTROUTING -s 192.0.2.0/24 -j MASQUERADE
-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG
-A POSTROUTING -j FLANNEL-POSTRTG-X
${GOLDEN_NAT.join('\n')}
-A FLANNEL-POSTRTG-X -j RETURN
COMMIT
# Completed on Mon Nov 23 21:37:42 2026
`;

describe('parseIptablesSave and iptablesMatches', () => {
  it('extracts our chain, its rules in order and the jumps, ignoring look-alike chains', () => {
    expect(parseIptablesSave(SAVED_NAT, MASQ_CHAIN)).toEqual({ chainExists: true, rules: GOLDEN_NAT, jumps: [GOLDEN_NAT_JUMP] });
  });

  it('ignores other tables in the output', () => {
    expect(parseIptablesSave(SAVED_NAT, FORWARD_CHAIN)).toEqual(absent);
  });

  it('matches the saved golden chain', () => {
    expect(iptablesMatches(natOf(plan()), parseIptablesSave(SAVED_NAT, MASQ_CHAIN))).toBe(true);
  });

  it('detects a missing rule, a reordered rule, a missing jump, a doubled jump and a missing chain', () => {
    const want = natOf(plan());
    const saved = parseIptablesSave(SAVED_NAT, MASQ_CHAIN);
    const reordered = [...GOLDEN_NAT.slice(0, 2), GOLDEN_NAT[3]!, GOLDEN_NAT[2]!, ...GOLDEN_NAT.slice(4)];
    expect(iptablesMatches(want, { ...saved, rules: GOLDEN_NAT.filter((_, i) => i !== 2) })).toBe(false);
    expect(iptablesMatches(want, { ...saved, rules: reordered })).toBe(false);
    expect(iptablesMatches(want, { ...saved, jumps: [] })).toBe(false);
    expect(iptablesMatches(want, { ...saved, jumps: [GOLDEN_NAT_JUMP, GOLDEN_NAT_JUMP] })).toBe(false);
    expect(iptablesMatches(want, absent)).toBe(false);
    // The same rules without --random-fully are not what a fully-random plan wants.
    expect(iptablesMatches(natOf(plan({ fullyRandom: false })), saved)).toBe(false);
  });
});

describe('iptables version', () => {
  it('reads the version and applies the 1.6.2 cut for --random-fully and --wait', () => {
    expect(parseIptablesVersion('iptables v1.8.9 (nf_tables)\n')).toEqual([1, 8, 9]);
    expect(parseIptablesVersion('iptables v1.6.1\n')).toEqual([1, 6, 1]);
    expect(parseIptablesVersion('garbage')).toBeUndefined();
    expect(hasRandomFullyAndWait([1, 6, 1])).toBe(false);
    expect(hasRandomFullyAndWait([1, 6, 2])).toBe(true);
    expect(hasRandomFullyAndWait([1, 4, 21])).toBe(false);
    expect(hasRandomFullyAndWait([1, 8, 0])).toBe(true);
  });
});
