import { writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { LabUsageError, parseLabArgs } from '../../lab/lab-args.js';
import { labNetworkConfig } from '../../lab/lab-network-config.js';

describe('lab command line', () => {
  it('defaults to up with 3 hosts × 2 pods in lab "lab"', () => {
    expect(parseLabArgs([])).toMatchObject({ command: 'up', id: 'lab', hosts: 3, pods: 2, execArgv: [] });
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

  it.each([
    [['bogus'], /unknown sub-command "bogus"/],
    [['up', '--hosts', '0'], /--hosts must be an integer from 1 to 50, got "0"/],
    [['up', '--hosts', '2.5'], /--hosts must be an integer from 1 to 50, got "2.5"/],
    [['up', '--pods', '21'], /--pods must be an integer from 0 to 20, got "21"/],
    [['up', '--id', 'Lab_1'], /--id must match \[a-z0-9\]\{1,12\}, got "Lab_1"/],
    [['up', '--backend', 'wireguard'], /--backend must be one of vxlan, host-gw, udp, got "wireguard"/],
    [['up', '--hosts'], /--hosts needs a value/],
    [['up', '--colour', 'red'], /unknown option --colour/],
    [['kill'], /kill needs a target/],
    [['exec', 'h1'], /exec needs a command after --/],
    [['status', 'h1'], /unexpected argument "h1" for status/],
    [['up', '--', 'ls'], /"--" is only for exec/],
    [['up', '--config', 'f.json', '--backend', 'vxlan'], /--config f.json is the whole network config/],
  ])('rejects %j naming the value', (argv, message) => {
    expect(() => parseLabArgs(argv)).toThrow(LabUsageError);
    expect(() => parseLabArgs(argv)).toThrow(message);
  });
});

describe('lab network config', () => {
  it('is the issue default without options', () => {
    expect(labNetworkConfig({}).text).toBe('{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}');
  });

  it('takes --network and --backend', () => {
    expect(labNetworkConfig({ network: '10.9.0.0/16', backend: 'host-gw' })).toEqual({
      text: '{"Network":"10.9.0.0/16","Backend":{"Type":"host-gw"}}',
      backendType: 'host-gw',
    });
  });

  it('uses a --config file as it is, after flanneld validates it', () => {
    const dir = mkdtempSync(join(tmpdir(), 'lab-conf-'));
    const good = join(dir, 'good.json');
    writeFileSync(good, '{"Network":"10.50.0.0/16","SubnetLen":20,"Backend":{"Type":"vxlan","VNI":4}}\n');
    expect(labNetworkConfig({ config: good })).toEqual({
      text: '{"Network":"10.50.0.0/16","SubnetLen":20,"Backend":{"Type":"vxlan","VNI":4}}',
      backendType: 'vxlan',
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
  ])('refuses %j', (opts, message) => {
    expect(() => labNetworkConfig(opts)).toThrow(message);
  });
});
