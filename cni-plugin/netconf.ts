/**
 * The flannel network config from stdin (cni-plugin: flannel.go NetConf): the standard keys plus subnetFile,
 * dataDir, delegate, ipam and runtimeConfig. Parsed once, with errors that name the key.
 */
import { CniCode, CniError, isSupportedVersion, SUPPORTED_VERSIONS } from './protocol.js';

export const DEFAULT_SUBNET_FILE = '/run/flannel/subnet.env';
export const DEFAULT_DATA_DIR = '/var/lib/cni/flannel';

export type JsonObject = Record<string, unknown>;

export interface FlannelNetConf {
  readonly cniVersion: string;
  readonly name: string;
  readonly subnetFile: string;
  readonly dataDir: string;
  readonly delegate?: JsonObject;
  readonly ipam?: JsonObject;
  readonly runtimeConfig?: JsonObject;
  readonly prevResult?: JsonObject;
  /** The whole document as given (GC reads its reserved cni.dev/ keys). */
  readonly raw: JsonObject;
}

export function isObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export function parseNetConf(text: string, needVersion = true): FlannelNetConf {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    // verbatim upstream: cni-plugin flannel.go, the "failed to load netconf:" prefix
    throw new CniError(CniCode.DecodeFailure, `failed to load netconf: ${(err as Error).message}`);
  }
  // verbatim upstream: cni-plugin flannel.go, the "failed to load netconf:" prefix
  if (!isObject(doc)) throw new CniError(CniCode.DecodeFailure, 'failed to load netconf: the config is not a JSON object');
  const str = (key: string, fallback: string): string => {
    const v = doc[key];
    if (v === undefined || v === null || v === '') return fallback;
    // verbatim upstream: cni-plugin flannel.go, the "failed to load netconf:" prefix
    if (typeof v !== 'string') throw new CniError(CniCode.InvalidConfig, `failed to load netconf: ${key} must be a string (got ${JSON.stringify(v)})`);
    return v;
  };
  const obj = (key: string): JsonObject | undefined => {
    const v = doc[key];
    if (v === undefined || v === null) return undefined;
    // verbatim upstream: cni-plugin flannel.go, the "failed to load netconf:" prefix
    if (!isObject(v)) throw new CniError(CniCode.InvalidConfig, `failed to load netconf: ${key} must be an object (got ${JSON.stringify(v)})`);
    return v;
  };
  const cniVersion = str('cniVersion', '');
  if (needVersion && !isSupportedVersion(cniVersion)) {
    throw new CniError(
      CniCode.IncompatibleVersion,
      `incompatible CNI versions: config is ${JSON.stringify(cniVersion)}, plugin supports ${SUPPORTED_VERSIONS.join(', ')}`,
    );
  }
  const delegate = obj('delegate');
  const ipam = obj('ipam');
  const runtimeConfig = obj('runtimeConfig');
  const prevResult = obj('prevResult');
  return {
    cniVersion,
    name: str('name', ''),
    subnetFile: str('subnetFile', DEFAULT_SUBNET_FILE),
    dataDir: str('dataDir', DEFAULT_DATA_DIR),
    ...(delegate ? { delegate } : {}),
    ...(ipam ? { ipam } : {}),
    ...(runtimeConfig ? { runtimeConfig } : {}),
    ...(prevResult ? { prevResult } : {}),
    raw: doc,
  };
}
