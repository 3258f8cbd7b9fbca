/**
 * The convict side of the options: the option table becomes a convict schema (defaults, docs, formats), the values
 * given on the command line or in the environment are loaded over it, and convict validates the result. Formats
 * are closures over this call, so nothing is registered globally with convict.addFormat.
 */
import convict from 'convict';
import { ConfigError, errorMessage } from '../runtime/errors.js';
import { OPTION_SPECS, keyOf, reasonFor, type OptionSpec, type OptionValue } from './option-specs.js';

/** A value from the command line or the environment; `label` is "--flag" or "FLANNELD_FLAG", `text` as typed. */
export interface Given {
  readonly value: OptionValue;
  readonly label: string;
  readonly text: string | undefined;
}

/**
 * Loads the given values over the schema defaults and runs convict's validation. Convict reports failures only as
 * joined text, so each format check also records its spec and value here and the first one becomes the error.
 * Returns the merged values, or the error message.
 */
export function validateOptions(given: ReadonlyMap<OptionSpec, Given>): Readonly<Record<string, unknown>> | string {
  const problems: { spec: OptionSpec; value: unknown }[] = [];
  const schema: Record<string, convict.SchemaObj> = {};
  for (const spec of OPTION_SPECS) {
    schema[keyOf(spec.flag)] = {
      default: spec.type === 'list' ? [...spec.default] : spec.default,
      doc: spec.doc,
      sensitive: spec.sensitive === true,
      format: (value: unknown): void => {
        const bad = invalidPart(spec, value);
        if (bad === undefined) return;
        problems.push({ spec, value: bad.value });
        throw new Error(reasonFor(spec));
      },
    };
  }
  // Explicit empty env and args: otherwise convict falls back to process.env and process.argv.
  const conf = convict<Record<string, unknown>>(schema, { env: {}, args: [] });
  conf.load(Object.fromEntries([...given].map(([spec, g]) => [keyOf(spec.flag), g.value])));
  try {
    conf.validate({ allowed: 'strict', output: () => undefined });
  } catch (err) {
    const first = problems[0];
    if (!first) return errorMessage(err);
    const source = given.get(first.spec);
    // Report scalars as typed ("0x10", not 16); a list's offending entry is already its own text.
    const shown = first.spec.type === 'list' || source?.text === undefined ? first.value : source.text;
    return new ConfigError(source?.label ?? `--${first.spec.flag}`, shown, reasonFor(first.spec)).message;
  }
  return conf.getProperties();
}

/** The offending value (a list's bad entry, or the whole value), or undefined when `value` is acceptable. */
function invalidPart(spec: OptionSpec, value: unknown): { value: unknown } | undefined {
  switch (spec.type) {
    case 'string':
      return typeof value === 'string' && (spec.valid?.(value) ?? true) ? undefined : { value };
    case 'int':
      return typeof value === 'number' && Number.isSafeInteger(value) && (spec.valid?.(value) ?? true)
        ? undefined
        : { value };
    case 'bool':
      return typeof value === 'boolean' ? undefined : { value };
    case 'list': {
      if (!Array.isArray(value)) return { value };
      const entries: readonly unknown[] = value;
      const bad = entries.find((e) => typeof e !== 'string' || !(spec.valid?.(e) ?? true));
      return bad === undefined ? undefined : { value: bad };
    }
  }
}

