/**
 * Go's standard `flag` package rules, which upstream flanneld users and manifests rely on: `-x` and `--x` are the
 * same, non-boolean flags take `--x=v` or `--x v` (even when v starts with a dash), a bare boolean never consumes
 * the next argument, and parsing stops at the first non-flag. Value parsers mirror strconv, so a value accepted by
 * upstream is accepted here and vice versa.
 */

/** A boolean flag is complete on its own; any other flag needs a value. */
export type FlagShape = 'bool' | 'value';

export interface RawFlag {
  /** Flag name without dashes, e.g. "iface". */
  readonly name: string;
  /** The text after `=` or the following argument; undefined for a bare boolean (`--ip-masq`). */
  readonly value: string | undefined;
}

/** Why scanning stopped before the end of argv, if it did. */
export type ArgvStop = { readonly kind: 'help' } | { readonly kind: 'error'; readonly message: string };

export interface ArgvScan {
  /** Flags in command-line order, up to the point where scanning stopped. */
  readonly flags: readonly RawFlag[];
  readonly stop: ArgvStop | undefined;
}

/**
 * Splits argv into flags the way Go's FlagSet.Parse does. Values are not interpreted here; the caller sets them in
 * order, so that (as in Go) a bad value reported earlier on the line wins over a later unknown flag.
 * `-help` and `-h` request help, as Go does for a FlagSet that does not define them. Positional arguments, which
 * Go would leave in Args() and flanneld would silently ignore, are an error.
 */
export function scanGoFlags(argv: readonly string[], shapeOf: (name: string) => FlagShape | undefined): ArgvScan {
  const flags: RawFlag[] = [];
  const stop = (s: ArgvStop): ArgvScan => ({ flags, stop: s });
  const fail = (message: string): ArgvScan => stop({ kind: 'error', message });
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (arg === '--') {
      const rest = argv[i + 1];
      return rest === undefined ? { flags, stop: undefined } : fail(unexpected(rest));
    }
    if (arg.length < 2 || !arg.startsWith('-')) return fail(unexpected(arg));
    const dashes = arg.startsWith('--') ? 2 : 1;
    let name = arg.slice(dashes);
    if (name === '' || name.startsWith('-') || name.startsWith('=')) return fail(`bad flag syntax: ${arg}`);
    let value: string | undefined;
    const eq = name.indexOf('=');
    if (eq > 0) {
      value = name.slice(eq + 1);
      name = name.slice(0, eq);
    }
    const shape = shapeOf(name);
    if (shape === undefined) {
      if (name === 'help' || name === 'h') return stop({ kind: 'help' });
      return fail(`flag provided but not defined: ${arg.slice(0, dashes)}${name}`);
    }
    if (shape === 'value' && value === undefined) {
      const next = argv[i + 1];
      if (next === undefined) return fail(`flag needs an argument: --${name}`);
      value = next;
      i++;
    }
    flags.push({ name, value });
  }
  return { flags, stop: undefined };
}

function unexpected(arg: string): string {
  return `unexpected argument ${JSON.stringify(arg)}: flanneld takes only options`;
}

const GO_TRUE: readonly string[] = Object.freeze(['1', 't', 'T', 'TRUE', 'true', 'True']);
const GO_FALSE: readonly string[] = Object.freeze(['0', 'f', 'F', 'FALSE', 'false', 'False']);

/** strconv.ParseBool: exactly these spellings, nothing else ("yes" and "on" are errors). */
export function parseGoBool(text: string): boolean | undefined {
  if (GO_TRUE.includes(text)) return true;
  if (GO_FALSE.includes(text)) return false;
  return undefined;
}

// strconv.ParseInt(s, 0, 64) as flag.IntVar uses it: optional sign, 0x/0o/0b prefixes, a leading 0 means
// octal, and single underscores may separate digits (or follow a prefix).
const GO_INT = /^([+-]?)(0[xX](?:_?[0-9a-fA-F])+|0[bB](?:_?[01])+|0[oO](?:_?[0-7])+|0(?:_?[0-7])+|[1-9](?:_?\d)*|0)$/;

/** strconv.ParseInt with base 0; undefined when malformed or beyond what a JS number holds exactly. */
export function parseGoInt(text: string): number | undefined {
  const m = GO_INT.exec(text);
  if (!m) return undefined;
  let digits = (m[2] as string).replaceAll('_', '');
  if (/^0[0-7]/.test(digits)) digits = `0o${digits.slice(1)}`;
  const magnitude = BigInt(digits);
  const value = m[1] === '-' ? -magnitude : magnitude;
  if (value > BigInt(Number.MAX_SAFE_INTEGER) || value < BigInt(Number.MIN_SAFE_INTEGER)) return undefined;
  return Number(value);
}
