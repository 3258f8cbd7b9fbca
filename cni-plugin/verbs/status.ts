/** STATUS (CNI 1.1): ready to serve ADD once subnet.env is complete; delegates that know STATUS are asked too. */
import { runPlugin } from '../delegate.js';
import { delegateTarget } from '../delegate-conf.js';
import type { FlannelNetConf } from '../netconf.js';
import { CniCode, CniError, type CniEnv } from '../protocol.js';
import { renderDelegate, stableStringify } from '../render-delegate.js';
import { loadSubnetFile } from '../subnet-file.js';

export function cmdStatus(env: CniEnv, conf: FlannelNetConf): void {
  let subnets;
  try {
    subnets = loadSubnetFile(conf.subnetFile);
  } catch (err) {
    throw new CniError(CniCode.NotAvailable, `flannel is not ready: ${(err as Error).message}`);
  }
  if (env.path.length === 0) return;
  const target = delegateTarget(conf, env.path);
  if (!target.supports.includes('1.1.0')) return;
  try {
    runPlugin(target.path, { ...env.raw, CNI_COMMAND: 'STATUS' }, stableStringify(renderDelegate(conf, subnets, target.version)));
  } catch (err) {
    if (err instanceof CniError) throw new CniError(err.code, `delegate not ready: ${err.message}`, err.details);
    throw err;
  }
}
