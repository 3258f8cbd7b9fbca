/** Stable codes so callers branch on `code`, never on message text. */
export type ErrorCode =
  | 'ERR_CONFIG_INVALID'
  | 'ERR_CONFIG_NOT_FOUND'
  | 'ERR_NO_FREE_SUBNET'
  | 'ERR_LEASE_LOST'
  | 'ERR_SUBNET_CONFLICT'
  | 'ERR_STORE_UNAVAILABLE'
  /** No usable external interface, or the one named cannot be used. */
  | 'ERR_INTERFACE'
  /** The interface lacks an address of the family the network needs. */
  | 'ERR_NO_ADDRESS'
  /** A device of ours (flannel.1, flannel0) cannot be made, is not what we made, or lost what we gave it. */
  | 'ERR_DEVICE'
  /** A lease value in the store does not parse. */
  | 'ERR_LEASE_INVALID'
  /** A Node object lacks what flannel needs from it (podCIDRs, annotations). */
  | 'ERR_NODE_INVALID'
  /** A BGP peer cannot be reached, or broke the protocol. */
  | 'ERR_BGP_PEER'
  | 'ERR_EXEC'
  | 'ERR_IO';

export class FlannelError extends Error {
  override readonly name: string = 'FlannelError';
  constructor(
    readonly code: ErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** A bad input value; the message always names the key and the offending value. */
export class ConfigError extends FlannelError {
  override readonly name = 'ConfigError';
  constructor(
    readonly key: string,
    readonly value: unknown,
    reason: string,
    options?: { cause?: unknown },
  ) {
    super('ERR_CONFIG_INVALID', `${key}: ${reason} (got ${describeValue(value)})`, options);
  }
}

export class NoFreeSubnetError extends FlannelError {
  override readonly name = 'NoFreeSubnetError';
  constructor(message: string) {
    super('ERR_NO_FREE_SUBNET', message);
  }
}

export class LeaseLostError extends FlannelError {
  override readonly name = 'LeaseLostError';
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_LEASE_LOST', message, options);
  }
}

export function describeValue(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (typeof value === 'string') return JSON.stringify(value);
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
