/**
 * ADD: render the delegate config, save it (so DEL can undo exactly this), run the delegate, wait for the pod's IPv6
 * gateways to leave DAD (gateway-settle.ts), convert the result.
 */
import type { CniEnv } from '../protocol.js';
import { CniCode, CniError } from '../protocol.js';
import type { FlannelNetConf, JsonObject } from '../netconf.js';
import { delegateTarget } from '../delegate-conf.js';
import { runPlugin } from '../delegate.js';
import { checkDelegate, renderDelegate, stableStringify } from '../render-delegate.js';
import { settleGateways } from '../gateway-settle.js';
import { convertResult } from '../result-convert.js';
import { loadScratch, removeScratch, saveScratch } from '../scratch-store.js';
import { loadSubnetFile } from '../subnet-file.js';

export async function cmdAdd(env: CniEnv, conf: FlannelNetConf): Promise<JsonObject> {
  checkDelegate(conf.delegate);
  const subnets = loadSubnetFile(conf.subnetFile);
  // Validate the whole config before anything touches the host (the version lookup writes its cache).
  const rendered = renderDelegate(conf, subnets, '');
  if (loadScratch(conf.dataDir, env.containerId) !== undefined) {
    // A second ADD must not roll back (DEL) the attachment that already works.
    throw new CniError(CniCode.InvalidConfig, `container ${env.containerId} already has a flannel attachment; DEL it before adding again`);
  }
  const target = delegateTarget(conf, env.path);
  const text = stableStringify({ ...rendered, cniVersion: target.version });
  saveScratch(conf.dataDir, env.containerId, env.ifname, text);
  try {
    const output = delegateAdd(target.path, env, text);
    await settleGateways(output);
    return convertResult(output, conf.cniVersion);
  } catch (err) {
    const cleanup = rollBack(target.path, env, conf.dataDir, text);
    if (cleanup === undefined) throw err;
    // The ADD's own error is what the runtime acts on; the failed cleanup rides along in its details, so an
    // operator learns that an address or a veth may be left until the runtime's own DEL.
    const error = err instanceof CniError ? err : new CniError(CniCode.Internal, errorText(err));
    throw new CniError(error.code, error.message, [error.details, `cleanup after the failed ADD also failed: ${cleanup}`].filter(Boolean).join('; '));
  }
}

/**
 * SPEC §4: a failed ADD is followed by the delegate's DEL, so nothing half-made (an address, a veth) stays.
 * Returns why that failed, or undefined when it worked.
 */
function rollBack(path: string, env: CniEnv, dataDir: string, text: string): string | undefined {
  try {
    runPlugin(path, { ...env.raw, CNI_COMMAND: 'DEL' }, text);
    removeScratch(dataDir, env.containerId);
    return undefined;
  } catch (err) {
    return errorText(err);
  }
}

const errorText = (err: unknown): string => (err instanceof Error ? err.message : String(err));

/** The delegate's ADD result; its errors keep their code and say they came from the delegate. */
function delegateAdd(path: string, env: CniEnv, text: string): JsonObject {
  try {
    const { output } = runPlugin(path, { ...env.raw, CNI_COMMAND: 'ADD' }, text);
    if (!output) throw new CniError(CniCode.Internal, 'the delegate returned no result');
    return output;
  } catch (err) {
    // verbatim upstream: cni-plugin flannel.go, the "failed to delegate add:" prefix
    if (err instanceof CniError) throw new CniError(err.code, `failed to delegate add: ${err.message}`, err.details);
    throw err;
  }
}
