/**
 * Reading a Backend block's keys as upstream's Go does (encoding/json): names match case-insensitively, unknown
 * keys are ignored, null means "not given". Values out of range are refused with the key and value named.
 */
import type { BackendConfig } from '../flanneld/config/network-config-types.js';
import { ConfigError } from '../flanneld/runtime/errors.js';

export interface IntKey {
  readonly name: string;
  readonly min: number;
  readonly max: number;
  /** Extra value allowed outside [min, max] (MTU 0 = "derive from the underlay"). */
  readonly sentinel?: number;
}

/** The block's keys, lower-cased. */
export function backendFields(backend: BackendConfig): ReadonlyMap<string, unknown> {
  // Go applies keys in document order, so with two spellings of one key the later one wins; Map.set does the same.
  const fields = new Map<string, unknown>();
  for (const [key, value] of Object.entries(backend.raw)) fields.set(key.toLowerCase(), value);
  return fields;
}

// Go leaves a field at its default when the JSON value is null, so null reads as "not given".
function given(fields: ReadonlyMap<string, unknown>, name: string): unknown {
  const value = fields.get(name.toLowerCase());
  return value === null ? undefined : value;
}

export function intField(fields: ReadonlyMap<string, unknown>, key: IntKey, fallback: number): number {
  const value = given(fields, key.name);
  if (value === undefined) return fallback;
  const range = `${key.sentinel !== undefined ? `${key.sentinel} or ` : ''}${key.min}..${key.max}`;
  if (typeof value !== 'number' || !Number.isInteger(value)) {
    throw new ConfigError(`Backend.${key.name}`, value, `must be an integer (${range})`);
  }
  if (value !== key.sentinel && (value < key.min || value > key.max)) {
    throw new ConfigError(`Backend.${key.name}`, value, `must be in ${range}`);
  }
  return value;
}

export function boolField(fields: ReadonlyMap<string, unknown>, name: string): boolean {
  const value = given(fields, name);
  if (value === undefined) return false;
  if (typeof value !== 'boolean') throw new ConfigError(`Backend.${name}`, value, 'must be true or false');
  return value;
}
