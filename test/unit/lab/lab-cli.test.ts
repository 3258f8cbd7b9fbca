import { writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { LabUsageError, parseLabArgs } from '../../../lab/lab-args.js';
import { labNetworkConfig } from '../../../lab/lab-network-config.js';

describe('lab command line', () => {
  it('defaults to up with 3 hosts × 2 pods in lab "lab", IPv4 only', () => {
    expect(parseLabArgs([])).toMatchObject({ command: 'up', id: 'lab', hosts: 3, pods: 2, stack: 'v4', execArgv: [] });
  });

  it('takes --backend wireguard in etcd and Kubernetes modes, with either family setting', () => {
    expect(parseLabArgs(['up', '--backend', 'wireguard'])).toMatchObject({ backend: 'wireguard', stack: 'v4', kube: false });
    expect(parseLabArgs(['up', '--backend=wireguard', '--ipv6', '--kube'])).toMatchObject({ backend: 'wireguard', stack: 'dual', kube: true });
    expect(parseLabArgs(['up', '--backend', 'wireguard', '--ipv6-only'])).toMatchObject({ backend: 'wireguard', stack: 'v6' });
  });

  it('takes --ipv6 and --ipv6-only as switches that never swallow the next argument', () => {
    expect(parseLabArgs(['up', '--ipv6', '--id', 'd1'])).toMatchObject({ command: 'up', id: 'd1', stack: 'dual' });
    expect(parseLabArgs(['--ipv6-only', 'up', '--backend=host-gw'])).toMatchObject({ command: 'up', stack: 'v6', backend: 'host-gw' });
    expect(parseLabArgs(['up', '--ipv6', '--ipv6-network', '2001:db8:b::/48'])).toMatchObject({ stack: 'dual', ipv6Network: '2001:db8:b::/48' });
    expect(parseLabArgs(['up', '--ipv6', '--network', '10.9.0.0/16'])).toMatchObject({ stack: 'dual', network: '10.9.0.0/16' });
  });

  it('takes options as --flag value and --flag=value', () => {
    const opts = parseLabArgs(['up', '--id', 'x1', '--hosts=5', '--pods', '0', '--backend', 'host-gw', '--network=10.9.0.0/16']);
    expect(opts).toMatchObject({ command: 'up', id: 'x1', hosts: 5, pods: 0, backend: 'host-gw', network: '10.9.0.0/16' });
  });

  it('takes the target and the command after -- for exec', () => {
    expect(parseLabArgs(['exec', 'h1-p2', '--id', 'a', '--', 'ping', '-c', '1', '--id'])).toMatchObject({
      command: 'exec', target: 'h1-p2', id: 'a', execArgv: ['ping', '-c', '1', '--id'],
    });
  });

  it('takes --kube as a switch, and the arguments after -- for kubectl', () => {
    expect(parseLabArgs([])).toMatchObject({ kube: false });
    expect(parseLabArgs(['up', '--kube', '--ipv6', '--id', 'k1'])).toMatchObject({ command: 'up', kube: true, stack: 'dual', id: 'k1' });
    expect(parseLabArgs(['kubectl', '--id', 'k1', '--', 'get', 'nodes', '--id', 'x'])).toMatchObject({
      command: 'kubectl', id: 'k1', execArgv: ['get', 'nodes', '--id', 'x'],
    });
  });

  it('takes --upstream as a list of this lab\'s hosts, once each', () => {
    expect(parseLabArgs([])).toMatchObject({ upstream: [] });
    expect(parseLabArgs(['up', '--hosts', '4', '--upstream', 'h2,h4,h2'])).toMatchObject({ upstream: ['h2', 'h4'] });
    expect(parseLabArgs(['up', '--kube', '--upstream=h1'])).toMatchObject({ kube: true, upstream: ['h1'] });
  });

  it.each([
    [['up', '--upstream', 'h4'], /--upstream h4: "h4" is not a host of this lab \(h1\.\.h3\)/],
    [['up', '--upstream', 'h1,node2'], /--upstream h1,node2: "node2" is not a host of this lab/],
    [['up', '--upstream', 'h0'], /"h0" is not a host of this lab/],
    [['up', '--kubelet', '--upstream', 'h2'], /--upstream runs upstream flanneld as a host process; with --kubelet/],
  ])('refuses --upstream %j, naming the value', (argv, message) => {
    expect(() => parseLabArgs(argv)).toThrow(message);
  });

  it.each([
    [['bogus'], /unknown sub-command "bogus"/],
    [['up', '--hosts', '0'], /--hosts must be an integer from 1 to 50, got "0"/],
    [['up', '--hosts', '2.5'], /--hosts must be an integer from 1 to 50, got "2.5"/],
    [['up', '--pods', '21'], /--pods must be an integer from 0 to 20, got "21"/],
    [['up', '--id', 'Lab_1'], /--id must match \[a-z0-9\]\{1,12\}, got "Lab_1"/],
    [['up', '--backend', 'ipip'], /--backend must be one of vxlan, host-gw, udp, wireguard, got "ipip"/],
    [['up', '--kubelet', '--backend', 'wireguard'], /--backend wireguard with --kubelet: .*needs \/dev\/net\/tun, .*gives its container none; use wireguard in etcd mode or with --kube$/],
    [['up', '--hosts'], /--hosts needs a value/],
    [['up', '--colour', 'red'], /unknown option --colour/],
    [['kill'], /kill needs a target/],
    [['exec', 'h1'], /exec needs a command after --/],
    [['status', 'h1'], /unexpected argument "h1" for status/],
    [['up', '--', 'ls'], /"--" is only for exec and kubectl/],
    [['kubectl'], /kubectl needs its arguments after --, e.g. kubectl -- get nodes -o wide/],
    [['up', '--kube=yes'], /--kube takes no value, got "yes"/],
    [['up', '--config', 'f.json', '--backend', 'vxlan'], /--config f.json is the whole network config/],
    [['up', '--ipv6', '--ipv6-only'], /--ipv6 and --ipv6-only exclude each other/],
    [['up', '--ipv6', '--backend', 'udp'], /--backend udp carries IPv4 only .*use vxlan, host-gw or wireguard with --ipv6$/],
    [['up', '--backend', 'udp', '--ipv6-only'], /--backend udp carries IPv4 only .*with --ipv6-only$/],
    [['up', '--ipv6', '--config', 'f.json'], /--config f.json is the whole network config, so --ipv6 cannot go with it.*EnableIPv6/],
    [['up', '--ipv6-only', '--config=f.json', '--ipv6-network', '2001:db8:b::/48'], /--config f.json .* so --ipv6-only, --ipv6-network cannot go with it/],
    [['up', '--ipv6-network', '2001:db8:b::/48'], /--ipv6-network 2001:db8:b::\/48 needs --ipv6 or --ipv6-only/],
    [['up', '--ipv6-only', '--network', '10.9.0.0/16'], /--network 10.9.0.0\/16 is the IPv4 Network, which --ipv6-only has none of/],
    [['up', '--ipv6=yes'], /--ipv6 takes no value, got "yes"/],
    [['up', '--ipv6', '--ipv6-network'], /--ipv6-network needs a value/],
  ])('rejects %j naming the value', (argv, message) => {
    expect(() => parseLabArgs(argv)).toThrow(LabUsageError);
    expect(() => parseLabArgs(argv)).toThrow(message);
  });
});

describe('lab network config', () => {
  it('is 10.244.0.0/16 with vxlan without options', () => {
    expect(labNetworkConfig({})).toEqual({ text: '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}', backendType: 'vxlan', stack: 'v4' });
  });

  it('takes --network and --backend', () => {
    expect(labNetworkConfig({ network: '10.9.0.0/16', backend: 'host-gw' })).toEqual({
      text: '{"Network":"10.9.0.0/16","Backend":{"Type":"host-gw"}}',
      backendType: 'host-gw',
      stack: 'v4',
    });
  });

  it('writes Backend.Type wireguard for --backend wireguard, also dual-stack', () => {
    expect(labNetworkConfig({ backend: 'wireguard' })).toEqual({
      text: '{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard"}}',
      backendType: 'wireguard',
      stack: 'v4',
    });
    expect(labNetworkConfig({ backend: 'wireguard', stack: 'dual' }).text).toBe(
      '{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"2001:db8:a::/48","Backend":{"Type":"wireguard"}}');
  });

  it('refuses a wireguard --config for a kubelet lab, whose DaemonSet gives wireguard-go no /dev/net/tun', () => {
    const file = join(mkdtempSync(join(tmpdir(), 'lab-conf-')), 'wg.json');
    writeFileSync(file, '{"Network":"10.50.0.0/16","Backend":{"Type":"wireguard","PersistentKeepaliveInterval":25}}');
    expect(labNetworkConfig({ config: file }).backendType).toBe('wireguard');
    expect(() => labNetworkConfig({ config: file, kubelet: true })).toThrow(`--config ${file}: this kernel has no WireGuard, so the devices would run in wireguard-go`);
  });

  it('adds EnableIPv6 and IPv6Network for --ipv6, and leaves IPv4 out for --ipv6-only', () => {
    expect(labNetworkConfig({ stack: 'dual' })).toEqual({
      text: '{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"2001:db8:a::/48","Backend":{"Type":"vxlan"}}',
      backendType: 'vxlan',
      stack: 'dual',
    });
    expect(labNetworkConfig({ stack: 'v6', backend: 'host-gw', ipv6Network: '2001:db8:b::/48' })).toEqual({
      text: '{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"2001:db8:b::/48","Backend":{"Type":"host-gw"}}',
      backendType: 'host-gw',
      stack: 'v6',
    });
  });

  it('takes the families of a --config file from EnableIPv4 and EnableIPv6', () => {
    const dir = mkdtempSync(join(tmpdir(), 'lab-conf-'));
    const file = (name: string, conf: object): string => {
      writeFileSync(join(dir, name), JSON.stringify(conf));
      return join(dir, name);
    };
    const v6 = { EnableIPv6: true, IPv6Network: '2001:db8:c::/48' };
    expect(labNetworkConfig({ config: file('dual.json', { Network: '10.50.0.0/16', ...v6, Backend: { Type: 'vxlan' } }) }).stack).toBe('dual');
    expect(labNetworkConfig({ config: file('v6.json', { EnableIPv4: false, ...v6, Backend: { Type: 'host-gw' } }) }).stack).toBe('v6');
    const udp = file('udp.json', { Network: '10.50.0.0/16', ...v6, Backend: { Type: 'udp' } });
    expect(() => labNetworkConfig({ config: udp })).toThrow(`--config ${udp}: the udp backend carries IPv4 only`);
    const outside = file('outside.json', { EnableIPv4: false, EnableIPv6: true, IPv6Network: 'fd00:1::/48' });
    expect(() => labNetworkConfig({ config: outside })).toThrow(`--config ${outside}: IPv6Network fd00:1::/48 is outside 2001:db8::/32`);
  });

  it('uses a --config file as it is, after flanneld validates it', () => {
    const dir = mkdtempSync(join(tmpdir(), 'lab-conf-'));
    const good = join(dir, 'good.json');
    writeFileSync(good, '{"Network":"10.50.0.0/16","SubnetLen":20,"Backend":{"Type":"vxlan","VNI":4}}\n');
    expect(labNetworkConfig({ config: good })).toEqual({
      text: '{"Network":"10.50.0.0/16","SubnetLen":20,"Backend":{"Type":"vxlan","VNI":4}}',
      backendType: 'vxlan',
      stack: 'v4',
    });
    const bad = join(dir, 'bad.json');
    writeFileSync(bad, '{"Network":"10.50.0.0/16","SubnetLen":8}');
    expect(() => labNetworkConfig({ config: bad })).toThrow(`--config ${bad}: SubnetLen`);
    expect(() => labNetworkConfig({ config: join(dir, 'missing.json') })).toThrow(/missing.json: cannot read it/);
  });

  it.each([
    [{ network: '10.244.0.0/33' }, /Network/],
    [{ network: '192.0.0.0/16' }, /Network 192.0.0.0\/16 overlaps 192.0.2.0\/24/],
    [{ network: '127.0.0.0/16' }, /overlaps 127.0.0.0\/8/],
    [{ stack: 'dual', ipv6Network: '2001:db9::/48' } as const, /^--ipv6-network: IPv6Network 2001:db9::\/48 is outside 2001:db8::\/32/],
    [{ stack: 'v6', ipv6Network: '2001:db8::/40' } as const, /^--ipv6-network: IPv6Network 2001:db8::\/40 overlaps 2001:db8:2::\/64, which the lab's hosts use/],
    [{ stack: 'v6', ipv6Network: '10.0.0.0/16' } as const, /^--ipv6-network: IPv6Network: .*"10.0.0.0\/16"/],
    [{ stack: 'dual', network: '192.0.2.0/25' } as const, /^--network: Network 192.0.2.0\/25 overlaps 192.0.2.0\/24/],
  ])('refuses %j', (opts, message) => {
    expect(() => labNetworkConfig(opts)).toThrow(message);
  });
});
