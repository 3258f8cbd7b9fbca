import { describe, expect, it } from 'vitest';
import { bgpSpeakerFromOptions } from '../../../flanneld/bgp/bgp-from-options.js';
import type { BgpTransport } from '../../../flanneld/bgp/bgp-connection.js';
import type { BgpConnector, BgpPeer } from '../../../flanneld/bgp/bgp-session.js';
import { announcementsOf, routerIdOf } from '../../../flanneld/bgp/bgp-speaker.js';
import { decodeOpen } from '../../../flanneld/bgp/bgp-open.js';
import { BgpFramer, MSG_OPEN } from '../../../flanneld/bgp/bgp-wire.js';
import { formatIp, parseIp, type IpAddress } from '../../../flanneld/ip/address.js';
import { parseCidr, type IpNet } from '../../../flanneld/ip/cidr.js';
import type { Lease } from '../../../flanneld/lease/lease.js';
import { seededRandom } from '../../../flanneld/runtime/random.js';
import { ManualClock } from '../../helpers/manual-clock.js';
import { memoryLog } from '../../helpers/test-log.js';

const ip = (t: string): IpAddress => parseIp(t) as IpAddress;
const net = (t: string): IpNet => parseCidr(t) as IpNet;

const dualLease: Lease = {
  subnet: net('10.244.1.0/24'),
  ipv6Subnet: net('2001:db8:a:1::/64'),
  attrs: { publicIP: ip('192.0.2.1'), publicIPv6: ip('2001:db8:2::1'), backendType: 'vxlan' },
  reservation: false,
};
const v4Lease: Lease = { subnet: net('10.244.1.0/24'), attrs: { publicIP: ip('192.0.2.1'), backendType: 'vxlan' }, reservation: false };

/** Records who was dialled from where; the connection never comes up, as with a router that is away. */
function recordingConnector(): { connect: BgpConnector; dialled: string[] } {
  const dialled: string[] = [];
  const connect: BgpConnector = (peer: BgpPeer, local: IpAddress | undefined, signal: AbortSignal) => {
    dialled.push(`${formatIp(peer.address)} from ${local ? formatIp(local) : '-'}`);
    return new Promise<BgpTransport>((_resolve, reject) => signal.addEventListener('abort', () => reject(new Error('stopped')), { once: true }));
  };
  return { connect, dialled };
}

function speaker(peers: readonly string[], as = 64512) {
  const { log, lines } = memoryLog();
  const { connect, dialled } = recordingConnector();
  const s = bgpSpeakerFromOptions({ bgpAs: as, bgpPeers: peers, bgpGracefulRestartTime: 120 }, { connect, clock: new ManualClock(), random: seededRandom(1), log });
  return { speaker: s, lines, dialled };
}

describe('BGP speaker', () => {
  it('is off without --bgp-as', () => {
    expect(speaker(['192.0.2.250;as=64512'], 0).speaker).toBeUndefined();
  });

  it('names each unusable --bgp-peers entry in one line, without its password, and keeps the others', () => {
    const { speaker: s, lines } = speaker(['192.0.2.250;as=64512', 'router.example;as=1', '192.0.2.251;as=0;password=hunter2', '192.0.2.250;as=65000']);
    const errors = lines.filter((l) => l.level === 50).map((l) => l.msg);
    expect(errors).toHaveLength(3);
    expect(errors[0]).toContain('"router.example" is not an IPv4 or IPv6 address');
    expect(errors[1]).toContain('as=0 is not an AS number');
    expect(errors.join('\n')).not.toContain('hunter2');
    expect(errors[2]).toContain('192.0.2.250 is listed twice');
    s!.announce(v4Lease);
    expect(s!.status().map((x) => x.peer)).toEqual(['192.0.2.250']);
  });

  it('takes routers comma-separated in one value as well as repeated', () => {
    const { speaker: s, lines } = speaker(['192.0.2.250;as=64512, 2001:db8:2::fa;as=64512;password=k', '198.51.100.1;as=65001;ttl=3']);
    expect(lines.filter((l) => l.level === 50)).toEqual([]);
    s!.announce(dualLease);
    expect(s!.status().map((x) => `${x.peer} ${x.remoteAs}`)).toEqual(['192.0.2.250 64512', '2001:db8:2::fa 64512', '198.51.100.1 65001']);
  });

  it('dials each router from the node address of its family, and leaves out a router of a family the node lacks', async () => {
    const { speaker: s, lines, dialled } = speaker(['192.0.2.250;as=64512', '2001:db8:2::fa;as=64513']);
    s!.announce(v4Lease);
    const abort = new AbortController();
    const running = s!.run(abort.signal);
    await new Promise((r) => setImmediate(r));
    expect(dialled).toEqual(['192.0.2.250 from 192.0.2.1']);
    expect(lines.find((l) => l.level === 50)?.msg).toBe('BGP peer 2001:db8:2::fa is IPv6 and this node has no public IPv6 address; this router is left out');
    abort.abort();
    await running;
  });

  it('carries each family over the sessions of its own family, and a family without routers of its own over the others', async () => {
    /** Router address -> the address families our OPEN to it offers. */
    const offered = async (peers: string[], lease: Lease): Promise<Record<string, number[]>> => {
      const opens: Record<string, number[]> = {};
      const { log } = memoryLog();
      const connect: BgpConnector = async (peer) => ({
        write: (bytes: Buffer) => {
          const open = new BgpFramer().push(bytes).find((m) => m.type === MSG_OPEN);
          if (open) opens[formatIp(peer.address)] = [...decodeOpen(open.body).families];
        },
        onData: () => undefined,
        onClose: () => undefined,
        close: () => undefined,
      });
      const s = bgpSpeakerFromOptions({ bgpAs: 64512, bgpPeers: peers, bgpGracefulRestartTime: 0 }, { connect, clock: new ManualClock(), random: seededRandom(1), log });
      s!.announce(lease);
      const abort = new AbortController();
      const running = s!.run(abort.signal);
      await new Promise((r) => setImmediate(r));
      abort.abort();
      await running;
      return opens;
    };
    expect(await offered(['192.0.2.250;as=64512', '2001:db8:2::fa;as=64512'], dualLease)).toEqual({ '192.0.2.250': [4], '2001:db8:2::fa': [6] });
    expect(await offered(['192.0.2.250;as=64512'], dualLease)).toEqual({ '192.0.2.250': [4, 6] });
    // A v6 router on a node whose lease is IPv4 only, while a v4 router exists, would carry nothing: left out.
    const v4WithV6Address: Lease = { ...v4Lease, attrs: { ...v4Lease.attrs, publicIPv6: ip('2001:db8:2::1') } };
    expect(await offered(['192.0.2.250;as=64512', '2001:db8:2::fa;as=64512'], v4WithV6Address)).toEqual({ '192.0.2.250': [4] });
  });

  it('logs an announcement when the prefixes change, not at every renewal', () => {
    const { speaker: s, lines } = speaker(['192.0.2.250;as=64512']);
    s!.announce(v4Lease);
    s!.announce({ ...v4Lease, expiresAt: 1 });
    s!.announce({ ...v4Lease, subnet: net('10.244.9.0/24') });
    expect(lines.filter((l) => l.msg === 'announcing the lease over BGP').map((l) => l['prefixes'])).toEqual(['10.244.1.0/24 via 192.0.2.1', '10.244.9.0/24 via 192.0.2.1']);
  });

  it('announces each family of the lease with the node address of that family as next hop', () => {
    const wanted = announcementsOf(dualLease);
    expect([...wanted].map(([p, a]) => `${p} via ${formatIp(a.nextHop)}`)).toEqual(['10.244.1.0/24 via 192.0.2.1', '2001:db8:a:1::/64 via 2001:db8:2::1']);
  });

  it('takes the IPv4 address as router id, or the low 32 bits of the IPv6 one on an IPv6-only node', () => {
    expect(formatIp(routerIdOf(dualLease))).toBe('192.0.2.1');
    const v6only: Lease = { ipv6Subnet: net('2001:db8:a:1::/64'), attrs: { publicIPv6: ip('2001:db8:2::c000:205'), backendType: 'vxlan' }, reservation: false };
    expect(formatIp(routerIdOf(v6only))).toBe('192.0.2.5');
  });
});
