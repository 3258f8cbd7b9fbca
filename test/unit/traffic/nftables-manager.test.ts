import { describe, expect, it } from 'vitest';
import { parseCidr } from '../../../flanneld/ip/cidr.js';
import { ExecError, type Exec } from '../../../flanneld/runtime/exec.js';
import { NftablesTrafficManager } from '../../../flanneld/traffic/nftables-manager.js';
import { renderNftEnsure, renderNftRemoval } from '../../../flanneld/traffic/render-nft.js';
import type { FamilyTraffic, TrafficPlan } from '../../../flanneld/traffic/traffic-manager.js';

const net = (t: string) => parseCidr(t)!;
const V4: FamilyTraffic = { clusterCidr: net('10.244.0.0/16'), podCidr: net('10.244.1.0/24') };
const V6: FamilyTraffic = { clusterCidr: net('fd00:10:244::/56'), podCidr: net('fd00:10:244:1::/64') };
const plan = (over: Partial<TrafficPlan> = {}): TrafficPlan => ({
  families: [V4], masquerade: true, fullyRandom: true, forward: true, masqueradeExclude: [], ...over,
});
const signal = new AbortController().signal;

const POSTRTG = [
  'meta mark & 0x00004000 == 0x00004000 return',
  'ip saddr 10.244.1.0/24 ip daddr 10.244.0.0/16 return',
  'ip saddr 10.244.0.0/16 ip daddr 10.244.1.0/24 return',
  'ip saddr != 10.244.0.0/16 ip daddr 10.244.1.0/24 return',
  'ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random',
  'ip saddr != 10.244.0.0/16 ip daddr 10.244.0.0/16 masquerade fully-random',
];
const FORWARD = ['ip saddr 10.244.0.0/16 accept', 'ip daddr 10.244.0.0/16 accept'];

function listing(postrtg: readonly string[], forward: readonly string[] = FORWARD): string {
  const body = (rules: readonly string[]) => rules.map((r) => `\t\t${r}`).join('\n');
  return `table ip flannel-ipv4 {
\tcomment "rules for flannel-ipv4"
\tchain postrtg {
\t\tcomment "chain to manage traffic masquerading by flannel"
\t\ttype nat hook postrouting priority srcnat; policy accept;
${body(postrtg)}
\t}

\tchain forward {
\t\tcomment "chain to accept flannel traffic"
\t\ttype filter hook forward priority filter; policy accept;
${body(forward)}
\t}
}
`;
}

interface Call {
  readonly argv: readonly string[];
  readonly input?: string;
}

/** An Exec that plays nft: `list tables` and `list table` answer from `tables`; `-f -` and `--check` are recorded. */
function fakeNft(tables: Record<string, string>, fail?: (argv: readonly string[]) => ExecError | undefined): { exec: Exec; calls: Call[] } {
  const calls: Call[] = [];
  const exec: Exec = async (argv, opts) => {
    calls.push({ argv, ...(opts?.input !== undefined ? { input: opts.input } : {}) });
    const err = fail?.(argv);
    if (err) throw err;
    const joined = argv.join(' ');
    if (joined === 'nft list tables') return { stdout: Object.keys(tables).map((t) => `table ${t}\n`).join(''), stderr: '' };
    const m = /^nft list table (\S+ \S+)$/.exec(joined);
    if (m) {
      const text = tables[m[1]!];
      if (text === undefined) throw new ExecError(argv, 1, 'Error: No such file or directory');
      return { stdout: text, stderr: '' };
    }
    return { stdout: '', stderr: '' };
  };
  return { exec, calls };
}

describe('NftablesTrafficManager', () => {
  it('ensure runs one nft -f - transaction with the rendered script', async () => {
    const { exec, calls } = fakeNft({});
    await new NftablesTrafficManager({ exec }).ensure(plan({ families: [V4, V6] }), signal);
    expect(calls).toEqual([{ argv: ['nft', '-f', '-'], input: renderNftEnsure(plan({ families: [V4, V6] })) }]);
  });

  it('ensure does nothing for a plan without families', async () => {
    const { exec, calls } = fakeNft({});
    await new NftablesTrafficManager({ exec }).ensure(plan({ families: [] }), signal);
    expect(calls).toEqual([]);
  });

  it('matches is true for the listing ensure produces', async () => {
    const { exec, calls } = fakeNft({ 'ip flannel-ipv4': listing(POSTRTG) });
    expect(await new NftablesTrafficManager({ exec }).matches(plan(), signal)).toBe(true);
    expect(calls.map((c) => c.argv.join(' '))).toEqual(['nft list tables', 'nft list table ip flannel-ipv4']);
  });

  it('matches is false for a missing rule, a reordered rule or a missing table', async () => {
    const reordered = [POSTRTG[0]!, POSTRTG[2]!, POSTRTG[1]!, ...POSTRTG.slice(3)];
    for (const tables of [
      { 'ip flannel-ipv4': listing(POSTRTG.slice(0, 5)) },
      { 'ip flannel-ipv4': listing(reordered) },
      { 'ip flannel-ipv4': listing(POSTRTG, FORWARD.slice(1)) },
      {},
    ]) {
      const { exec } = fakeNft(tables);
      expect(await new NftablesTrafficManager({ exec }).matches(plan(), signal)).toBe(false);
    }
  });

  it('matches needs the IPv6 table too for a dual-stack plan', async () => {
    const { exec } = fakeNft({ 'ip flannel-ipv4': listing(POSTRTG) });
    expect(await new NftablesTrafficManager({ exec }).matches(plan({ families: [V4, V6] }), signal)).toBe(false);
  });

  it('removeAll deletes both tables in one transaction', async () => {
    const { exec, calls } = fakeNft({});
    await new NftablesTrafficManager({ exec }).removeAll(signal);
    expect(calls).toEqual([{ argv: ['nft', '-f', '-'], input: renderNftRemoval() }]);
  });

  it('removeAll tolerates a host without nft but not a failing nft', async () => {
    const enoent = Object.assign(new Error('spawn nft ENOENT'), { code: 'ENOENT' });
    const missing = fakeNft({}, (argv) => new ExecError(argv, null, enoent.message, { cause: enoent }));
    await expect(new NftablesTrafficManager({ exec: missing.exec }).removeAll(signal)).resolves.toBeUndefined();
    const broken = fakeNft({}, (argv) => new ExecError(argv, 1, 'Error: Could not process rule: Operation not permitted'));
    await expect(new NftablesTrafficManager({ exec: broken.exec }).removeAll(signal)).rejects.toBeInstanceOf(ExecError);
  });

  it('supportsRandomFully probes once with nft --check and remembers the answer', async () => {
    const ok = fakeNft({});
    const mgr = new NftablesTrafficManager({ exec: ok.exec });
    expect(await mgr.supportsRandomFully(signal)).toBe(true);
    expect(await mgr.supportsRandomFully(signal)).toBe(true);
    expect(ok.calls).toHaveLength(1);
    expect(ok.calls[0]!.argv).toEqual(['nft', '--check', '-f', '-']);
    expect(ok.calls[0]!.input).toContain('masquerade fully-random');
    const no = fakeNft({}, (argv) => new ExecError(argv, 1, 'Error: syntax error'));
    expect(await new NftablesTrafficManager({ exec: no.exec }).supportsRandomFully(signal)).toBe(false);
  });
});
