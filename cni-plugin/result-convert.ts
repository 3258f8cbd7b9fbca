/**
 * Results between spec versions (SPEC §5): 0.3.x and 0.4.0 tag each IP with "version": "4"/"6"; 1.x drops it.
 * Delegates answer in the version we asked them for, the runtime wants its own; everything else is shared.
 */
import { compareVersions } from './protocol.js';
import { isObject, type JsonObject } from './netconf.js';

export function convertResult(result: JsonObject, toVersion: string): JsonObject {
  const out: JsonObject = { ...result, cniVersion: toVersion };
  const legacy = compareVersions(toVersion, '1.0.0') < 0;
  if (Array.isArray(result['ips'])) {
    out['ips'] = (result['ips'] as unknown[]).map((ip) => {
      if (!isObject(ip)) return ip;
      const { version: _version, ...rest } = ip;
      if (!legacy) return rest;
      const address = typeof ip['address'] === 'string' ? ip['address'] : '';
      return { ...rest, version: address.includes(':') ? '6' : '4' };
    });
  }
  return out;
}
