import { describe, expect, it } from 'vitest';
import { DEFAULT_UDP_PORT, parseUdpConfig, type UdpConfig } from '../../../../backends/udp/udp-config.js';
import { thrownConfigError as thrown } from '../../../helpers/thrown-config-error.js';

const parse = (raw: Record<string, unknown>): UdpConfig => parseUdpConfig({ type: 'udp', raw });

describe('parseUdpConfig', () => {
  it("defaults to upstream's port 8285", () => {
    const config = parse({ Type: 'udp' });
    expect(DEFAULT_UDP_PORT).toBe(8285);
    expect(config).toEqual({ port: 8285 });
    expect(Object.isFrozen(config)).toBe(true);
  });

  it.each(['Port', 'port', 'PORT', 'pOrT'])('reads %s, as Go matches keys case-insensitively', (key) => {
    expect(parse({ [key]: 9000 }).port).toBe(9000);
  });

  it('ignores keys it does not know', () => {
    expect(parse({ Port: 9000, VNI: 'nonsense', Whatever: [1] })).toEqual({ port: 9000 });
  });

  // Go leaves a field at its default when the JSON value is null.
  it('treats a null Port as not given', () => {
    expect(parse({ Port: null }).port).toBe(8285);
  });

  it.each([1, 65535])('accepts Port %d', (port) => {
    expect(parse({ Port: port }).port).toBe(port);
  });

  it.each([0, 65536, 1.5, -1, '8285', true, {}])('rejects Port %j, naming Backend.Port and the value', (value) => {
    const err = thrown(() => parse({ Port: value }));
    expect(err.key).toBe('Backend.Port');
    expect(err.value).toEqual(value);
    expect(err.code).toBe('ERR_CONFIG_INVALID');
    expect(err.message).toContain('Backend.Port');
    expect(err.message).toContain(`(got ${JSON.stringify(value)})`);
  });
});
