import { describe, expect, it } from 'vitest';
import { parseIp } from '../../../../flanneld/ip/address.js';
import { parseCidr, type IpNet } from '../../../../flanneld/ip/cidr.js';
import {
  UapiErrnoError, hexToKey, keyToHex, parseEndpoint, parseGet, renderHandshakeKick, renderPeerChanges, renderSet, replyLines, type WgDeviceConfig, type WgEndpoint,
} from '../../../../backends/wireguard/uapi.js';

// Keys whose 32 bytes are all one value, so the hex in the protocol text below can be written by hand.
const key = (byte: number): string => Buffer.alloc(32, byte).toString('base64');
const hex = (byte: number): string => byte.toString(16).padStart(2, '0').repeat(32);
const PRIVATE = key(0x11);
const PEER_A = key(0xaa);
const PEER_B = key(0xbb);
const PEER_C = key(0xcc);
const PSK = key(0x42);
const ZERO = '0'.repeat(64);

const cidr = (text: string): IpNet => parseCidr(text)!;
const endpoint = (ip: string, port: number): WgEndpoint => ({ ip: parseIp(ip)!, port });

function thrown(fn: () => unknown): Error & { code?: string } {
  try {
    fn();
  } catch (err) {
    return err as Error & { code?: string };
  }
  throw new Error('expected a throw');
}

describe('keyToHex / hexToKey', () => {
  it('converts both ways', () => {
    expect(keyToHex('AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=')).toBe('0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20');
    expect(hexToKey('0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20')).toBe('AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=');
  });

  it.each([
    ['31 bytes', Buffer.alloc(31, 1).toString('base64')],
    ['33 bytes', Buffer.alloc(33, 1).toString('base64')],
    ['not base64', `${'!'.repeat(43)}=`],
    ['empty', ''],
    // Decodes to 32 bytes but with stray low bits in the last character: not what any tool would print.
    ['non-canonical', 'AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyB='],
  ])('refuses a base64 key of %s without echoing it', (_, text) => {
    const err = thrown(() => keyToHex(text));
    expect(err.code).toBe('ERR_CONFIG_INVALID');
    if (text) expect(err.message).not.toContain(text);
  });

  it.each([hex(1).slice(2), `${hex(1)}00`, hex(0xab).toUpperCase(), `${hex(1).slice(1)}g`])('refuses hex %s', (text) => {
    expect(thrown(() => hexToKey(text)).code).toBe('ERR_CONFIG_INVALID');
  });
});

describe('parseEndpoint', () => {
  it('reads IPv4 and bracketed IPv6', () => {
    expect(parseEndpoint('192.0.2.1:51820')).toEqual(endpoint('192.0.2.1', 51820));
    expect(parseEndpoint('[2001:db8::1]:51820')).toEqual(endpoint('2001:db8::1', 51820));
  });

  it.each(['2001:db8::1:51820', '[192.0.2.1]:1', '192.0.2.1', '192.0.2.1:65536', '[2001:db8::1]', 'host:1', '192.0.2.1:-1'])('refuses %s', (text) => {
    expect(parseEndpoint(text)).toBeUndefined();
  });
});

const CONFIG: WgDeviceConfig = {
  privateKey: PRIVATE,
  listenPort: 51820,
  peers: [
    { publicKey: PEER_A, endpoint: endpoint('192.0.2.2', 51820), persistentKeepalive: 25, allowedIps: [cidr('10.244.1.0/24'), cidr('10.244.1.0/32')] },
    { publicKey: PEER_B, presharedKey: PSK, endpoint: endpoint('2001:db8::3', 51821), allowedIps: [cidr('10.244.2.0/24'), cidr('2001:db8:f::/64')] },
  ],
};

const PEER_LINES = [
  `public_key=${hex(0xaa)}`,
  `preshared_key=${ZERO}`,
  'endpoint=192.0.2.2:51820',
  'persistent_keepalive_interval=25',
  'replace_allowed_ips=true',
  'allowed_ip=10.244.1.0/24',
  'allowed_ip=10.244.1.0/32',
  `public_key=${hex(0xbb)}`,
  `preshared_key=${hex(0x42)}`,
  'endpoint=[2001:db8::3]:51821',
  'persistent_keepalive_interval=0',
  'replace_allowed_ips=true',
  'allowed_ip=10.244.2.0/24',
  'allowed_ip=2001:db8:f::/64',
];

describe('renderSet', () => {
  it('replaces every peer when the current state is not given', () => {
    expect(renderSet(CONFIG)).toBe(['set=1', `private_key=${hex(0x11)}`, 'listen_port=51820', 'replace_peers=true', ...PEER_LINES, '', ''].join('\n'));
  });

  it('removes only the stale peers when the current peers are given', () => {
    const current = { peers: [{ publicKey: PEER_A }, { publicKey: PEER_C }] };
    expect(renderSet(CONFIG, current)).toBe(
      ['set=1', `private_key=${hex(0x11)}`, 'listen_port=51820', `public_key=${hex(0xcc)}`, 'remove=true', ...PEER_LINES, '', ''].join('\n'),
    );
  });

  it('renderPeerChanges removes the named peers and writes the given ones, leaving the rest alone', () => {
    expect(renderPeerChanges(CONFIG, [PEER_C])).toBe(
      ['set=1', `private_key=${hex(0x11)}`, 'listen_port=51820', `public_key=${hex(0xcc)}`, 'remove=true', ...PEER_LINES, '', ''].join('\n'),
    );
    expect(renderPeerChanges({ privateKey: PRIVATE, peers: [] }, [])).toBe(`set=1\nprivate_key=${hex(0x11)}\n\n`);
  });

  it('renderHandshakeKick turns keepalives on and off again for the peers without them, and only updates', () => {
    const quiet = { publicKey: PEER_A, allowedIps: [] };
    const chatty = { publicKey: PEER_C, persistentKeepalive: 25, allowedIps: [] };
    expect(renderHandshakeKick([quiet, chatty])).toEqual([
      `set=1\npublic_key=${hex(0xaa)}\nupdate_only=true\npersistent_keepalive_interval=1\n\n`,
      `set=1\npublic_key=${hex(0xaa)}\nupdate_only=true\npersistent_keepalive_interval=0\n\n`,
    ]);
    expect(renderHandshakeKick([chatty])).toBeUndefined();
  });

  it('writes fwmark when given and an empty peer list', () => {
    expect(renderSet({ privateKey: PRIVATE, fwmark: 0x1e, peers: [] })).toBe(`set=1\nprivate_key=${hex(0x11)}\nfwmark=30\nreplace_peers=true\n\n`);
  });

  it.each<[string, WgDeviceConfig]>([
    ['a listen port above 65535', { privateKey: PRIVATE, listenPort: 65536, peers: [] }],
    ['a fractional fwmark', { privateKey: PRIVATE, fwmark: 1.5, peers: [] }],
    ['a negative keepalive', { privateKey: PRIVATE, peers: [{ publicKey: PEER_A, persistentKeepalive: -1, allowedIps: [] }] }],
    ['an endpoint port above 65535', { privateKey: PRIVATE, peers: [{ publicKey: PEER_A, endpoint: endpoint('192.0.2.2', 70000), allowedIps: [] }] }],
    ['a peer listed twice', { privateKey: PRIVATE, peers: [{ publicKey: PEER_A, allowedIps: [] }, { publicKey: PEER_A, allowedIps: [] }] }],
    ['a short peer key', { privateKey: PRIVATE, peers: [{ publicKey: 'AAAA', allowedIps: [] }] }],
  ])('refuses %s', (_, config) => {
    expect(thrown(() => renderSet(config)).code).toBe('ERR_CONFIG_INVALID');
  });
});

/** A get reply as wireguard-go writes it, with a key this parser does not know (protocol_version) and one from the future. */
const GET_REPLY = [
  `private_key=${hex(0x11)}`,
  'listen_port=51820',
  'fwmark=30',
  `public_key=${hex(0xaa)}`,
  `preshared_key=${ZERO}`,
  'protocol_version=1',
  'endpoint=[2001:db8::2]:51820',
  'last_handshake_time_sec=1767225600',
  'last_handshake_time_nsec=250000000',
  'tx_bytes=1234',
  'rx_bytes=5678',
  'persistent_keepalive_interval=25',
  'allowed_ip=10.244.1.0/24',
  'allowed_ip=10.244.7.0/24',
  'allowed_ip=2001:db8:1::/64',
  'some_future_key=whatever',
  `public_key=${hex(0xbb)}`,
  `preshared_key=${hex(0x42)}`,
  'protocol_version=1',
  'last_handshake_time_sec=0',
  'last_handshake_time_nsec=0',
  'tx_bytes=0',
  'rx_bytes=0',
  'persistent_keepalive_interval=0',
  'errno=0',
  '',
  '',
].join('\n');

describe('parseGet', () => {
  it('reads the interface and its peers', () => {
    expect(parseGet(GET_REPLY)).toEqual({
      privateKey: PRIVATE,
      listenPort: 51820,
      fwmark: 30,
      peers: [
        {
          publicKey: PEER_A,
          presharedKey: undefined,
          endpoint: endpoint('2001:db8::2', 51820),
          persistentKeepalive: 25,
          allowedIps: [cidr('10.244.1.0/24'), cidr('10.244.7.0/24'), cidr('2001:db8:1::/64')],
          lastHandshakeMs: 1767225600250,
          rxBytes: 5678,
          txBytes: 1234,
        },
        {
          publicKey: PEER_B,
          presharedKey: PSK,
          endpoint: undefined,
          persistentKeepalive: 0,
          allowedIps: [],
          lastHandshakeMs: undefined,
          rxBytes: 0,
          txBytes: 0,
        },
      ],
    });
  });

  it('reads a device with nothing configured', () => {
    expect(parseGet('errno=0\n\n')).toEqual({ privateKey: undefined, listenPort: undefined, fwmark: 0, peers: [] });
  });

  it.each([
    ['a line without =', 'listen_port=1\nnonsense\nerrno=0\n\n', 2, '"nonsense"'],
    ['an IPv6 endpoint without brackets', `public_key=${hex(1)}\nendpoint=2001:db8::2:51820\nerrno=0\n\n`, 2, 'not ip:port'],
    ['a bad allowed IP', `public_key=${hex(1)}\nallowed_ip=10.244.1.0/33\nerrno=0\n\n`, 2, 'not a CIDR'],
    ['a peer key before any peer', 'allowed_ip=10.244.1.0/24\nerrno=0\n\n', 1, 'before any public_key'],
    ['an interface key after a peer', `public_key=${hex(1)}\nlisten_port=1\nerrno=0\n\n`, 2, 'after the first peer'],
    ['a non-numeric counter', `public_key=${hex(1)}\nrx_bytes=12k\nerrno=0\n\n`, 2, 'not an unsigned integer'],
    ['a listen port above 65535', 'listen_port=65536\nerrno=0\n\n', 1, 'above 65535'],
  ])('refuses %s, naming the line', (_, reply, line, reason) => {
    const err = thrown(() => parseGet(reply));
    expect(err.code).toBe('ERR_DEVICE');
    expect(err.message).toContain(`line ${line} `);
    expect(err.message).toContain(reason);
  });

  it('keeps a malformed private key out of the error', () => {
    const secret = `${hex(0x11).slice(2)}zz`;
    const err = thrown(() => parseGet(`private_key=${secret}\nerrno=0\n\n`));
    expect(err.message).toContain('line 1 (private_key=…)');
    expect(err.message).not.toContain(secret);
  });
});

describe('replyLines', () => {
  it('returns the lines before errno=0', () => {
    expect(replyLines('a=1\nb=2\nerrno=0\n\n', 'get')).toEqual(['a=1', 'b=2']);
  });

  it('turns a non-zero errno into an ERR_DEVICE error carrying it', () => {
    const err = thrown(() => replyLines('errno=-22\n\n', 'set'));
    expect(err).toBeInstanceOf(UapiErrnoError);
    expect(err).toMatchObject({ code: 'ERR_DEVICE', errno: -22 });
    expect(err.message).toBe('set failed with errno=-22 (EINVAL)');
  });

  it.each(['a=1\n\n', 'errno=0\n', 'errno=x\n\n', '\n\n'])('refuses %j, which lacks a proper ending', (reply) => {
    expect(thrown(() => replyLines(reply, 'get')).code).toBe('ERR_DEVICE');
  });
});
