import { afterEach, describe, expect, it, vi } from 'vitest';
import { ipAddress, parseIp } from '../../../flanneld/ip/address.js';
import { parseCidr } from '../../../flanneld/ip/cidr.js';
import { parseGoBool, parseGoInt } from '../../../flanneld/config/argv.js';
import { NOT_YET_ACTIVE_MARK } from '../../../flanneld/config/options-help.js';
import { NOT_YET_ACTIVE, OPTION_SPECS, compileIfaceRegex } from '../../../flanneld/config/option-specs.js';
import { loadOptions, type FlanneldOptions, type LoadResult } from '../../../flanneld/config/options.js';

type Env = Record<string, string | undefined>;

function run(argv: readonly string[], env: Env = {}): { options: FlanneldOptions; warnings: readonly string[] } {
  const r = loadOptions(argv, env);
  if (r.kind !== 'run') throw new Error(`expected run, got ${JSON.stringify(r).slice(0, 300)}`);
  return r;
}

function failure(argv: readonly string[], env: Env = {}): string {
  const r = loadOptions(argv, env);
  if (r.kind !== 'error') throw new Error(`expected error, got ${r.kind}`);
  expect(r.usage).toContain('Usage: flanneld');
  return r.message;
}

function helpText(): string {
  const r = loadOptions(['--help'], {});
  if (r.kind !== 'help') throw new Error('expected help');
  return r.text;
}

const ip = (text: string) => parseIp(text);
const net = (text: string) => parseCidr(text);

const DEFAULTS: FlanneldOptions = {
  etcdEndpoints: ['http://127.0.0.1:4001', 'http://127.0.0.1:2379'],
  etcdPrefix: '/coreos.com/network',
  etcdKeyfile: '',
  etcdCertfile: '',
  etcdCafile: '',
  etcdUsername: '',
  etcdPassword: '',
  iface: [],
  ifaceRegex: [],
  ifaceCanReach: undefined,
  subnetFile: '/run/flannel/subnet.env',
  publicIp: undefined,
  publicIpv6: undefined,
  subnetLeaseRenewMargin: 60,
  ipMasq: false,
  ipMasqFullyRandomDisable: false,
  kubeSubnetMgr: false,
  kubeApiUrl: '',
  kubeAnnotationPrefix: 'flannel.alpha.coreos.com',
  kubeconfigFile: '',
  healthzIp: ipAddress(4, 0n),
  healthzPort: 0,
  metricsAllowFrom: [],
  ipMasqExclude: [],
  iptablesResync: 5,
  iptablesForwardRules: true,
  ipBlackholeRoute: false,
  netConfigPath: '/etc/kube-flannel/net-conf.json',
  setNodeNetworkUnavailable: true,
  v: 0,
  vmodule: '',
  logBacktraceAt: '',
  datapathResync: 60,
  peerProbeInterval: 30,
  wireguardImplementation: 'auto',
  bgpPeers: [],
  bgpAs: 0,
  bgpGracefulRestartTime: 120,
};

// One valid non-default value per option: [flag, text, field, parsed]. Used for both --flag=text and FLANNELD_*.
const SAMPLES: readonly [string, string, keyof FlanneldOptions, unknown][] = [
  ['etcd-endpoints', 'https://a:2379,https://b:2379', 'etcdEndpoints', ['https://a:2379', 'https://b:2379']],
  ['etcd-prefix', '/lab/network', 'etcdPrefix', '/lab/network'],
  ['etcd-keyfile', '/k.pem', 'etcdKeyfile', '/k.pem'],
  ['etcd-certfile', '/c.pem', 'etcdCertfile', '/c.pem'],
  ['etcd-cafile', '/ca.pem', 'etcdCafile', '/ca.pem'],
  ['etcd-username', 'root', 'etcdUsername', 'root'],
  ['etcd-password', 's3cret', 'etcdPassword', 's3cret'],
  ['iface', 'eth1', 'iface', ['eth1']],
  ['iface-regex', 'eth[0-9]+', 'ifaceRegex', ['eth[0-9]+']],
  ['iface-can-reach', '192.168.1.1', 'ifaceCanReach', ip('192.168.1.1')],
  ['subnet-file', '/tmp/subnet.env', 'subnetFile', '/tmp/subnet.env'],
  ['public-ip', '192.168.1.5', 'publicIp', ip('192.168.1.5')],
  ['public-ipv6', 'fd00::5', 'publicIpv6', ip('fd00::5')],
  ['subnet-lease-renew-margin', '30', 'subnetLeaseRenewMargin', 30],
  ['ip-masq', 'true', 'ipMasq', true],
  ['ip-masq-fully-random-disable', 'true', 'ipMasqFullyRandomDisable', true],
  ['kube-subnet-mgr', 'true', 'kubeSubnetMgr', true],
  ['kube-api-url', 'https://10.96.0.1:443', 'kubeApiUrl', 'https://10.96.0.1:443'],
  ['kube-annotation-prefix', 'example.com/', 'kubeAnnotationPrefix', 'example.com/'],
  ['kubeconfig-file', '/etc/kubeconfig', 'kubeconfigFile', '/etc/kubeconfig'],
  ['healthz-ip', '::1', 'healthzIp', ip('::1')],
  ['healthz-port', '8471', 'healthzPort', 8471],
  ['metrics-allow-from', '10.1.2.3/8,2001:db8::1', 'metricsAllowFrom', [net('10.0.0.0/8'), net('2001:db8::1/128')]],
  ['ip-masq-exclude', '203.0.113.0/24,2001:db8:3::/64', 'ipMasqExclude', [net('203.0.113.0/24'), net('2001:db8:3::/64')]],
  ['iptables-resync', '7', 'iptablesResync', 7],
  ['iptables-forward-rules', 'false', 'iptablesForwardRules', false],
  ['ip-blackhole-route', 'true', 'ipBlackholeRoute', true],
  ['net-config-path', '/etc/net.json', 'netConfigPath', '/etc/net.json'],
  ['set-node-network-unavailable', 'false', 'setNodeNetworkUnavailable', false],
  ['v', '4', 'v', 4],
  ['vmodule', 'foo=2', 'vmodule', 'foo=2'],
  ['log_backtrace_at', 'x.go:10', 'logBacktraceAt', 'x.go:10'],
  ['datapath-resync', '120', 'datapathResync', 120],
  ['peer-probe-interval', '0', 'peerProbeInterval', 0],
  ['wireguard-implementation', 'userspace', 'wireguardImplementation', 'userspace'],
  ['bgp-as', '64512', 'bgpAs', 64512],
  ['bgp-graceful-restart-time', '0', 'bgpGracefulRestartTime', 0],
];

const envOf = (flag: string) => `FLANNELD_${flag.toUpperCase().replace(/[-.]/g, '_')}`;

describe('loadOptions: defaults', () => {
  it('gives every upstream default with no arguments and no environment', () => {
    const { options, warnings } = run([]);
    expect(options).toEqual(DEFAULTS);
    expect(warnings).toEqual([]);
  });

  it('returns frozen options', () => {
    const { options } = run(['--iface', 'eth0']);
    expect(Object.isFrozen(options)).toBe(true);
    expect(Object.isFrozen(options.iface)).toBe(true);
    expect(Object.isFrozen(options.etcdEndpoints)).toBe(true);
  });

  it('samples cover every option except --version and --bgp-peers (which needs --bgp-as, below)', () => {
    const covered = new Set(SAMPLES.map(([flag]) => flag));
    expect(OPTION_SPECS.map((s) => s.flag).filter((f) => !covered.has(f))).toEqual(['version', 'bgp-peers']);
  });

  it('takes --bgp-peers with --bgp-as, and refuses routers without our AS, naming --bgp-as', () => {
    const entries = ['192.0.2.250;as=65000', '2001:db8:2::fa;as=65000;password=x'];
    expect(run(['--bgp-as=64512', `--bgp-peers=${entries[0]}`, `--bgp-peers=${entries[1]}`]).options.bgpPeers).toEqual(entries);
    const refused = loadOptions([`--bgp-peers=${entries[0]}`], {});
    expect(refused).toMatchObject({ kind: 'error', message: expect.stringContaining("--bgp-as: must name this node's AS") });
  });

  afterEach(() => vi.unstubAllEnvs());
  it('never reads process.env or process.argv', () => {
    vi.stubEnv('FLANNELD_ETCD_PREFIX', '/from-process');
    expect(run([]).options.etcdPrefix).toBe('/coreos.com/network');
  });
});

describe('loadOptions: command line', () => {
  it.each(SAMPLES)('--%s=%s sets the option', (flag, text, field, parsed) => {
    expect(run([`--${flag}=${text}`]).options[field]).toEqual(parsed);
  });

  it.each([
    [['-etcd-prefix', '/x'], 'etcdPrefix', '/x'],
    [['--etcd-prefix', '/x'], 'etcdPrefix', '/x'],
    [['-etcd-prefix=/x'], 'etcdPrefix', '/x'],
    [['--etcd-prefix=a=b'], 'etcdPrefix', 'a=b'],
    [['--etcd-prefix='], 'etcdPrefix', ''],
    [['--etcd-prefix', '--iface'], 'etcdPrefix', '--iface'],
    [['--etcd-prefix=/a', '--etcd-prefix=/b'], 'etcdPrefix', '/b'],
    [['--ip-masq'], 'ipMasq', true],
    [['-ip-masq'], 'ipMasq', true],
    [['--ip-masq=false'], 'ipMasq', false],
    [['--ip-masq=1'], 'ipMasq', true],
    [['--ip-masq=T'], 'ipMasq', true],
    [['--ip-masq=F'], 'ipMasq', false],
    [['--iptables-forward-rules=false'], 'iptablesForwardRules', false],
    [['--iface', 'eth0', '--iface=10.0.0.1', '-iface', 'eth1'], 'iface', ['eth0', '10.0.0.1', 'eth1']],
    [['--iface-regex', 'eth,x', '--iface-regex=(?i)^ENS'], 'ifaceRegex', ['eth,x', '(?i)^ENS']],
    [['--healthz-port', '0x1f90'], 'healthzPort', 8080],
    [['--v', '-1'], 'v', -1],
    [['--v=+2'], 'v', 2],
    [['--subnet-lease-renew-margin=1'], 'subnetLeaseRenewMargin', 1],
    [['--subnet-lease-renew-margin=1439'], 'subnetLeaseRenewMargin', 1439],
    [['--healthz-port=65535'], 'healthzPort', 65535],
    [['--etcd-endpoints', 'http://a:2379, ,http://b:2379'], 'etcdEndpoints', ['http://a:2379', 'http://b:2379']],
    [['--ip-masq', '--'], 'ipMasq', true],
    [['--metrics-allow-from', '192.0.2.0/24', '--metrics-allow-from=0.0.0.0/0, ::/0'], 'metricsAllowFrom',
      [net('192.0.2.0/24'), net('0.0.0.0/0'), net('::/0')]],
  ] as const)('%j', (argv, field, expected) => {
    expect(run(argv).options[field]).toEqual(expected);
  });

  it.each([
    [['--nope'], ['flag provided but not defined: --nope']],
    [['-nope=1'], ['flag provided but not defined: -nope']],
    [['---iface'], ['bad flag syntax: ---iface']],
    [['-=x'], ['bad flag syntax: -=x']],
    [['--etcd-prefix'], ['flag needs an argument: --etcd-prefix']],
    [['--iface', 'eth0', '--iface'], ['flag needs an argument: --iface']],
    [['extra'], ['unexpected argument "extra"']],
    [['-'], ['unexpected argument "-"']],
    [['--', 'extra'], ['unexpected argument "extra"']],
    [['--ip-masq', 'false'], ['unexpected argument "false"']],
    [['--ip-masq=yes'], ['--ip-masq', '"yes"']],
    [['--iptables-resync=abc'], ['--iptables-resync', '"abc"']],
    [['--iptables-resync', '0'], ['--iptables-resync', '0']],
    [['--iptables-resync', '1.5'], ['--iptables-resync', '"1.5"']],
    [['--healthz-port=65536'], ['--healthz-port', '65536']],
    [['--healthz-port=-1'], ['--healthz-port', '-1']],
    [['--healthz-port=http'], ['--healthz-port', '"http"']],
    [['--subnet-lease-renew-margin=0'], ['--subnet-lease-renew-margin', '0', 'out of acceptable range']],
    [['--subnet-lease-renew-margin=1440'], ['--subnet-lease-renew-margin', '1440']],
    [['--subnet-lease-renew-margin=sixty'], ['--subnet-lease-renew-margin', '"sixty"']],
    [['--datapath-resync=-5'], ['--datapath-resync', '-5']],
    [['--datapath-resync=0'], ['--datapath-resync', '0']],
    [['--peer-probe-interval=-1'], ['--peer-probe-interval', '-1']],
    [['--wireguard-implementation=both'], ['--wireguard-implementation', 'both']],
    [['--bgp-as=-1'], ['--bgp-as', '-1']],
    [['--bgp-graceful-restart-time=4096'], ['--bgp-graceful-restart-time', '4096']],
    [['--v=x'], ['--v', '"x"']],
    [['--public-ip=fe80::1'], ['--public-ip', '"fe80::1"', 'IPv4']],
    [['--public-ip=300.1.1.1'], ['--public-ip', '"300.1.1.1"']],
    [['--public-ipv6=10.0.0.1'], ['--public-ipv6', '"10.0.0.1"', 'IPv6']],
    [['--healthz-ip=localhost'], ['--healthz-ip', '"localhost"']],
    [['--healthz-ip='], ['--healthz-ip', '""']],
    [['--iface-can-reach=gateway'], ['--iface-can-reach', '"gateway"']],
    [['--iface-regex', 'eth0', '--iface-regex', '('], ['--iface-regex', '"("']],
    [['--iface='], ['--iface', '""']],
    [['--etcd-endpoints=,'], ['--etcd-endpoints', '","']],
    [['--metrics-allow-from=10.0.0.0/33'], ['--metrics-allow-from', '"10.0.0.0/33"', 'CIDRs or IP addresses']],
    [['--metrics-allow-from=192.0.2.0/24,prometheus'], ['--metrics-allow-from', '"192.0.2.0/24,prometheus"']],
    [['--metrics-allow-from='], ['--metrics-allow-from', '""']],
  ] as const)('%j is an error naming the flag and value', (argv, parts) => {
    const message = failure(argv);
    for (const part of parts) expect(message).toContain(part);
  });

  it('formats a bad value as a ConfigError message', () => {
    expect(failure(['--iptables-resync=abc'])).toBe('--iptables-resync: must be a positive integer (got "abc")');
  });

  it('reports the first problem in command-line order, as Go does', () => {
    expect(failure(['--iptables-resync=abc', '--nope'])).toContain('--iptables-resync');
    expect(failure(['--nope', '--iptables-resync=abc'])).toContain('--nope');
  });
});

describe('loadOptions: help and version', () => {
  it.each([[['--help']], [['-help']], [['-h']], [['--h']], [['--help=false']], [['--ip-masq', '--help', '--nope']]])(
    '%j asks for help',
    (argv) => {
      expect(loadOptions(argv, {}).kind).toBe('help');
    },
  );

  it('an error before --help wins, as in Go', () => {
    expect(loadOptions(['--nope', '--help'], {}).kind).toBe('error');
  });

  it.each([
    [['--version'], 'version'],
    [['-version=true'], 'version'],
    [['--version=false'], 'run'],
    [['--version', '--healthz-port=70000'], 'version'],
    [['--version', '--iptables-resync=abc'], 'error'],
    [['--version', 'extra'], 'error'],
  ] as const)('%j -> %s', (argv, kind) => {
    expect(loadOptions(argv, {}).kind).toBe(kind);
  });

  it('FLANNELD_VERSION has no effect (upstream checks --version before the environment)', () => {
    const r = loadOptions([], { FLANNELD_VERSION: 'true' });
    expect(r.kind).toBe('run');
    expect((r as Extract<LoadResult, { kind: 'run' }>).warnings.join('\n')).toContain('FLANNELD_VERSION');
  });

  it('an invalid environment does not stop --version', () => {
    expect(loadOptions(['--version'], { FLANNELD_IPTABLES_RESYNC: 'abc' }).kind).toBe('version');
  });
});

describe('loadOptions: FLANNELD_* environment', () => {
  it.each(SAMPLES)('%s is read from FLANNELD_*', (flag, text, field, parsed) => {
    expect(run([], { [envOf(flag)]: text }).options[field]).toEqual(parsed);
  });

  it('names variables as upstream does', () => {
    expect(envOf('log_backtrace_at')).toBe('FLANNELD_LOG_BACKTRACE_AT');
    expect(run([], { FLANNELD_V: '3', FLANNELD_IP_MASQ: 'true' }).options).toMatchObject({ v: 3, ipMasq: true });
  });

  it.each([
    [['--etcd-prefix=/cli'], { FLANNELD_ETCD_PREFIX: '/env' }, 'etcdPrefix', '/cli'],
    [['--iptables-resync=5'], { FLANNELD_IPTABLES_RESYNC: '9' }, 'iptablesResync', 5],
    [['--iptables-resync=7'], { FLANNELD_IPTABLES_RESYNC: 'abc' }, 'iptablesResync', 7],
    [['--ip-masq=false'], { FLANNELD_IP_MASQ: 'true' }, 'ipMasq', false],
    [['--iface', 'eth9'], { FLANNELD_IFACE: 'eth0,eth1' }, 'iface', ['eth9']],
    [[], { FLANNELD_ETCD_PREFIX: '' }, 'etcdPrefix', '/coreos.com/network'],
    [[], { FLANNELD_IPTABLES_RESYNC: '' }, 'iptablesResync', 5],
    [[], { FLANNELD_IFACE: 'eth0, eth1,,10.0.0.1' }, 'iface', ['eth0', 'eth1', '10.0.0.1']],
    [[], { FLANNELD_IFACE_REGEX: 'eth[0-9]{1,2},x' }, 'ifaceRegex', ['eth[0-9]{1,2},x']],
    [[], { FLANNELD_IP_MASQ: 'False' }, 'ipMasq', false],
  ] as const)('%j with %j -> %s', (argv, env, field, expected) => {
    expect(run(argv, env).options[field]).toEqual(expected);
  });

  it.each([
    ['FLANNELD_IPTABLES_RESYNC', 'abc'],
    ['FLANNELD_IPTABLES_RESYNC', '0'],
    ['FLANNELD_HEALTHZ_PORT', '70000'],
    ['FLANNELD_IP_MASQ', 'yes'],
    ['FLANNELD_PUBLIC_IP', 'node1'],
    ['FLANNELD_PUBLIC_IPV6', '10.0.0.1'],
    ['FLANNELD_HEALTHZ_IP', 'any'],
    ['FLANNELD_IFACE_CAN_REACH', '8.8.8'],
    ['FLANNELD_IFACE_REGEX', '(eth'],
    ['FLANNELD_SUBNET_LEASE_RENEW_MARGIN', '1440'],
    ['FLANNELD_DATAPATH_RESYNC', '-1'],
    ['FLANNELD_PEER_PROBE_INTERVAL', 'often'],
    ['FLANNELD_V', 'x'],
    ['FLANNELD_ETCD_ENDPOINTS', ' , '],
    ['FLANNELD_METRICS_ALLOW_FROM', 'any'],
  ])('%s=%j is an error naming the variable and value', (name, value) => {
    const message = failure([], { [name]: value });
    expect(message.startsWith(`${name}: `)).toBe(true);
    expect(message).toContain(`(got ${JSON.stringify(value)})`);
  });

  it('formats a bad environment value as a ConfigError message', () => {
    expect(failure([], { FLANNELD_IPTABLES_RESYNC: 'abc' })).toBe(
      'FLANNELD_IPTABLES_RESYNC: must be a positive integer (got "abc")',
    );
  });

  it('an out-of-range command-line value names the flag, not the variable', () => {
    expect(failure(['--healthz-port=70000'], { FLANNELD_HEALTHZ_PORT: '1' })).toMatch(/^--healthz-port: /);
  });
});

describe('loadOptions: warnings', () => {
  it.each(NOT_YET_ACTIVE.map((flag) => [flag]))('setting --%s warns that it is not yet active', (flag) => {
    const sample = SAMPLES.find(([f]) => f === flag);
    const { warnings } = run([`--${flag}=${sample?.[1] ?? ''}`]);
    expect(warnings).toEqual([`--${flag} is not yet active in flannel-ts; ignored`]);
  });

  it('names the variable when a not-yet-active option comes from the environment', () => {
    expect(run([], { FLANNELD_VMODULE: 'x=2' }).warnings).toEqual([
      'FLANNELD_VMODULE is not yet active in flannel-ts; ignored',
    ]);
  });

  it('active options give no warning', () => {
    const { warnings } = run(['--etcd-prefix=/x', '--public-ip=10.0.0.1', '--v=2'], { FLANNELD_SUBNET_FILE: '/x' });
    expect(warnings).toEqual([]);
  });

  it('warns about FLANNELD_* variables that match no option', () => {
    expect(run([], { FLANNELD_IFACES: 'eth0', FLANNELD_EMPTY: '', OTHER: 'x' }).warnings).toEqual([
      'FLANNELD_IFACES does not match any flanneld option; ignored',
    ]);
  });

  it('warns that --ip-masq-exclude does nothing without --ip-masq, and refuses a value that is not a network, naming it', () => {
    expect(run(['--ip-masq-exclude=203.0.113.0/24']).warnings).toEqual(['--ip-masq-exclude is used only with --ip-masq (without it nothing is masqueraded); ignored']);
    expect(run(['--ip-masq', '--ip-masq-exclude=203.0.113.0/24']).warnings).toEqual([]);
    expect(loadOptions(['--ip-masq-exclude=203.0.113.0/33'], {})).toMatchObject({ kind: 'error', message: expect.stringContaining('--ip-masq-exclude: must be CIDRs or IP addresses, comma-separated (got "203.0.113.0/33")') });
    expect(loadOptions([], { FLANNELD_IP_MASQ_EXCLUDE: 'office' })).toMatchObject({ kind: 'error', message: expect.stringContaining('FLANNELD_IP_MASQ_EXCLUDE') });
  });

  it('warns when --etcd-cafile cannot be used', () => {
    expect(run(['--etcd-cafile=/ca.pem']).warnings.join('\n')).toContain('--etcd-cafile');
    expect(run(['--etcd-cafile=/ca', '--etcd-keyfile=/k', '--etcd-certfile=/c']).warnings).toEqual([]);
  });
});

describe('help text', () => {
  const text = helpText();
  const lineOf = (flag: string) => text.split('\n').find((l) => l.startsWith(`  --${flag} `)) ?? '';

  it.each(OPTION_SPECS.map((s) => [s.flag, s]))('lists --%s with its description and default', (flag, spec) => {
    const line = lineOf(flag);
    expect(line).toContain(spec.doc);
    const shown = Array.isArray(spec.default)
      ? 'none'
      : typeof spec.default === 'string'
        ? JSON.stringify(spec.default)
        : String(spec.default);
    expect(line).toContain(`(default ${shown})`);
    expect(line.includes(NOT_YET_ACTIVE_MARK)).toBe(NOT_YET_ACTIVE.includes(flag));
  });

  it('lists --help and the FLANNELD_ rule', () => {
    expect(lineOf('help')).toContain('print this message');
    expect(text).toContain('FLANNELD_');
  });

  it('marks the options that are not active yet, and only those', () => {
    expect(lineOf('ip-masq')).not.toContain('(not yet active)');
    expect(lineOf('kube-subnet-mgr')).not.toContain('(not yet active)');
    expect(lineOf('etcd-endpoints')).not.toContain('(not yet active)');
    expect(lineOf('public-ip')).not.toContain('(not yet active)');
    expect(lineOf('public-ipv6')).not.toContain('(not yet active)');
    expect(lineOf('iface')).not.toContain('(not yet active)');
    expect(lineOf('healthz-port')).not.toContain('(not yet active)');
    expect(lineOf('peer-probe-interval')).not.toContain('(not yet active)');
    expect(lineOf('vmodule')).toContain('(not yet active)');
  });

  it('is the usage given with errors', () => {
    const r = loadOptions(['--nope'], {});
    expect(r.kind === 'error' && r.usage).toBe(text);
  });
});

describe('Go value parsers', () => {
  it.each([
    ['10', 10], ['+7', 7], ['-3', -3], ['0', 0], ['0x1F', 31], ['0X1f', 31], ['0o17', 15], ['017', 15], ['0b101', 5],
    ['1_000', 1000], ['0x_1f', 31], ['0_7', 7],
    ['08', undefined], ['1__0', undefined], ['_1', undefined], ['1_', undefined], ['', undefined], ['1.5', undefined],
    [' 1', undefined], ['1e3', undefined], ['0x', undefined], ['9007199254740993', undefined],
  ])('parseGoInt(%j) = %s', (text, expected) => {
    expect(parseGoInt(text)).toBe(expected);
  });

  it.each([
    ['1', true], ['t', true], ['T', true], ['TRUE', true], ['true', true], ['True', true],
    ['0', false], ['f', false], ['F', false], ['FALSE', false], ['false', false], ['False', false],
    ['yes', undefined], ['tRUE', undefined], ['', undefined], ['on', undefined],
  ])('parseGoBool(%j) = %s', (text, expected) => {
    expect(parseGoBool(text)).toBe(expected);
  });

  it('compiles Go-style leading flag groups in --iface-regex', () => {
    expect(compileIfaceRegex('(?i)^eth')?.test('ETH0')).toBe(true);
    expect(compileIfaceRegex('^eth')?.test('ETH0')).toBe(false);
    expect(compileIfaceRegex('[')).toBeUndefined();
  });
});
