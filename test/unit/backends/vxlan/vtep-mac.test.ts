import { describe, expect, it } from 'vitest';
import { encodeLeaseAttrs } from '../../../../flanneld/lease/lease.js';
import { seededRandom, type Random } from '../../../../flanneld/runtime/random.js';
import {
  decodeVxlanBackendData,
  encodeVxlanBackendData,
  normalizeMac,
  randomVtepMac,
} from '../../../../backends/vxlan/vtep-mac.js';

const constant = (n: number): Random => ({ int: () => n });

describe('randomVtepMac', () => {
  it('sets the locally administered bit and clears the multicast bit', () => {
    expect(randomVtepMac(constant(0xff))).toBe('fe:ff:ff:ff:ff:ff');
    expect(randomVtepMac(constant(0x00))).toBe('02:00:00:00:00:00');
    expect(randomVtepMac(constant(0x01))).toBe('02:01:01:01:01:01');
  });

  it('is repeatable with a seeded generator and always well-formed', () => {
    const a = seededRandom(7);
    const b = seededRandom(7);
    for (let i = 0; i < 200; i++) {
      const mac = randomVtepMac(a);
      expect(mac).toBe(randomVtepMac(b));
      expect(normalizeMac(mac)).toBe(mac);
      const first = parseInt(mac.slice(0, 2), 16);
      expect(first & 0x03).toBe(0x02);
    }
  });

  it('draws each octet from the injected source', () => {
    const draws: number[] = [];
    const seq = [0x0f, 0x2a, 0x00, 0x10, 0xab, 0xcd];
    const random: Random = {
      int: (n) => {
        draws.push(n);
        return seq[draws.length - 1] ?? 0;
      },
    };
    expect(randomVtepMac(random)).toBe('0e:2a:00:10:ab:cd');
    expect(draws).toEqual([256, 256, 256, 256, 256, 256]);
  });
});

describe('normalizeMac', () => {
  it.each([
    ['0e:2a:00:00:00:01', '0e:2a:00:00:00:01'],
    ['0E:2A:00:00:00:01', '0e:2a:00:00:00:01'],
    ['0e-2a-00-00-00-01', '0e:2a:00:00:00:01'],
    ['C6-D2-32-6F-8F-44', 'c6:d2:32:6f:8f:44'],
  ])('%s -> %s', (text, mac) => {
    expect(normalizeMac(text)).toBe(mac);
  });

  it.each([
    '',
    '0e:2a:00:00:00',
    '0e:2a:00:00:00:01:02',
    '0e:2a-00:00:00:01',
    '0e2a.0000.0001',
    'e:2a:00:00:00:01',
    '0g:2a:00:00:00:01',
    ' 0e:2a:00:00:00:01',
    '00:00:00:00:00:00:00:00',
  ])('rejects %j', (text) => {
    expect(normalizeMac(text)).toBeUndefined();
  });
});

describe('VXLAN BackendData', () => {
  it('encodes upstream\'s exact shape and bytes inside a lease', () => {
    const data = encodeVxlanBackendData(1, 'c6:d2:32:6f:8f:44');
    expect(data).toEqual({ VNI: 1, VtepMAC: 'c6:d2:32:6f:8f:44' });
    expect(Object.keys(data)).toEqual(['VNI', 'VtepMAC']);
    expect(encodeLeaseAttrs({ backendType: 'vxlan', backendData: data })).toBe(
      '{"PublicIP":"0.0.0.0","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}',
    );
  });

  it('truncates a VNI past 16 bits as upstream\'s uint16 does, so upstream peers can decode it', () => {
    expect(encodeVxlanBackendData(70000, '02:00:00:00:00:01').VNI).toBe(70000 - 65536);
    expect(encodeVxlanBackendData(65535, '02:00:00:00:00:01').VNI).toBe(65535);
  });

  it.each([
    [{ VNI: 1, VtepMAC: 'c6:d2:32:6f:8f:44' }, { vni: 1, mac: 'c6:d2:32:6f:8f:44' }],
    [{ vni: 4096, vtepmac: 'C6-D2-32-6F-8F-44' }, { vni: 4096, mac: 'c6:d2:32:6f:8f:44' }],
    [{ VtepMAC: '0e:2a:00:00:00:01' }, { vni: 0, mac: '0e:2a:00:00:00:01' }],
    [{ VNI: null, VtepMAC: '0e:2a:00:00:00:01', Extra: true }, { vni: 0, mac: '0e:2a:00:00:00:01' }],
    [{ VNI: 1, VTEPMAC: 'zz', vtepMac: '0e:2a:00:00:00:02' }, { vni: 1, mac: '0e:2a:00:00:00:02' }],
  ])('decodes %j', (data, expected) => {
    expect(decodeVxlanBackendData(data)).toEqual(expected);
  });

  it.each([
    undefined,
    null,
    'c6:d2:32:6f:8f:44',
    [],
    {},
    { VNI: 1 },
    { VNI: 1, VtepMAC: null },
    { VNI: 1, VtepMAC: 12 },
    { VNI: 1, VtepMAC: 'not-a-mac' },
    { VNI: '1', VtepMAC: 'c6:d2:32:6f:8f:44' },
    { VNI: -1, VtepMAC: 'c6:d2:32:6f:8f:44' },
    { VNI: 1.5, VtepMAC: 'c6:d2:32:6f:8f:44' },
    { VNI: 16777216, VtepMAC: 'c6:d2:32:6f:8f:44' },
  ])('rejects %j', (data) => {
    expect(decodeVxlanBackendData(data)).toBeUndefined();
  });

  it('round-trips what it encodes', () => {
    expect(decodeVxlanBackendData(encodeVxlanBackendData(7, '0e:2a:00:00:00:01'))).toEqual({ vni: 7, mac: '0e:2a:00:00:00:01' });
  });
});
