/**
 * GC (CNI 1.1): every saved attachment that the runtime no longer lists as valid is released through the
 * delegate's DEL (Debian's host-local has no GC of its own), then GC goes on to delegates that support it.
 * Keeps going past failures and reports them all at the end.
 */
import { runPlugin } from '../delegate.js';
import { delegateTarget, parseSavedDelegate, savedDelegatePath } from '../delegate-conf.js';
import { isObject, type FlannelNetConf } from '../netconf.js';
import { CniCode, CniError, type CniEnv } from '../protocol.js';
import { renderDelegate, stableStringify } from '../render-delegate.js';
import { listScratch, loadScratch, removeScratch } from '../scratch-store.js';
import { loadSubnetFile } from '../subnet-file.js';

export function cmdGc(env: CniEnv, conf: FlannelNetConf): void {
  // The 1.1.0 tag called the key cni.dev/attachments; later text says cni.dev/valid-attachments. Read both.
  const listed = conf.raw['cni.dev/valid-attachments'] ?? conf.raw['cni.dev/attachments'] ?? [];
  if (!Array.isArray(listed)) throw new CniError(CniCode.InvalidConfig, 'cni.dev/valid-attachments must be a list');
  const valid = new Set(
    listed.filter(isObject).map((a) => `${String(a['containerID'] ?? '')}/${String(a['ifname'] ?? '')}`),
  );
  const failures: string[] = [];
  for (const { containerId, ifname } of listScratch(conf.dataDir)) {
    if (valid.has(`${containerId}/${ifname}`)) continue;
    try {
      const saved = loadScratch(conf.dataDir, containerId) ?? '{}';
      const path = savedDelegatePath(parseSavedDelegate(saved) ?? {}, env.path);
      runPlugin(path, { ...env.raw, CNI_COMMAND: 'DEL', CNI_CONTAINERID: containerId, CNI_IFNAME: ifname, CNI_NETNS: '' }, saved);
      removeScratch(conf.dataDir, containerId);
    } catch (err) {
      failures.push(`${containerId}/${ifname}: ${(err as Error).message}`);
    }
  }
  try {
    const target = delegateTarget(conf, env.path);
    if (target.supports.includes('1.1.0')) {
      const delegateConf = { ...renderDelegate(conf, loadSubnetFile(conf.subnetFile), target.version), 'cni.dev/valid-attachments': listed };
      runPlugin(target.path, { ...env.raw, CNI_COMMAND: 'GC' }, stableStringify(delegateConf));
    }
  } catch (err) {
    failures.push(`delegate GC: ${(err as Error).message}`);
  }
  if (failures.length > 0) throw new CniError(CniCode.IoFailure, `GC could not release ${failures.length} attachment(s): ${failures.join('; ')}`);
}
