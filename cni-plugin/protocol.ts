/**
 * The CNI protocol edge (SPEC §2-§5): environment parsing, container-ID validation, version negotiation and the
 * error object. Everything the plugin prints on failure is a CniError, so stdout always carries a spec answer.
 */
export const SUPPORTED_VERSIONS = ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] as const;
export const LATEST_VERSION = '1.1.0';

/** The spec's error codes (SPEC §5 "Error"); 999 is the Go library's "internal". */
export const CniCode = {
  IncompatibleVersion: 1,
  UnsupportedField: 2,
  UnknownContainer: 3,
  InvalidEnv: 4,
  IoFailure: 5,
  DecodeFailure: 6,
  InvalidConfig: 7,
  TryAgainLater: 11,
  NotAvailable: 50,
  LimitedConnectivity: 51,
  Internal: 999,
} as const;

export class CniError extends Error {
  constructor(
    readonly code: number,
    message: string,
    readonly details = '',
  ) {
    super(message);
  }

  toJson(cniVersion: string): string {
    return JSON.stringify({ cniVersion, code: this.code, msg: this.message, ...(this.details ? { details: this.details } : {}) });
  }
}

export type Verb = 'ADD' | 'DEL' | 'CHECK' | 'VERSION' | 'STATUS' | 'GC';
const VERBS: readonly Verb[] = ['ADD', 'DEL', 'CHECK', 'VERSION', 'STATUS', 'GC'];

export interface CniEnv {
  readonly command: Verb;
  readonly containerId: string;
  readonly netns: string;
  readonly ifname: string;
  readonly args: string;
  readonly path: readonly string[];
  /** The CNI_* variables as given, passed on to delegates unchanged. */
  readonly raw: Readonly<Record<string, string>>;
}

/** Spec: starts alphanumeric, then alphanumerics, '_', '.', '-'; so it can never escape a directory. */
const CONTAINER_ID = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;

const REQUIRED: Record<Verb, readonly string[]> = {
  ADD: ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME', 'CNI_PATH'],
  DEL: ['CNI_CONTAINERID', 'CNI_IFNAME', 'CNI_PATH'],
  CHECK: ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME', 'CNI_PATH'],
  VERSION: [],
  STATUS: [],
  GC: ['CNI_PATH'],
};

export function parseCniEnv(env: Readonly<Record<string, string | undefined>>): CniEnv {
  const command = env['CNI_COMMAND'] ?? '';
  if (!(VERBS as readonly string[]).includes(command)) {
    throw new CniError(CniCode.InvalidEnv, `CNI_COMMAND must be one of ${VERBS.join(', ')} (got ${JSON.stringify(command)})`);
  }
  const verb = command as Verb;
  const missing = REQUIRED[verb].filter((key) => !env[key]);
  if (missing.length > 0) throw new CniError(CniCode.InvalidEnv, `required environment variables missing: ${missing.join(', ')}`);
  const containerId = env['CNI_CONTAINERID'] ?? '';
  if (containerId !== '' && !CONTAINER_ID.test(containerId)) {
    throw new CniError(
      CniCode.InvalidEnv,
      `CNI_CONTAINERID ${JSON.stringify(containerId)} is invalid: it must start with a letter or digit and contain only letters, digits, '_', '.' and '-'`,
    );
  }
  const ifname = env['CNI_IFNAME'] ?? '';
  if (ifname !== '' && (ifname.length > 15 || /[/\s:]/.test(ifname) || ifname === '.' || ifname === '..')) {
    throw new CniError(CniCode.InvalidEnv, `CNI_IFNAME ${JSON.stringify(ifname)} is not a valid interface name`);
  }
  const raw: Record<string, string> = {};
  for (const [key, value] of Object.entries(env)) if (key.startsWith('CNI_') && value !== undefined) raw[key] = value;
  return {
    command: verb,
    containerId,
    netns: env['CNI_NETNS'] ?? '',
    ifname,
    args: env['CNI_ARGS'] ?? '',
    path: (env['CNI_PATH'] ?? '').split(':').filter((p) => p !== ''),
    raw,
  };
}

export function isSupportedVersion(version: string): boolean {
  return (SUPPORTED_VERSIONS as readonly string[]).includes(version);
}

/** Negative, zero or positive like a comparator, for dotted versions. */
export function compareVersions(a: string, b: string): number {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < 3; i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}
