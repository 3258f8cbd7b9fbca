import { describe, expect, it } from 'vitest';
import {
  parseVxlanConfig,
  vxlanDeviceName,
  vxlanMtu,
  vxlanOverhead,
  type VxlanConfig,
} from '../../../../backends/vxlan/vxlan-config.js';
import { thrownConfigError as thrown } from '../../../helpers/thrown-config-error.js';

const parse = (raw: Record<string, unknown>): VxlanConfig => parseVxlanConfig({ type: 'vxlan', raw });

describe('parseVxlanConfig', () => {
  it('applies upstream defaults to an empty block', () => {
    const config = parse({ Type: 'vxlan' });
    expect(config).toEqual({ vni: 1, port: 0, mtu: 0, gbp: false, learning: false, directRouting: false });
    expect(Object.isFrozen(config)).toBe(true);
  });

  it('reads every key, matched case-insensitively, and ignores unknown ones', () => {
    const config = parse({
      vni: 42,
      PORT: 4789,
      Mtu: 9000,
      gbp: true,
      LEARNING: true,
      directrouting: true,
      MacPrefix: '0E-2A',
      Whatever: [1, 2],
    });
    expect(config).toEqual({ vni: 42, port: 4789, mtu: 9000, gbp: true, learning: true, directRouting: true });
  });

  it('lets the later spelling of a key win, as Go does', () => {
    expect(parse({ VNI: 2, vni: 3 }).vni).toBe(3);
  });

  it('treats null as not given, as Go does', () => {
    expect(parse({ VNI: null, DirectRouting: null, MTU: null })).toMatchObject({ vni: 1, directRouting: false, mtu: 0 });
  });

  it.each([
    ['VNI', 0],
    ['VNI', 16777215],
    ['Port', 0],
    ['Port', 65535],
    ['MTU', 0],
    ['MTU', 68],
    ['MTU', 65535],
  ])('accepts %s %d', (key, value) => {
    expect(() => parse({ [key]: value })).not.toThrow();
  });

  it.each([
    ['VNI', 16777216],
    ['VNI', -1],
    ['VNI', 1.5],
    ['VNI', '1'],
    ['VNI', true],
    ['Port', 65536],
    ['Port', -1],
    ['Port', '8472'],
    ['MTU', 67],
    ['MTU', 1],
    ['MTU', 65536],
    ['MTU', -1500],
    ['MTU', '1500'],
    ['GBP', 'true'],
    ['Learning', 1],
    ['DirectRouting', 'yes'],
    ['DirectRouting', {}],
  ])('rejects %s %j, naming Backend.<key> and the value', (key, value) => {
    const err = thrown(() => parse({ [key.toLowerCase()]: value }));
    expect(err.key).toBe(`Backend.${key}`);
    expect(err.value).toEqual(value);
    expect(err.code).toBe('ERR_CONFIG_INVALID');
    expect(err.message).toContain(`Backend.${key}`);
  });
});

describe('vxlanDeviceName', () => {
  it.each([
    [1, 4, 'flannel.1'],
    [1, 6, 'flannel-v6.1'],
    [4096, 4, 'flannel.4096'],
    [16777215, 6, 'flannel-v6.16777215'],
  ] as const)('VNI %d IPv%d -> %s', (vni, family, name) => {
    expect(vxlanDeviceName(vni, family)).toBe(name);
  });
});

describe('vxlanMtu', () => {
  it.each([
    [1500, 0, 4, 1450],
    [1500, 0, 6, 1430],
    [9001, 0, 4, 8951],
    [1500, 9000, 4, 8950],
    [9000, 1400, 6, 1330],
  ] as const)('underlay %d, config %d, IPv%d underlay -> %d', (underlay, config, family, expected) => {
    expect(vxlanMtu(underlay, config, family)).toBe(expected);
  });

  it('knows the real header overhead per underlay family', () => {
    expect([vxlanOverhead(4), vxlanOverhead(6)]).toEqual([50, 70]);
  });
});
