/**
 * The kernel WgDevice against a fake kernel (test/helpers/fake-wg-genl.ts), which decodes our bytes with its own
 * parser and keeps device state as the kernel does: link creation, reuse and replacement, peer changes read back
 * both from the fake's own view and through state(), large sets split into messages, and a kernel without the
 * wireguard module.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { parseIp } from '../../../../flanneld/ip/address.js';
import { parseCidr } from '../../../../flanneld/ip/cidr.js';
import { FakeWgKernel, nodePeerConfig } from '../../../helpers/fake-wg-genl.js';
import type { WgPeerConfig, WgPeerState } from '../../../../backends/wireguard/uapi.js';
import { WgKernelUnsupportedError, type WgPeerChanges } from '../../../../backends/wireguard/wg-device.js';
import { WgKernelDevice, kernelWgDevices, kernelWireguardAvailable, openWgKernelSockets } from '../../../../backends/wireguard/wg-kernel-device.js';

const NAME = 'flannel-wg';
const key = (byte: number): string => Buffer.alloc(32, byte).toString('base64');
const IFACE = { privateKey: key(0x11), listenPort: 51820 };
const A = key(0xa1);
const B = key(0xb1);
const C = key(0xc1);
const PSK = key(0x44);
const cidr = (t: string) => parseCidr(t)!;
const at = (ip: string, port = 51820) => ({ ip: parseIp(ip)!, port });
const live = () => new AbortController().signal;
const noChange: WgPeerChanges = { remove: [], write: [] };

const opened: { close(): void }[] = [];
afterEach(() => {
  for (const s of opened.splice(0)) s.close();
});

function setup(fake = new FakeWgKernel()) {
  const sockets = openWgKernelSockets(fake.open);
  opened.push(sockets);
  return { fake, sockets, device: new WgKernelDevice(NAME, sockets) };
}

/** What state() should report for a peer written as `p` that has not talked yet. */
const stateOf = (p: WgPeerConfig): WgPeerState => ({
  publicKey: p.publicKey, presharedKey: p.presharedKey, endpoint: p.endpoint, persistentKeepalive: p.persistentKeepalive ?? 0, allowedIps: p.allowedIps,
  lastHandshakeMs: undefined, rxBytes: 0, txBytes: 0,
});


describe('WgKernelDevice.ensure', () => {
  it('creates a wireguard link over rtnetlink and sets the key and port over generic netlink', async () => {
    const { fake, device } = setup();
    const index = await device.ensure(IFACE, live());
    expect(fake.links.get(NAME)).toEqual({ index, name: NAME, kind: 'wireguard' });
    expect(fake.view(NAME)).toEqual({ privateKey: IFACE.privateKey, listenPort: 51820, peers: [] });
    expect(fake.opened.map((o) => o.protocol)).toEqual([undefined, 16]);
    expect(device.implementation).toBe('kernel');
  });

  it('keeps a wireguard link that is already there, with its peers', async () => {
    const { fake, device } = setup();
    const index = await device.ensure(IFACE, live());
    await device.update(IFACE, { remove: [], write: [{ publicKey: A, allowedIps: [cidr('10.244.1.0/24')] }] });
    const again = new WgKernelDevice(NAME, setup(fake).sockets);
    expect(await again.ensure({ ...IFACE, listenPort: 51821 }, live())).toBe(index);
    expect(fake.view(NAME)).toMatchObject({ listenPort: 51821, peers: [{ publicKey: A, allowedIps: ['10.244.1.0/24'] }] });
  });

  it('replaces a link of the same name and another kind', async () => {
    const { fake, device } = setup();
    const old = fake.addLink(NAME, 'dummy');
    const index = await device.ensure(IFACE, live());
    expect(index).not.toBe(old.index);
    expect(fake.links.get(NAME)).toMatchObject({ index, kind: 'wireguard' });
  });

  it('does nothing once aborted', async () => {
    const { fake, device } = setup();
    const ctl = new AbortController();
    ctl.abort();
    await expect(device.ensure(IFACE, ctl.signal)).rejects.toThrow();
    expect(fake.links.size).toBe(0);
  });
});

describe('WgKernelDevice peers', () => {
  it('adds, changes and removes peers, and state() reports what was written', async () => {
    const { fake, device } = setup();
    await device.ensure(IFACE, live());
    const a: WgPeerConfig = { publicKey: A, presharedKey: PSK, endpoint: at('192.0.2.2'), persistentKeepalive: 25, allowedIps: [cidr('10.244.1.0/24'), cidr('2001:db8:1::/64')] };
    const b: WgPeerConfig = { publicKey: B, endpoint: at('2001:db8::3', 51821), allowedIps: [cidr('10.244.2.0/24')] };
    await device.update(IFACE, { remove: [], write: [a, b] });
    expect(fake.view(NAME).peers).toEqual([
      { publicKey: A, presharedKey: PSK, endpoint: '192.0.2.2:51820', keepalive: 25, allowedIps: ['10.244.1.0/24', '2001:db8:1::/64'] },
      { publicKey: B, presharedKey: undefined, endpoint: '[2001:db8::3]:51821', keepalive: 0, allowedIps: ['10.244.2.0/24'] },
    ]);
    expect(await device.state()).toEqual({ privateKey: IFACE.privateKey, listenPort: 51820, fwmark: 0, peers: [stateOf(a), stateOf(b)] });

    // A rewritten loses its preshared key and keepalive; C takes B's subnet, which leaves B (not rewritten) without it.
    const a2: WgPeerConfig = { publicKey: A, endpoint: at('192.0.2.9'), allowedIps: [cidr('10.244.9.0/24')] };
    const c: WgPeerConfig = { publicKey: C, allowedIps: [cidr('10.244.2.0/24')] };
    await device.update(IFACE, { remove: [], write: [a2, c] });
    expect(await device.state()).toEqual(expect.objectContaining({ peers: [stateOf(a2), { ...stateOf(b), allowedIps: [] }, stateOf(c)] }));

    await device.update(IFACE, { remove: [B], write: [] });
    expect((await device.state()).peers.map((p) => p.publicKey)).toEqual([A, C]);
  });

  it('reads handshakes and counters the kernel reports', async () => {
    const { fake, device } = setup();
    await device.ensure(IFACE, live());
    await device.update(IFACE, { remove: [], write: [{ publicKey: A, allowedIps: [] }] });
    fake.touchPeer(NAME, A, { rx: 1000n, tx: 2000n, handshakeSec: 1_700_000_000n });
    expect((await device.state()).peers[0]).toMatchObject({ rxBytes: 1000, txBytes: 2000, lastHandshakeMs: 1_700_000_000_000 });
  });

  it('splits a large set into several messages, the interface config in the first, and reads a split dump back whole', async () => {
    const { fake, device } = setup();
    await device.ensure(IFACE, live());
    const write = Array.from({ length: 1000 }, (_, i) => nodePeerConfig(i));
    fake.sets.length = 0;
    await device.update(IFACE, { remove: [], write });
    expect(fake.sets.length).toBeGreaterThan(4);
    expect(fake.sets.map((s) => s.attrs.includes(3))).toEqual(fake.sets.map((_, i) => i === 0));
    expect(fake.sets.reduce((n, s) => n + s.peers, 0)).toBe(1000);
    expect(Math.max(...fake.sets.map((s) => s.bytes))).toBeLessThanOrEqual(32 * 1024);
    fake.dumpItemsPerMessage = 7;
    expect((await device.state()).peers).toEqual(write.map(stateOf));
  });
});

describe('WgKernelDevice errors and close', () => {
  it('reports a kernel without the module as WgKernelUnsupportedError naming the device and errno, leaving no link', async () => {
    const { fake, device, sockets } = setup();
    fake.noModule();
    const err = await device.ensure(IFACE, live()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WgKernelUnsupportedError);
    expect((err as Error).message).toMatch(/flannel-wg.*EOPNOTSUPP/);
    expect((err as WgKernelUnsupportedError).code).toBe('ERR_DEVICE');
    expect(fake.links.size).toBe(0);
    expect(await kernelWireguardAvailable(sockets.genl)).toBe(false);
  });

  it('removes the link it made when the family does not resolve (ENOENT)', async () => {
    const { fake, device, sockets } = setup();
    fake.familyKnown = false;
    await expect(device.ensure(IFACE, live())).rejects.toThrow(/flannel-wg.*"wireguard" generic netlink family \(ENOENT/);
    expect(fake.links.size).toBe(0);
    fake.familyKnown = true;
    expect(await kernelWireguardAvailable(sockets.genl)).toBe(true);
  });

  it('names the device and the errno when a request fails', async () => {
    const { fake, device } = setup();
    await device.ensure(IFACE, live());
    fake.links.delete(NAME);
    await expect(device.state()).rejects.toMatchObject({ code: 'ERR_DEVICE', message: 'wireguard device flannel-wg: get: ENODEV' });
    await expect(device.update(IFACE, noChange)).rejects.toMatchObject({ code: 'ERR_DEVICE', message: 'wireguard device flannel-wg: set (message 1 of 1): ENODEV' });
  });

  it('close() leaves the link and its peers in place, as upstream does at shutdown', async () => {
    const { fake, device } = setup();
    await device.ensure(IFACE, live());
    await device.close();
    expect(fake.links.get(NAME)?.kind).toBe('wireguard');
  });
});

describe('kernelWgDevices', () => {
  it('opens one socket pair for all its devices and closes it with the last one, even after a failed ensure', async () => {
    const fake = new FakeWgKernel();
    fake.noModule();
    const make = kernelWgDevices(fake.open);
    const v4 = make('flannel-wg');
    const v6 = make('flannel-wg-v6');
    expect(fake.opened).toHaveLength(2);
    await expect(v4.ensure(IFACE, live())).rejects.toBeInstanceOf(WgKernelUnsupportedError);
    await v4.close();
    await v4.close();
    await make('flannel-wg').close();
    expect(fake.opened).toHaveLength(2);
    await v6.close();
    const again = make('flannel-wg');
    expect(fake.opened).toHaveLength(4);
    await again.close();
  });
});
