/**
 * The traffic rules every traffic test compares with, written once: upstream's iptables golden output (its e2e
 * rules.go, see docs/compatibility.md#traffic-rules) and our nftables rendering as `nft list table` prints it, for
 * one cluster network and one node subnet per family.
 */

export interface GoldenFamily {
  readonly cluster: string;
  readonly pod: string;
  /** The multicast range masquerade leaves alone. */
  readonly multicast: string;
}

export const GOLDEN_V4: GoldenFamily = { cluster: '10.244.0.0/16', pod: '10.244.1.0/24', multicast: '224.0.0.0/4' };
export const GOLDEN_V6: GoldenFamily = { cluster: 'fd00:10:244::/56', pod: 'fd00:10:244:1::/64', multicast: 'ff00::/8' };

const MASQ = '-m comment --comment "flanneld masq"';
const FWD = '-m comment --comment "flanneld forward"';

/** The FLANNEL-POSTRTG and FLANNEL-FWD rules and their jumps, as `iptables-save` prints them. */
export function goldenIptables({ cluster, pod, multicast }: GoldenFamily) {
  return {
    nat: [
      `-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 ${MASQ} -j RETURN`,
      `-A FLANNEL-POSTRTG -s ${pod} -d ${cluster} ${MASQ} -j RETURN`,
      `-A FLANNEL-POSTRTG -s ${cluster} -d ${pod} ${MASQ} -j RETURN`,
      `-A FLANNEL-POSTRTG ! -s ${cluster} -d ${pod} ${MASQ} -j RETURN`,
      `-A FLANNEL-POSTRTG -s ${cluster} ! -d ${multicast} ${MASQ} -j MASQUERADE --random-fully`,
      `-A FLANNEL-POSTRTG ! -s ${cluster} -d ${cluster} ${MASQ} -j MASQUERADE --random-fully`,
    ],
    natJump: `-A POSTROUTING ${MASQ} -j FLANNEL-POSTRTG`,
    forward: [`-A FLANNEL-FWD -s ${cluster} ${FWD} -j ACCEPT`, `-A FLANNEL-FWD -d ${cluster} ${FWD} -j ACCEPT`],
    forwardJump: `-A FORWARD ${FWD} -j FLANNEL-FWD`,
  };
}

/** Our postrtg and forward chains' rules for `ip` (IPv4) or `ip6`, as nft prints them. */
export function goldenNft({ cluster, pod, multicast }: GoldenFamily, family: 'ip' | 'ip6') {
  return {
    postrtg: [
      'meta mark & 0x00004000 == 0x00004000 return',
      `${family} saddr ${pod} ${family} daddr ${cluster} return`,
      `${family} saddr ${cluster} ${family} daddr ${pod} return`,
      `${family} saddr != ${cluster} ${family} daddr ${pod} return`,
      `${family} saddr ${cluster} ${family} daddr != ${multicast} masquerade fully-random`,
      `${family} saddr != ${cluster} ${family} daddr ${cluster} masquerade fully-random`,
    ],
    forward: [`${family} saddr ${cluster} accept`, `${family} daddr ${cluster} accept`],
  };
}

/** A whole table as `nft list table` (nft 1.0.6) prints it: tabs, a blank line between the chains. */
export function nftTableListing(family: 'ip' | 'ip6', name: string, postrtg: readonly string[], forward: readonly string[]): string {
  const rules = (list: readonly string[]): string => list.map((r) => `\t\t${r}\n`).join('');
  return [
    `table ${family} ${name} {`,
    `\tcomment "rules for ${name}"`,
    '\tchain postrtg {',
    '\t\tcomment "chain to manage traffic masquerading by flannel"',
    '\t\ttype nat hook postrouting priority srcnat; policy accept;',
    `${rules(postrtg)}\t}`,
    '',
    '\tchain forward {',
    '\t\tcomment "chain to accept flannel traffic"',
    '\t\ttype filter hook forward priority filter; policy accept;',
    `${rules(forward)}\t}`,
    '}',
  ].join('\n');
}
