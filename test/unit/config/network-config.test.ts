import { describe, expect, it } from 'vitest';
import { formatIp } from '../../../flanneld/ip/address.js';
import { formatCidr } from '../../../flanneld/ip/cidr.js';
import {
  DEFAULT_BACKEND_TYPE,
  KNOWN_BACKEND_TYPES,
  allocationRanges,
  parseNetworkConfig,
} from '../../../flanneld/config/network-config.js';
import type { AllocationRange } from '../../../flanneld/config/network-config-types.js';
import { thrownConfigError as thrown } from '../../helpers/thrown-config-error.js';

const VXLAN = '"Backend":{"Type":"vxlan"}';

function show(range: AllocationRange | undefined): [string, number, string, string] | undefined {
  return range && [formatCidr(range.network), range.subnetLen, formatIp(range.subnetMin), formatIp(range.subnetMax)];
}

const ranges = (json: string) => allocationRanges(parseNetworkConfig(json).config);

describe('parseNetworkConfig', () => {
  it('applies upstream defaults and warns about the default backend', () => {
    const { config, warnings } = parseNetworkConfig('{"Network":"10.244.0.0/16"}');
    expect(config).toMatchObject({ enableIPv4: true, enableIPv6: false, enableNFTables: false });
    expect(config.network && formatCidr(config.network)).toBe('10.244.0.0/16');
    expect(config.subnetLen).toBeUndefined();
    expect(config.backend).toEqual({ type: 'vxlan', raw: {} });
    expect(DEFAULT_BACKEND_TYPE).toBe('vxlan');
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain('"vxlan"');
    expect(Object.isFrozen(config)).toBe(true);
  });

  it('reads the documented example with keys in any case', () => {
    const { config, warnings } = parseNetworkConfig(
      '{"network":"10.0.0.0/8","SUBNETLEN":20,"subnetMin":"10.10.0.0","SubnetMAX":"10.99.0.0",' +
        '"backend":{"type":"UDP","Port":7890}}',
    );
    expect(warnings).toEqual([]);
    expect(config.backend.type).toBe('udp');
    expect(config.backend.raw).toEqual({ type: 'UDP', Port: 7890 });
    expect(Object.isFrozen(config.backend.raw)).toBe(true);
    expect(show(allocationRanges(config).v4)).toEqual(['10.0.0.0/8', 20, '10.10.0.0', '10.99.0.0']);
  });

  it.each([
    ['{"Network":"10.0.0.0/8","network":"10.1.0.0/16"}', '10.1.0.0/16'],
    ['{"Network":"10.244.3.7/16"}', '10.244.0.0/16'],
    ['{"NETWORK":"10.5.0.0/16"}', '10.5.0.0/16'],
  ])('%s -> Network %s (last duplicate wins, host bits masked)', (json, network) => {
    const { config } = parseNetworkConfig(json);
    expect(config.network && formatCidr(config.network)).toBe(network);
  });

  it('ignores unknown keys with a warning, and reads Ipv6Network spelled either way', () => {
    const { config, warnings } = parseNetworkConfig(
      `{"Network":"10.0.0.0/16","Ipv6Network":"fc00::/48","EnableIPv6":true,"Foo":1,"Networks":[],${VXLAN}}`,
    );
    expect(config.ipv6Network && formatCidr(config.ipv6Network)).toBe('fc00::/48');
    expect(warnings).toEqual([
      'network config: unknown key "Foo" ignored',
      'network config: unknown key "Networks" ignored',
    ]);
  });

  it.each([
    ['{"EnableIPv4":null,"Network":"10.0.0.0/16"}', 'enableIPv4', true],
    ['{"EnableNFTables":true,"Network":"10.0.0.0/16"}', 'enableNFTables', true],
    ['{"SubnetLen":0,"Network":"10.0.0.0/16"}', 'subnetLen', undefined],
    ['{"SubnetLen":null,"Network":"10.0.0.0/16"}', 'subnetLen', undefined],
    ['{"SubnetMin":"0.0.0.0","Network":"10.0.0.0/16"}', 'subnetMin', undefined],
    ['{"IPv6SubnetMin":null,"Network":"10.0.0.0/16"}', 'ipv6SubnetMin', undefined],
    ['{"IPv6SubnetMax":"::","Network":"10.0.0.0/16"}', 'ipv6SubnetMax', undefined],
  ] as const)('%s -> %s = %s (Go zero values mean "not set")', (json, key, expected) => {
    expect(parseNetworkConfig(json).config[key]).toEqual(expected);
  });

  it.each([
    ['VXLAN', 'vxlan'],
    ['Host-GW', 'host-gw'],
    ['udp', 'udp'],
    ['alloc', 'alloc'],
  ])('lower-cases Backend.Type %s', (type, expected) => {
    const { config, warnings } = parseNetworkConfig(`{"Network":"10.0.0.0/16","Backend":{"Type":"${type}","VNI":4}}`);
    expect(config.backend).toEqual({ type: expected, raw: { Type: type, VNI: 4 } });
    expect(warnings).toEqual([]);
  });

  it('knows the backends flannel-ts runs', () => {
    expect(KNOWN_BACKEND_TYPES).toEqual(['vxlan', 'host-gw', 'udp', 'wireguard', 'alloc']);
  });

  it.each([
    ['not json', 'config'],
    ['', 'config'],
    ['[]', 'config'],
    ['null', 'config'],
    ['"x"', 'config'],
    ['5', 'config'],
    ['{"SubnetLen":"24"}', 'SubnetLen', '24'],
    ['{"SubnetLen":-1}', 'SubnetLen', -1],
    ['{"SubnetLen":24.5}', 'SubnetLen', 24.5],
    ['{"IPv6SubnetLen":true}', 'IPv6SubnetLen', true],
    ['{"EnableIPv6":"yes"}', 'EnableIPv6', 'yes'],
    ['{"EnableIPv4":0}', 'EnableIPv4', 0],
    ['{"EnableNFTables":"true"}', 'EnableNFTables', 'true'],
    ['{"Network":5}', 'Network', 5],
    ['{"Network":null}', 'Network', null],
    ['{"Network":"fc00::/48"}', 'Network', 'fc00::/48', 'invalid IPv4 CIDR format'],
    ['{"Network":"10.0.0.0"}', 'Network', '10.0.0.0', 'invalid IPv4 CIDR format'],
    ['{"Network":"10.0.0.0/33"}', 'Network', '10.0.0.0/33'],
    ['{"IPv6Network":"10.0.0.0/8"}', 'IPv6Network', '10.0.0.0/8', 'invalid IPv6 CIDR format'],
    ['{"SubnetMin":"fc00::"}', 'SubnetMin', 'fc00::'],
    ['{"SubnetMax":5}', 'SubnetMax', 5],
    ['{"SubnetMin":null}', 'SubnetMin', null],
    ['{"IPv6SubnetMin":"10.0.0.1"}', 'IPv6SubnetMin', '10.0.0.1'],
    ['{"IPv6SubnetMax":"fc00::zz"}', 'IPv6SubnetMax', 'fc00::zz'],
    ['{"Network":"10.0.0.0/16","Backend":"vxlan"}', 'Backend', 'vxlan', 'error decoding Backend property'],
    ['{"Network":"10.0.0.0/16","Backend":[]}', 'Backend', []],
    ['{"Network":"10.0.0.0/16","Backend":{}}', 'Backend.Type', undefined, 'vxlan, host-gw, udp, wireguard, alloc'],
    ['{"Network":"10.0.0.0/16","Backend":null}', 'Backend.Type', undefined],
    ['{"Network":"10.0.0.0/16","Backend":{"Type":""}}', 'Backend.Type', ''],
    ['{"Network":"10.0.0.0/16","Backend":{"Type":5}}', 'Backend.Type', 5],
    [
      '{"Network":"10.0.0.0/16","Backend":{"Type":"IPsec"}}',
      'Backend.Type',
      'IPsec',
      'unknown backend type: ipsec (known types: vxlan, host-gw, udp, wireguard, alloc)',
    ],
    ['{"EnableIPv4":false}', 'EnableIPv4', false, 'none defined stack'],
    ['{"EnableIPv4":false,"EnableIPv6":false}', 'EnableIPv4', false],
  ] as const)('%s is a ConfigError naming %s', (json, key, ...rest) => {
    const err = thrown(() => parseNetworkConfig(json));
    expect(err.code).toBe('ERR_CONFIG_INVALID');
    expect(err.key).toBe(key);
    expect(err.message.startsWith(`${key}: `)).toBe(true);
    if (rest.length > 0) expect(err.value).toEqual(rest[0]);
    if (rest.length > 1) expect(err.message).toContain(rest[1]);
  });
});

describe('allocationRanges (CheckNetworkConfig)', () => {
  it.each([
    ['10.244.0.0/16', undefined, 24, '10.244.1.0', '10.244.255.0'],
    ['10.0.0.0/8', undefined, 24, '10.0.1.0', '10.255.255.0'],
    ['10.0.0.0/22', undefined, 24, '10.0.1.0', '10.0.3.0'],
    ['10.0.0.0/23', undefined, 25, '10.0.0.128', '10.0.1.128'],
    ['10.0.0.0/28', undefined, 30, '10.0.0.4', '10.0.0.12'],
    ['10.0.0.0/8', 20, 20, '10.0.16.0', '10.255.240.0'],
    ['10.0.0.0/28', 30, 30, '10.0.0.4', '10.0.0.12'],
    ['10.0.0.0/16', 18, 18, '10.0.64.0', '10.0.192.0'],
  ])('IPv4 %s SubnetLen %s -> /%i from %s to %s', (network, len, subnetLen, min, max) => {
    const lenKey = len === undefined ? '' : `,"SubnetLen":${len}`;
    const r = ranges(`{"Network":"${network}"${lenKey},${VXLAN}}`);
    expect(show(r.v4)).toEqual([network, subnetLen, min, max]);
    expect(r.v6).toBeUndefined();
  });

  it.each([
    ['fc00::/48', undefined, 64, 'fc00:0:0:1::', 'fc00:0:0:ffff::'],
    ['fc00::/62', undefined, 64, 'fc00:0:0:1::', 'fc00:0:0:3::'],
    ['fc00::/63', undefined, 65, 'fc00::8000:0:0:0', 'fc00:0:0:1:8000::'],
    ['fc00::/124', undefined, 126, 'fc00::4', 'fc00::c'],
    ['fc00::/48', 56, 56, 'fc00:0:0:100::', 'fc00:0:0:ff00::'],
  ])('IPv6 %s IPv6SubnetLen %s -> /%i from %s to %s', (network, len, subnetLen, min, max) => {
    const lenKey = len === undefined ? '' : `,"IPv6SubnetLen":${len}`;
    const r = ranges(`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"${network}"${lenKey},${VXLAN}}`);
    expect(show(r.v6)).toEqual([network, subnetLen, min, max]);
    expect(r.v4).toBeUndefined();
  });

  it('keeps given SubnetMin/SubnetMax and covers both families in dual stack', () => {
    const r = ranges(
      '{"Network":"10.244.0.0/16","SubnetMin":"10.244.10.0","SubnetMax":"10.244.20.0","EnableIPv6":true,' +
        `"IPv6Network":"fc00::/48","IPv6SubnetMin":"fc00:0:0:10::","IPv6SubnetMax":"fc00:0:0:20::",${VXLAN}}`,
    );
    expect(show(r.v4)).toEqual(['10.244.0.0/16', 24, '10.244.10.0', '10.244.20.0']);
    expect(show(r.v6)).toEqual(['fc00::/48', 64, 'fc00:0:0:10::', 'fc00:0:0:20::']);
    expect(Object.isFrozen(r)).toBe(true);
  });

  it('accepts SubnetMin equal to SubnetMax', () => {
    const r = ranges(`{"Network":"10.0.0.0/16","SubnetMin":"10.0.5.0","SubnetMax":"10.0.5.0",${VXLAN}}`);
    expect(show(r.v4)?.slice(2)).toEqual(['10.0.5.0', '10.0.5.0']);
  });

  const V6 = '"EnableIPv4":false,"EnableIPv6":true';
  const n4 = (extra: string) => `{"Network":"10.244.0.0/16",${extra}}`;
  const n6 = (extra: string) => `{${V6},"IPv6Network":"fc00::/48",${extra}}`;
  it.each([
    ['{}', 'Network', undefined, 'please define a correct Network parameter in the flannel config'],
    ['{"Network":"0.0.0.0/0"}', 'Network', '0.0.0.0/0', 'please define a correct Network parameter'],
    [n4('"SubnetLen":31'), 'SubnetLen', 31, 'SubnetLen must be less than /31'],
    [n4('"SubnetLen":33'), 'SubnetLen', 33, 'SubnetLen must be less than /31'],
    [n4('"SubnetLen":17'), 'SubnetLen', 17, 'network must be able to accommodate at least four subnets'],
    [n4('"SubnetLen":8'), 'SubnetLen', 8, 'at least four subnets'],
    [
      '{"Network":"10.0.0.0/29"}',
      'Network',
      '10.0.0.0/29',
      'network is too small. Minimum useful network prefix is /28',
    ],
    [n4('"SubnetMin":"10.245.0.0"'), 'SubnetMin', '10.245.0.0', 'SubnetMin is not in the range of the Network'],
    [n4('"SubnetMax":"10.0.0.0"'), 'SubnetMax', '10.0.0.0', 'SubnetMax is not in the range of the Network'],
    [n4('"SubnetMin":"10.244.1.5"'), 'SubnetMin', '10.244.1.5', 'SubnetMin is not on a SubnetLen boundary: 10.244.1.5'],
    [n4('"SubnetMax":"10.244.2.1"'), 'SubnetMax', '10.244.2.1', 'SubnetMax is not on a SubnetLen boundary: 10.244.2.1'],
    [
      n4('"SubnetMin":"10.244.9.0","SubnetMax":"10.244.2.0"'),
      'SubnetMin',
      '10.244.9.0',
      'SubnetMin is greater than SubnetMax 10.244.2.0',
    ],
    [`{${V6}}`, 'IPv6Network', undefined, 'please define a correct IPv6Network parameter in the flannel config'],
    [`{${V6},"IPv6Network":"::/0"}`, 'IPv6Network', '::/0', 'please define a correct IPv6Network parameter'],
    [n6('"IPv6SubnetLen":127'), 'IPv6SubnetLen', 127, 'SubnetLen must be less than /127'],
    [n6('"IPv6SubnetLen":129'), 'IPv6SubnetLen', 129, 'SubnetLen must be less than /127'],
    [n6('"IPv6SubnetLen":49'), 'IPv6SubnetLen', 49, 'network must be able to accommodate at least four subnets'],
    [
      `{${V6},"IPv6Network":"fc00::/125"}`,
      'IPv6Network',
      'fc00::/125',
      'IPv6Network is too small. Minimum useful network prefix is /124',
    ],
    [n6('"IPv6SubnetMin":"fd00::"'), 'IPv6SubnetMin', 'fd00::', 'IPv6SubnetMin is not in the range of the IPv6Network'],
    [n6('"IPv6SubnetMax":"fd00::"'), 'IPv6SubnetMax', 'fd00::', 'IPv6SubnetMax is not in the range of the IPv6Network'],
    [
      n6('"IPv6SubnetMin":"fc00:0:0:1::1"'),
      'IPv6SubnetMin',
      'fc00:0:0:1::1',
      'IPv6SubnetMin is not on a SubnetLen boundary: fc00:0:0:1::1',
    ],
    [
      n6('"IPv6SubnetMax":"fc00:0:0:2:8000::"'),
      'IPv6SubnetMax',
      'fc00:0:0:2:8000::',
      'IPv6SubnetMax is not on a SubnetLen boundary: fc00:0:0:2:8000::',
    ],
    [
      n6('"IPv6SubnetMin":"fc00:0:0:9::","IPv6SubnetMax":"fc00:0:0:2::"'),
      'IPv6SubnetMin',
      'fc00:0:0:9::',
      'IPv6SubnetMin is greater than IPv6SubnetMax fc00:0:0:2::',
    ],
    ['{"EnableIPv6":true,"Network":"10.0.0.0/16","IPv6Network":"fc00::/125"}', 'IPv6Network', 'fc00::/125', 'small'],
  ])('%s is a ConfigError naming %s', (json, key, value, reason) => {
    const { config } = parseNetworkConfig(json);
    const err = thrown(() => allocationRanges(config));
    expect(err.key).toBe(key);
    expect(err.value).toEqual(value);
    expect(err.message.startsWith(`${key}: `)).toBe(true);
    expect(err.message).toContain(reason);
  });

  it('checks only enabled families', () => {
    expect(ranges('{"Network":"10.0.0.0/16","IPv6Network":"fc00::/125"}').v6).toBeUndefined();
    expect(ranges(`{${V6},"Network":"10.0.0.0/29","IPv6Network":"fc00::/48"}`).v4).toBeUndefined();
  });
});
