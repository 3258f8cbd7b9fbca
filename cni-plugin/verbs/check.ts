/**
 * CHECK (upstream stubs it): subnet.env must be there, every address in prevResult must lie in this node's
 * current subnet, and the delegate's own CHECK must pass. Debian's bridge compares route gateways literally while
 * host-local's routes carry none, so the prevResult handed to it gets the gateway bridge actually installed.
 */
import { containsIp, formatCidr, parseCidr } from '../../flanneld/ip/cidr.js';
import { parseIp } from '../../flanneld/ip/address.js';
import { runPlugin } from '../delegate.js';
import { parseSavedDelegate, savedDelegatePath } from '../delegate-conf.js';
import { isObject, type FlannelNetConf, type JsonObject } from '../netconf.js';
import { CniCode, CniError, compareVersions, type CniEnv } from '../protocol.js';
import { convertResult } from '../result-convert.js';
import { stableStringify } from '../render-delegate.js';
import { loadScratch } from '../scratch-store.js';
import { loadSubnetFile } from '../subnet-file.js';

export function cmdCheck(env: CniEnv, conf: FlannelNetConf): void {
  if (compareVersions(conf.cniVersion, '0.4.0') < 0) {
    throw new CniError(CniCode.IncompatibleVersion, `CHECK needs cniVersion 0.4.0 or later (got ${conf.cniVersion})`);
  }
  const subnets = loadSubnetFile(conf.subnetFile);
  const prev = conf.prevResult;
  if (!prev) throw new CniError(CniCode.InvalidConfig, 'CHECK needs prevResult (the result of ADD)');
  const ips = Array.isArray(prev['ips']) ? (prev['ips'] as unknown[]).filter(isObject) : [];
  for (const ip of ips) {
    const address = typeof ip['address'] === 'string' ? ip['address'] : '';
    const net = parseCidr(address);
    const addr = parseIp(address.split('/')[0] ?? '');
    const own = [subnets.subnet, subnets.ipv6Subnet].filter((n) => n !== undefined);
    if (!net || !addr || !own.some((n) => containsIp(n, addr))) {
      const names = own.map(formatCidr).join(', ') || '(subnet.env names none)';
      throw new CniError(CniCode.InvalidConfig, `pod address ${address} is outside this node's subnet ${names}`);
    }
  }
  const saved = loadScratch(conf.dataDir, env.containerId);
  if (saved === undefined) throw new CniError(CniCode.UnknownContainer, `no saved flannel config for container ${env.containerId}`);
  const delegateConf = parseSavedDelegate(saved);
  if (!delegateConf) throw new CniError(CniCode.DecodeFailure, `saved flannel config for container ${env.containerId} is not a JSON object`);
  const version = typeof delegateConf['cniVersion'] === 'string' ? delegateConf['cniVersion'] : conf.cniVersion;
  const pluginPath = savedDelegatePath(delegateConf, env.path);
  const withPrev = { ...delegateConf, prevResult: convertResult(withRouteGateways(prev), version) };
  try {
    runPlugin(pluginPath, { ...env.raw, CNI_COMMAND: 'CHECK' }, stableStringify(withPrev));
  } catch (err) {
    if (err instanceof CniError) throw new CniError(err.code, `failed to delegate check: ${err.message}`, err.details);
    throw err;
  }
}

/** Routes without "gw" get the gateway of an address of their family: that is what bridge installed. */
function withRouteGateways(result: JsonObject): JsonObject {
  const ips = Array.isArray(result['ips']) ? (result['ips'] as unknown[]).filter(isObject) : [];
  const gateway = (v6: boolean): string | undefined =>
    ips.map((ip) => ip['gateway']).find((g): g is string => typeof g === 'string' && g.includes(':') === v6);
  if (!Array.isArray(result['routes'])) return result;
  const routes = (result['routes'] as unknown[]).map((r) => {
    if (!isObject(r) || typeof r['gw'] === 'string' || typeof r['dst'] !== 'string') return r;
    const gw = gateway(r['dst'].includes(':'));
    return gw ? { ...r, gw } : r;
  });
  return { ...result, routes };
}
