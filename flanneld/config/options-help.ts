/**
 * The --help text, rendered from the option table so it cannot drift from what the parser accepts. One line per
 * option, Go's PrintDefaults order of facts (name, value type, description, default), plus the activation mark.
 */
import { NOT_YET_ACTIVE, OPTION_SPECS, type OptionSpec } from './option-specs.js';

export const NOT_YET_ACTIVE_MARK = '(not yet active)';

export function renderHelp(): string {
  const rows: [string, string][] = OPTION_SPECS.map((spec) => {
    const mark = NOT_YET_ACTIVE.includes(spec.flag) ? ` ${NOT_YET_ACTIVE_MARK}` : '';
    return [`--${spec.flag}${typeHint(spec)}`, `${spec.doc} (default ${formatDefault(spec)})${mark}`];
  });
  rows.push(['--help', 'print this message and exit']);
  const width = Math.max(...rows.map(([left]) => left.length)) + 2;
  return [
    'Usage: flanneld [OPTION]...',
    '',
    'Options take one or two dashes (-iface or --iface). A value follows "=" or comes as the next argument;',
    'booleans take only the "=" form (--ip-masq=false). Any option not given on the command line is read from',
    'FLANNELD_<NAME> (upper case, "-" as "_"), e.g. FLANNELD_ETCD_ENDPOINTS; FLANNELD_IFACE may hold a comma list.',
    '',
    ...rows.map(([left, right]) => `  ${left.padEnd(width)}${right}`),
    '',
  ].join('\n');
}

function typeHint(spec: OptionSpec): string {
  switch (spec.type) {
    case 'bool':
      return '';
    case 'int':
      return ' int';
    case 'string':
      return ' string';
    case 'list':
      return ' value (repeatable)';
  }
}

function formatDefault(spec: OptionSpec): string {
  switch (spec.type) {
    case 'string':
      return JSON.stringify(spec.default);
    case 'list':
      return spec.default.length === 0 ? 'none' : spec.default.join(',');
    default:
      return String(spec.default);
  }
}
