import { describe, expect, it } from 'vitest';
import { ipv6Gateways, parseIfInet6, settleGateways } from '../../../cni-plugin/gateway-settle.js';
import { CniError } from '../../../cni-plugin/protocol.js';

const GW = '20010db8000a00070000000000000001';
/** /proc/net/if_inet6 with the gateway on cni0 carrying `flags` (hex, as the kernel prints them). */
const procText = (flags: string): string =>
  [
    '00000000000000000000000000000001 01 80 10 80       lo',
    `${GW} 05 40 00 ${flags}     cni0`,
    'fe80000000000000d00e27fffe50baea 05 40 20 c0     cni0',
  ].join('\n') + '\n';
const dualStack = {
  ips: [
    { address: '10.244.7.2/24', gateway: '10.244.7.1' },
    { address: '2001:db8:a:7::2/64', gateway: '2001:db8:a:7::1' },
  ],
};

/** A reader that answers each text in turn (the last one for ever) and counts the reads. */
function reader(...texts: string[]): { read: () => Promise<string>; reads: () => number } {
  let n = 0;
  return { read: async () => texts[Math.min(n++, texts.length - 1)] as string, reads: () => n };
}

describe('parseIfInet6 and ipv6Gateways', () => {
  it('keys addresses by their 32 hex digits, with flags and device', () => {
    const map = parseIfInet6(procText('c0'));
    expect(map.get(GW)).toEqual({ device: 'cni0', flags: 0xc0 });
    expect(map.get('00000000000000000000000000000001')).toEqual({ device: 'lo', flags: 0x80 });
    expect(parseIfInet6('garbage\n\n')).toEqual(new Map());
  });

  it('takes only the IPv6 gateways of a result, once each, in the same form', () => {
    expect(ipv6Gateways(dualStack)).toEqual([GW]);
    expect(ipv6Gateways({ ips: [{ address: '10.244.7.2/24', gateway: '10.244.7.1' }] })).toEqual([]);
    expect(ipv6Gateways({ ips: [{ gateway: '2001:db8:a:7::1' }, { gateway: '2001:db8:a:7::1' }, 'x'] })).toEqual([GW]);
    expect(ipv6Gateways({})).toEqual([]);
  });
});

describe('settleGateways', () => {
  it('waits while the gateway is tentative (0x40) and returns once DAD is done', async () => {
    const r = reader(procText('c0'), procText('c0'), procText('80'));
    await settleGateways(dualStack, { read: r.read, pollMs: 1 });
    expect(r.reads()).toBe(3);
  });

  it('reads nothing for a result without IPv6 gateways', async () => {
    const r = reader(procText('c0'));
    await settleGateways({ ips: [{ address: '10.244.7.2/24', gateway: '10.244.7.1' }] }, { read: r.read });
    expect(r.reads()).toBe(0);
  });

  it('does not wait for a gateway this host does not hold, nor when IPv6 is off (no /proc/net/if_inet6)', async () => {
    const absent = reader('00000000000000000000000000000001 01 80 10 80       lo\n');
    await settleGateways(dualStack, { read: absent.read, timeoutMs: 60_000 });
    expect(absent.reads()).toBe(1);
    await settleGateways(dualStack, { read: () => Promise.reject(new Error('ENOENT')), timeoutMs: 60_000 });
  });

  it('gives up quietly after the timeout (the address may still settle; the result is right)', async () => {
    const r = reader(procText('c0'));
    const started = Date.now();
    await settleGateways(dualStack, { read: r.read, pollMs: 5, timeoutMs: 40 });
    expect(Date.now() - started).toBeGreaterThanOrEqual(40);
    expect(r.reads()).toBeGreaterThan(1);
  });

  it('fails naming the gateway and the bridge when its DAD failed (tentative|dadfailed)', async () => {
    const err = await settleGateways(dualStack, { read: reader(procText('c8')).read }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CniError);
    expect((err as CniError).message).toMatch(/2001:db8:a:7::1 on cni0 failed duplicate address detection/);
  });
});
