import { describe, expect, it } from 'vitest';
import { parseWireguardConfig, type WireguardConfig } from '../../../../backends/wireguard/wireguard-config.js';
import { parseWireguardPeerData, wireguardLeaseData } from '../../../../backends/wireguard/wg-lease-data.js';
import { encodeLeaseAttrs } from '../../../../flanneld/lease/lease.js';

const parse = (raw: Record<string, unknown>): WireguardConfig => parseWireguardConfig({ type: 'wireguard', raw });
const KEY = Buffer.alloc(32, 0x5a).toString('base64');

describe('wireguardLeaseData', () => {
  it("separate mode publishes each family's own port, in upstream's JSON shape", () => {
    const data = wireguardLeaseData(parse({ ListenPort: 1000, ListenPortV6: 1001 }), [4, 6], KEY);
    expect(data).toEqual({
      backendType: 'wireguard',
      backendData: { PublicKey: KEY, Port: 1000 },
      backendV6Data: { PublicKey: KEY, Port: 1001 },
    });
    expect(encodeLeaseAttrs(data)).toBe(
      `{"PublicIP":"0.0.0.0","PublicIPv6":null,"BackendType":"wireguard",` +
        `"BackendData":{"PublicKey":"${KEY}","Port":1000},"BackendV6Data":{"PublicKey":"${KEY}","Port":1001}}`,
    );
  });

  // Upstream would publish 1001 for IPv6 here, where nothing listens.
  it.each(['auto', 'ipv4', 'ipv6'])('%s mode publishes ListenPort for both families', (mode) => {
    const data = wireguardLeaseData(parse({ Mode: mode, ListenPort: 1000, ListenPortV6: 1001 }), [4, 6], KEY);
    expect(data.backendData).toEqual({ PublicKey: KEY, Port: 1000 });
    expect(data.backendV6Data).toEqual({ PublicKey: KEY, Port: 1000 });
  });

  it('publishes data only for the families the node runs', () => {
    expect(wireguardLeaseData(parse({}), [4], KEY)).toEqual({
      backendType: 'wireguard',
      backendData: { PublicKey: KEY, Port: 51820 },
    });
    expect(wireguardLeaseData(parse({}), [6], KEY)).toEqual({
      backendType: 'wireguard',
      backendV6Data: { PublicKey: KEY, Port: 51821 },
    });
  });
});

describe('parseWireguardPeerData', () => {
  it('reads PublicKey and Port, keys in any case, unknown keys ignored', () => {
    expect(parseWireguardPeerData({ PublicKey: KEY, Port: 4000 }, 'BackendData', 51820)).toEqual({
      publicKey: KEY,
      port: 4000,
    });
    expect(parseWireguardPeerData({ publickey: KEY, PORT: 65535, Extra: 1 }, 'BackendData', 51820)).toEqual({
      publicKey: KEY,
      port: 65535,
    });
  });

  it('lets the later spelling of a key win, as Go does', () => {
    expect(parseWireguardPeerData({ PublicKey: KEY, Port: 1, port: 2 }, 'BackendData', 51820)).toMatchObject({ port: 2 });
  });

  it.each([
    ['missing', {}],
    ['zero', { Port: 0 }],
    ['null', { Port: null }],
  ])('takes our own listen port when Port is %s, as older upstreams publish none', (_label, extra) => {
    expect(parseWireguardPeerData({ PublicKey: KEY, ...extra }, 'BackendV6Data', 51821)).toEqual({
      publicKey: KEY,
      port: 51821,
    });
  });

  it.each([-1, 65536, 1.5, '4000', true])('refuses Port %j, naming the lease field', (port) => {
    const result = parseWireguardPeerData({ PublicKey: KEY, Port: port }, 'BackendV6Data', 51820);
    expect(result).toEqual({ refused: expect.stringContaining('BackendV6Data.Port') });
  });

  it.each([
    ['missing', {}],
    ['null', { PublicKey: null }],
    ['empty', { PublicKey: '' }],
    ['31 bytes', { PublicKey: Buffer.alloc(31).toString('base64') }],
    ['not base64', { PublicKey: 'not a key' }],
    ['a number', { PublicKey: 5 }],
  ])('refuses a PublicKey that is %s, naming the lease field', (_label, data) => {
    const result = parseWireguardPeerData({ Port: 1, ...data }, 'BackendData', 51820);
    expect(result).toEqual({ refused: expect.stringContaining('BackendData.PublicKey') });
  });

  it.each([undefined, null, 'x', [KEY]])('refuses data %j that is not an object', (data) => {
    expect(parseWireguardPeerData(data, 'BackendData', 51820)).toEqual({
      refused: expect.stringContaining('BackendData is not an object'),
    });
  });

  it('returns the key in canonical form', () => {
    expect(parseWireguardPeerData({ PublicKey: `${KEY}\n` }, 'BackendData', 51820)).toEqual({
      publicKey: KEY,
      port: 51820,
    });
  });
});
