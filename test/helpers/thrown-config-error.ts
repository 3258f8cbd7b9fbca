/** Runs `fn`, which must throw a ConfigError (or any FlannelError), and returns it for assertions on its fields. */
import { expect } from 'vitest';
import { ConfigError, FlannelError } from '../../flanneld/runtime/errors.js';

function thrownOf<T extends Error>(fn: () => unknown, type: abstract new (...args: never[]) => T): T {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(type);
    return err as T;
  }
  throw new Error(`expected a ${type.name}`);
}

export const thrownConfigError = (fn: () => unknown): ConfigError => thrownOf(fn, ConfigError);
export const thrownFlannelError = (fn: () => unknown): FlannelError => thrownOf(fn, FlannelError);
