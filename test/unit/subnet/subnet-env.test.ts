import { mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { formatCidr, parseCidr, type IpNet } from '../../../flanneld/ip/cidr.js';
import {
  DEFAULT_SUBNET_FILE,
  parseEnvText,
  previousSubnets,
  renderSubnetEnv,
  writeSubnetFile,
} from '../../../flanneld/subnet/subnet-env.js';

const net = (text: string): IpNet => {
  const n = parseCidr(text);
  if (!n) throw new Error(`bad test CIDR ${text}`);
  return n;
};

const shown = (pair: { subnet?: IpNet; ipv6Subnet?: IpNet }): Record<string, string> =>
  Object.fromEntries(Object.entries(pair).map(([k, v]) => [k, formatCidr(v)]));

describe('renderSubnetEnv', () => {
  it('writes the upstream text for an IPv4-only network', () => {
    const text = renderSubnetEnv({ network: net('10.244.0.0/16'), subnet: net('10.244.3.0/24'), mtu: 1450, ipMasq: true });
    expect(text).toBe(
      'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n',
    );
  });

  it('writes the upstream text and key order for dual stack', () => {
    const text = renderSubnetEnv({
      network: net('10.244.0.0/16'),
      subnet: net('10.244.3.0/24'),
      ipv6Network: net('fc00::/48'),
      ipv6Subnet: net('fc00:0:0:3::/64'),
      mtu: 1430,
      ipMasq: false,
    });
    expect(text).toBe(
      [
        'FLANNEL_NETWORK=10.244.0.0/16',
        'FLANNEL_SUBNET=10.244.3.1/24',
        'FLANNEL_IPV6_NETWORK=fc00::/48',
        'FLANNEL_IPV6_SUBNET=fc00:0:0:3::1/64',
        'FLANNEL_MTU=1430',
        'FLANNEL_IPMASQ=false',
        '',
      ].join('\n'),
    );
  });

  it('writes the upstream text for an IPv6-only network', () => {
    const text = renderSubnetEnv({ ipv6Network: net('fc00::/48'), ipv6Subnet: net('fc00:0:0:a::/64'), mtu: 1500, ipMasq: true });
    expect(text).toBe('FLANNEL_IPV6_NETWORK=fc00::/48\nFLANNEL_IPV6_SUBNET=fc00:0:0:a::1/64\nFLANNEL_MTU=1500\nFLANNEL_IPMASQ=true\n');
  });

  it.each([
    ['10.244.0.0/24', '10.244.0.1/24'],
    ['10.244.255.0/24', '10.244.255.1/24'],
    ['10.5.34.0/23', '10.5.34.1/23'],
    ['192.168.7.128/25', '192.168.7.129/25'],
    ['fc00:0:0:ffff::/64', 'fc00:0:0:ffff::1/64'],
  ])('reports subnet %s as the network address plus one with the lease prefix (%s)', (subnet, expected) => {
    const family = subnet.includes(':') ? 'IPV6_' : '';
    const text = renderSubnetEnv({
      ...(family ? { ipv6Subnet: net(subnet) } : { subnet: net(subnet) }),
      mtu: 1450,
      ipMasq: false,
    });
    expect(parseEnvText(text).get(`FLANNEL_${family}SUBNET`)).toBe(expected);
  });

  it('round-trips through previousSubnets', () => {
    const text = renderSubnetEnv({
      network: net('10.244.0.0/16'),
      subnet: net('10.244.3.0/24'),
      ipv6Network: net('fc00::/48'),
      ipv6Subnet: net('fc00:0:0:3::/64'),
      mtu: 1450,
      ipMasq: true,
    });
    expect(shown(previousSubnets(text))).toEqual({ subnet: '10.244.3.0/24', ipv6Subnet: 'fc00:0:0:3::/64' });
  });

  it('defaults the path to upstream /run/flannel/subnet.env', () => {
    expect(DEFAULT_SUBNET_FILE).toBe('/run/flannel/subnet.env');
  });
});

describe('parseEnvText', () => {
  it('reads KEY=value lines, skipping blanks, comments and lines without a key', () => {
    const env = parseEnvText(
      [
        '# written by flanneld',
        '',
        'FLANNEL_NETWORK=10.244.0.0/16',
        '  FLANNEL_MTU = 1450  ',
        'no equals sign here',
        '=value without a key',
        'FLANNEL_IPMASQ=true\r',
        'EMPTY=',
      ].join('\n'),
    );
    expect([...env]).toEqual([
      ['FLANNEL_NETWORK', '10.244.0.0/16'],
      ['FLANNEL_MTU', '1450'],
      ['FLANNEL_IPMASQ', 'true'],
      ['EMPTY', ''],
    ]);
  });

  it('keeps everything after the first "=" in the value', () => {
    expect(parseEnvText('A=b=c # not a comment\n').get('A')).toBe('b=c # not a comment');
  });

  it('lets a later line win', () => {
    expect(parseEnvText('FLANNEL_MTU=1450\nFLANNEL_MTU=1400\n').get('FLANNEL_MTU')).toBe('1400');
  });

  it('reads nothing from empty text', () => {
    expect(parseEnvText('').size).toBe(0);
  });
});

describe('previousSubnets', () => {
  it.each<[string, string, Record<string, string>]>([
    ['an IPv4 subnet, host bits dropped', 'FLANNEL_SUBNET=10.244.3.1/24\n', { subnet: '10.244.3.0/24' }],
    ['an IPv6 subnet', 'FLANNEL_IPV6_SUBNET=fc00:0:0:3::1/64\n', { ipv6Subnet: 'fc00:0:0:3::/64' }],
    [
      'both',
      'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_IPV6_SUBNET=fc00:0:0:3::1/64\n',
      { subnet: '10.244.3.0/24', ipv6Subnet: 'fc00:0:0:3::/64' },
    ],
    ['nothing from a comma list (a multi-network file)', 'FLANNEL_SUBNET=10.244.3.1/24,10.245.3.1/24\n', {}],
    ['nothing from an IPv6 comma list', 'FLANNEL_IPV6_SUBNET=fc00:0:0:3::1/64,fd00::1/64\n', {}],
    ['nothing from an IPv6 value under the IPv4 key', 'FLANNEL_SUBNET=fc00:0:0:3::1/64\n', {}],
    ['nothing from an IPv4 value under the IPv6 key', 'FLANNEL_IPV6_SUBNET=10.244.3.1/24\n', {}],
    ['nothing from a bare address', 'FLANNEL_SUBNET=10.244.3.1\n', {}],
    ['nothing from garbage', 'FLANNEL_SUBNET=not-a-subnet\nFLANNEL_IPV6_SUBNET=\n', {}],
    ['nothing from an empty file', '', {}],
    ['one family when the other is malformed', 'FLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_IPV6_SUBNET=zz::/64\n', { subnet: '10.244.3.0/24' }],
  ])('reads %s', (_what, text, expected) => {
    expect(shown(previousSubnets(text))).toEqual(expected);
  });

  it('leaves absent families out of the object entirely', () => {
    expect(Object.keys(previousSubnets('FLANNEL_SUBNET=10.244.3.1/24\n'))).toEqual(['subnet']);
  });
});

describe('writeSubnetFile', () => {
  let dir: string;
  let savedUmask: number;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'flannel-ts-subnet-env-'));
    savedUmask = process.umask(0o077);
  });

  afterEach(async () => {
    process.umask(savedUmask);
    await rm(dir, { recursive: true, force: true });
  });

  it('writes the text with mode 0644 despite umask 077', async () => {
    const path = join(dir, 'subnet.env');
    await writeSubnetFile(path, 'FLANNEL_MTU=1450\n');
    expect(await readFile(path, 'utf8')).toBe('FLANNEL_MTU=1450\n');
    expect((await stat(path)).mode & 0o777).toBe(0o644);
  });

  it('creates missing parent directories', async () => {
    const path = join(dir, 'run', 'flannel', 'subnet.env');
    await writeSubnetFile(path, 'FLANNEL_MTU=1450\n');
    expect((await stat(join(dir, 'run', 'flannel'))).isDirectory()).toBe(true);
    expect(await readFile(path, 'utf8')).toBe('FLANNEL_MTU=1450\n');
  });

  it('replaces an existing file, leaving no temp file behind', async () => {
    const path = join(dir, 'subnet.env');
    await writeFile(path, 'old contents that are longer than the new ones\n', { mode: 0o600 });
    await writeSubnetFile(path, 'FLANNEL_MTU=1400\n');
    expect(await readFile(path, 'utf8')).toBe('FLANNEL_MTU=1400\n');
    expect((await stat(path)).mode & 0o777).toBe(0o644);
    expect(await readdir(dir)).toEqual(['subnet.env']);
  });

  it('removes its temp file when the final rename fails', async () => {
    const path = join(dir, 'subnet.env');
    await mkdir(join(path, 'occupied'), { recursive: true });
    await expect(writeSubnetFile(path, 'FLANNEL_MTU=1450\n')).rejects.toMatchObject({ code: expect.any(String) });
    expect(await readdir(dir)).toEqual(['subnet.env']);
    expect((await stat(path)).isDirectory()).toBe(true);
  });
});
