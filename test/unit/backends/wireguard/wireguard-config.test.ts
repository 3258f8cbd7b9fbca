import { describe, expect, it } from 'vitest';
import {
  deviceFor,
  deviceMtu,
  endpointFamily,
  parseWireguardConfig,
  wireguardDevices,
  type EndpointAddresses,
  type WireguardConfig,
} from '../../../../backends/wireguard/wireguard-config.js';
import { parseIp, type IpAddress } from '../../../../flanneld/ip/address.js';
import { thrownConfigError as thrown } from '../../../helpers/thrown-config-error.js';

const parse = (raw: Record<string, unknown>): WireguardConfig => parseWireguardConfig({ type: 'wireguard', raw });

// base64 of 32 bytes 0x00..0x1f.
const PSK = Buffer.from(Array.from({ length: 32 }, (_, i) => i)).toString('base64');

describe('parseWireguardConfig', () => {
  it("applies upstream's defaults to an empty block", () => {
    const config = parse({ Type: 'wireguard' });
    expect(config).toEqual({
      listenPort: 51820,
      listenPortV6: 51821,
      mtu: 0,
      persistentKeepaliveInterval: 0,
      mode: 'separate',
    });
    expect(Object.isFrozen(config)).toBe(true);
  });

  it('reads every key, matched case-insensitively, and ignores unknown ones', () => {
    const config = parse({
      listenport: 40000,
      LISTENPORTV6: 40001,
      Mtu: 9000,
      psk: PSK,
      persistentKeepaliveInterval: 25,
      MODE: 'auto',
      VNI: 'ignored',
    });
    expect(config).toEqual({
      listenPort: 40000,
      listenPortV6: 40001,
      mtu: 9000,
      psk: PSK,
      persistentKeepaliveInterval: 25,
      mode: 'auto',
    });
  });

  it('treats null and an empty PSK as not given, as upstream does', () => {
    expect(parse({ ListenPort: null, Mode: null, PSK: null })).toMatchObject({ listenPort: 51820, mode: 'separate' });
    expect(parse({ PSK: '' })).not.toHaveProperty('psk');
  });

  it.each(['separate', 'auto', 'ipv4', 'ipv6'])('accepts Mode %s', (mode) => {
    expect(parse({ Mode: mode }).mode).toBe(mode);
  });

  it.each(['Separate', 'IPv4', '', 'dual', 4, true])('refuses Mode %j, naming the key and the value', (mode) => {
    const err = thrown(() => parse({ Mode: mode }));
    expect(err.key).toBe('Backend.Mode');
    expect(err.value).toEqual(mode);
    expect(err.message).toContain(`(got ${JSON.stringify(mode)})`);
    expect(err.message).toContain('separate, auto, ipv4, ipv6');
  });

  it.each([
    ['ListenPort', 0],
    ['ListenPort', 65536],
    ['ListenPortV6', -1],
    ['ListenPortV6', '51821'],
    ['MTU', 147],
    ['MTU', 65536],
    ['MTU', 1500.5],
    ['PersistentKeepaliveInterval', -1],
    ['PersistentKeepaliveInterval', 65536],
    ['PersistentKeepaliveInterval', '25s'],
  ])('refuses %s %j, naming the key and the value', (key, value) => {
    const err = thrown(() => parse({ [key]: value }));
    expect(err.key).toBe(`Backend.${key}`);
    expect(err.value).toEqual(value);
    expect(err.message).toContain(`(got ${JSON.stringify(value)})`);
  });

  it('accepts the range ends', () => {
    expect(parse({ ListenPort: 1, ListenPortV6: 65535, MTU: 148, PersistentKeepaliveInterval: 65535 })).toMatchObject({
      listenPort: 1,
      listenPortV6: 65535,
      mtu: 148,
      persistentKeepaliveInterval: 65535,
    });
  });

  it('keeps a PSK given with a trailing newline in canonical form, as Go base64 skips newlines', () => {
    expect(parse({ PSK: `${PSK}\n` }).psk).toBe(PSK);
  });

  it.each([
    ['too short', Buffer.alloc(31).toString('base64')],
    ['too long', Buffer.alloc(33).toString('base64')],
    ['not base64', `${PSK.slice(0, -2)}!=`],
    ['unpadded', PSK.slice(0, -1)],
    ['url alphabet', Buffer.alloc(32, 0xfb).toString('base64url')],
  ])('refuses a PSK that is %s without showing it', (_label, psk) => {
    const err = thrown(() => parse({ PSK: psk }));
    expect(err.key).toBe('Backend.PSK');
    expect(err.message).not.toContain(psk);
    expect(err.message).toContain(`${psk.length} characters, not shown`);
  });

  it('refuses a PSK that is not a string', () => {
    expect(thrown(() => parse({ PSK: 12 })).message).toContain('a number, not shown');
  });
});

describe('deviceMtu', () => {
  it("takes 80 off the external interface's MTU, or off the configured one", () => {
    expect(deviceMtu(parse({}), 1500)).toBe(1420);
    expect(deviceMtu(parse({ MTU: 9000 }), 1500)).toBe(8920);
  });
});

describe('devices', () => {
  it('separate: one device per family, each on its own port', () => {
    const config = parse({ ListenPort: 1000, ListenPortV6: 1001 });
    expect(deviceFor(config, 4)).toEqual({ name: 'flannel-wg', listenPort: 1000 });
    expect(deviceFor(config, 6)).toEqual({ name: 'flannel-wg-v6', listenPort: 1001 });
    expect(wireguardDevices(config, [4, 6])).toEqual([
      { name: 'flannel-wg', listenPort: 1000 },
      { name: 'flannel-wg-v6', listenPort: 1001 },
    ]);
    expect(wireguardDevices(config, [6])).toEqual([{ name: 'flannel-wg-v6', listenPort: 1001 }]);
  });

  it.each(['auto', 'ipv4', 'ipv6'])('%s: flannel-wg carries both families on ListenPort', (mode) => {
    const config = parse({ Mode: mode, ListenPort: 1000, ListenPortV6: 1001 });
    expect(deviceFor(config, 4)).toEqual({ name: 'flannel-wg', listenPort: 1000 });
    expect(deviceFor(config, 6)).toEqual({ name: 'flannel-wg', listenPort: 1000 });
    expect(wireguardDevices(config, [4, 6])).toEqual([{ name: 'flannel-wg', listenPort: 1000 }]);
    expect(wireguardDevices(config, [6])).toEqual([{ name: 'flannel-wg', listenPort: 1000 }]);
  });
});

describe('endpointFamily', () => {
  const at = (v4?: string, v6?: string): EndpointAddresses => ({
    ...(v4 ? { publicIP: parseIp(v4) as IpAddress } : {}),
    ...(v6 ? { publicIPv6: parseIp(v6) as IpAddress } : {}),
  });
  const dual = at('192.0.2.1', '2001:db8::1');

  it('ipv4 and ipv6 modes always use their family', () => {
    expect(endpointFamily('ipv4', dual, dual)).toBe(4);
    expect(endpointFamily('ipv6', dual, dual)).toBe(6);
  });

  it.each([
    ['peer without IPv6', at('192.0.2.2'), dual, 4],
    ['public IPv4 on both', dual, dual, 4],
    ['peer IPv4 private, public IPv6 on both', at('10.1.2.3', '2001:db8::2'), dual, 6],
    ['peer IPv4 in 172.16/12, public IPv6 on both', at('172.31.0.1', '2001:db8::2'), dual, 6],
    ['peer IPv4 in 192.168/16, public IPv6 on both', at('192.168.0.1', '2001:db8::2'), dual, 6],
    ['172.32/16 is public', at('172.32.0.1', '2001:db8::2'), dual, 4],
    ['node without IPv4, public IPv6 on both', dual, at(undefined, '2001:db8::1'), 6],
    ['peer IPv6 is ULA', at('10.1.2.3', 'fd00::2'), dual, 4],
    ['node IPv6 is ULA', at('10.1.2.3', '2001:db8::2'), at('192.0.2.1', 'fc00::1'), 4],
    ['node without IPv6', at('10.1.2.3', '2001:db8::2'), at('192.0.2.1'), 4],
    ['IPv6-only peer and node', at(undefined, '2001:db8::2'), at(undefined, '2001:db8::1'), 6],
  ] as const)('auto, %s: IPv%d', (_label, peer, self, family) => {
    expect(endpointFamily('auto', peer, self)).toBe(family);
  });
});
