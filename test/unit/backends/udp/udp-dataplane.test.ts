import { fstatSync, openSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { fromNative, nativeUdpDataplane, UDP_DROP_REASONS } from '../../../../backends/udp/udp-dataplane.js';
import { parseIp, type IpAddress } from '../../../../flanneld/ip/address.js';
import { FlannelError } from '../../../../flanneld/runtime/errors.js';

const MISSING = '/nonexistent/flannel-ts/dist/native/flannel_udp.node';
const C_SOURCE = fileURLToPath(new URL('../../../../native/udp/flannel_udp.c', import.meta.url));

/** The counter names the addon's stats() reports, as its C source lists them. */
function nativeCounterNames(): string[] {
  const list = /counter_names\[C_COUNT\] = \{([^}]*)\}/.exec(readFileSync(C_SOURCE, 'utf8'))?.[1];
  if (!list) throw new Error('counter_names not found in the addon source');
  return [...list.matchAll(/"(\w+)"/g)].map((m) => m[1] as string);
}

describe('nativeUdpDataplane without the built addon', () => {
  it('loads nothing until the udp backend uses it, then fails naming the missing file', () => {
    const dataplane = nativeUdpDataplane([MISSING]);

    let err: unknown;
    try {
      dataplane.openTun('flannel0');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(FlannelError);
    expect(err).toMatchObject({ code: 'ERR_IO' });
    expect((err as Error).message).toContain(MISSING);
    expect((err as Error).message).toContain('npm run build');
  });

  it('closes the descriptor it was given when the start fails, as the addon does on its own failures', () => {
    const fd = openSync('/dev/null', 'r');
    const tun = { name: 'flannel0', fd };

    expect(() => nativeUdpDataplane([MISSING]).start({ tun, localAddr: parseIp('192.0.2.1') as IpAddress, port: 8285, mtu: 1472 })).toThrow(MISSING);
    expect(() => fstatSync(fd)).toThrow(expect.objectContaining({ code: 'EBADF' }));
  });
});

describe('fromNative', () => {
  it("reads every counter the addon keeps, each into its own field (none kept in C and never exported)", () => {
    const names = nativeCounterNames();
    expect(names.length).toBeGreaterThan(10);
    const raw = Object.fromEntries(names.map((name, i) => [name, 1000 + i]));

    const stats = fromNative({ ...raw, routes: 5 });

    const exported = [...Object.values(stats).filter((v) => typeof v === 'number'), ...Object.values(stats.dropped)];
    expect(exported.sort()).toEqual([...Object.values(raw), 5].sort());
  });

  it('names the two read-error counters as drop reasons', () => {
    expect(UDP_DROP_REASONS).toEqual(expect.arrayContaining(['tun_read_error', 'udp_receive_error']));
    expect(fromNative({ tunReadErrors: 2, socketErrors: 3 }).dropped).toMatchObject({ tun_read_error: 2, udp_receive_error: 3 });
  });
});
