/**
 * DEL: undo ADD with the saved delegate config; without one (wiped data dir, ADD that died mid-way), rebuild it
 * from stdin plus subnet.env, or from prevResult, and still run the delegate's DEL so host-local frees the
 * address (upstream returns at once and leaks it). The saved config is removed only after the delegate
 * succeeded, so a failed DEL can be retried.
 */
import { parseCidr, type IpNet } from '../../flanneld/ip/cidr.js';
import { runPlugin } from '../delegate.js';
import { delegateTarget, parseSavedDelegate, savedDelegatePath } from '../delegate-conf.js';
import { isObject, type FlannelNetConf } from '../netconf.js';
import { CniError, type CniEnv } from '../protocol.js';
import { renderDelegate, stableStringify } from '../render-delegate.js';
import { loadScratch, removeScratch } from '../scratch-store.js';
import { loadSubnetFile, type FlannelSubnetEnv } from '../subnet-file.js';

export function cmdDel(env: CniEnv, conf: FlannelNetConf): void {
  const saved = loadScratch(conf.dataDir, env.containerId);
  const savedConf = saved !== undefined ? parseSavedDelegate(saved) : undefined;
  let text: string;
  let pluginPath: string;
  if (savedConf) {
    text = saved as string;
    pluginPath = savedDelegatePath(savedConf, env.path);
  } else {
    const subnets = rebuildSubnets(conf);
    if (!subnets) {
      // Nothing tells us what ADD made: nothing is left to undo as far as anyone can know.
      removeScratch(conf.dataDir, env.containerId);
      return;
    }
    const target = delegateTarget(conf, env.path);
    text = stableStringify(renderDelegate(conf, subnets, target.version));
    pluginPath = target.path;
  }
  try {
    runPlugin(pluginPath, { ...env.raw, CNI_COMMAND: 'DEL' }, text);
  } catch (err) {
    if (err instanceof CniError) throw new CniError(err.code, `failed to delegate del: ${err.message}`, err.details);
    throw err;
  }
  removeScratch(conf.dataDir, env.containerId);
}


/** subnet.env when it is there; else the subnets of the addresses in prevResult; else nothing. */
function rebuildSubnets(conf: FlannelNetConf): FlannelSubnetEnv | undefined {
  try {
    return loadSubnetFile(conf.subnetFile);
  } catch {
    const ips = conf.prevResult?.['ips'];
    if (!Array.isArray(ips)) return undefined;
    const nets = ips
      .map((ip) => (isObject(ip) && typeof ip['address'] === 'string' ? parseCidr(ip['address']) : undefined))
      .filter((n): n is IpNet => n !== undefined);
    const v4 = nets.find((n) => n.family === 4);
    const v6 = nets.find((n) => n.family === 6);
    if (!v4 && !v6) return undefined;
    // ipMasq true renders the delegate without ipMasq: with nothing saved we cannot know whether bridge made a
    // masquerade rule, and asking it to remove one that never existed fails every retry.
    return { networks: [], ipv6Networks: [], ...(v4 ? { subnet: v4 } : {}), ...(v6 ? { ipv6Subnet: v6 } : {}), mtu: 1500, ipMasq: true };
  }
}
