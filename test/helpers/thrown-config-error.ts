/** Runs `fn`, which must throw a ConfigError, and returns it for assertions on its key, value and message. */
import { expect } from 'vitest';
import { ConfigError } from '../../flanneld/runtime/errors.js';

export function thrownConfigError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error('expected a ConfigError');
}
