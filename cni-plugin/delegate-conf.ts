/** The delegate's binary and the spec version to speak with it, shared by every verb. */
import { findPlugin, delegateVersions } from './delegate.js';
import { isObject, type FlannelNetConf, type JsonObject } from './netconf.js';
import { CniCode, CniError, compareVersions } from './protocol.js';
import { delegateType } from './render-delegate.js';

export interface DelegateTarget {
  readonly path: string;
  /** The version the delegate is spoken to in: ours when it supports it, else its highest below ours. */
  readonly version: string;
  readonly supports: readonly string[];
}

export function delegateTarget(conf: FlannelNetConf, cniPath: readonly string[], type = delegateType(conf)): DelegateTarget {
  const path = findPlugin(type, cniPath);
  const supports = delegateVersions(path, conf.dataDir);
  if (supports.includes(conf.cniVersion)) return { path, version: conf.cniVersion, supports };
  const below = supports.filter((v) => compareVersions(v, conf.cniVersion) <= 0).sort(compareVersions);
  const version = below.at(-1);
  if (!version) {
    throw new CniError(
      CniCode.IncompatibleVersion,
      `delegate ${type} supports ${supports.join(', ') || 'no version we know'}, none at or below ${conf.cniVersion}`,
    );
  }
  return { path, version, supports };
}

/** A saved delegate config (dataDir/<containerID>), or undefined when it is not a JSON object. */
export function parseSavedDelegate(text: string): JsonObject | undefined {
  try {
    const doc: unknown = JSON.parse(text);
    return isObject(doc) ? doc : undefined;
  } catch {
    return undefined;
  }
}

/** The plugin a saved delegate config names (bridge when it names none). */
export function savedDelegatePath(saved: JsonObject, cniPath: readonly string[]): string {
  return findPlugin(typeof saved['type'] === 'string' ? saved['type'] : 'bridge', cniPath);
}
