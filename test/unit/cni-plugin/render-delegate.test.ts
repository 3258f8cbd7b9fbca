import { describe, expect, it } from 'vitest';
import { parseNetConf } from '../../../cni-plugin/netconf.js';
import { renderDelegate, stableStringify } from '../../../cni-plugin/render-delegate.js';
import { parseSubnetFile } from '../../../cni-plugin/subnet-file.js';
import { convertResult } from '../../../cni-plugin/result-convert.js';
import { CniError, parseCniEnv } from '../../../cni-plugin/protocol.js';

const V4_ENV = 'FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.17.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n';
const conf = (extra: object = {}) => parseNetConf(JSON.stringify({ cniVersion: '0.3.1', name: 'cni-flannel', type: 'flannel', ...extra }));

describe('renderDelegate', () => {
  it("matches upstream's golden delegate (cni-plugin flannel_linux_test.go), keys sorted as Go writes them", () => {
    const text = stableStringify(renderDelegate(conf(), parseSubnetFile(V4_ENV, 'subnet.env'), ''));
    expect(text).toBe(
      '{"ipMasq":false,"ipam":{"ranges":[[{"subnet":"10.1.17.0/24"}]],"routes":[{"dst":"10.1.0.0/16"}],"type":"host-local"},"isGateway":true,"mtu":1472,"name":"cni-flannel","type":"bridge"}',
    );
  });

  it('passes delegate keys through, adds dual-stack ranges and routes, and keeps given ipam keys and routes', () => {
    const env = parseSubnetFile(
      'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_IPV6_NETWORK=fc00::/48\nFLANNEL_IPV6_SUBNET=fc00:0:0:3::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n',
      'subnet.env',
    );
    const out = renderDelegate(
      conf({ delegate: { hairpinMode: true, isDefaultGateway: true }, ipam: { dataDir: '/x', routes: [{ dst: '192.0.2.0/24' }] }, runtimeConfig: { portMappings: [] } }),
      env,
      '1.0.0',
    );
    expect(out).toMatchObject({
      cniVersion: '1.0.0', hairpinMode: true, isDefaultGateway: true, ipMasq: true, mtu: 1450, runtimeConfig: { portMappings: [] },
      ipam: {
        dataDir: '/x', type: 'host-local',
        ranges: [[{ subnet: '10.244.3.0/24' }], [{ subnet: 'fc00:0:0:3::/64' }]],
        routes: [{ dst: '192.0.2.0/24' }, { dst: '10.244.0.0/16' }, { dst: 'fc00::/48' }],
      },
    });
  });

  it.each([
    [{ delegate: { type: 5 } }, "'delegate' dictionary, if present, must have (string) 'type' field"],
    [{ delegate: { name: 'x' } }, "'delegate' dictionary must not have 'name' field, it'll be set by flannel"],
    [{ delegate: { ipam: {} } }, "'delegate' dictionary must not have 'ipam' field, it'll be set by flannel"],
    [{ ipam: { routes: 'nope' } }, 'failed to parse ipam.routes'],
  ])('rejects %j with code 7', (extra, message) => {
    expect(() => renderDelegate(conf(extra), parseSubnetFile(V4_ENV, 's'), '')).toThrow(message);
  });
});

describe('subnet.env as the plugin reads it', () => {
  it('deduplicates comma lists and lists every missing group', () => {
    expect(parseSubnetFile('FLANNEL_NETWORK=10.1.0.0/16,10.1.0.0/16\nFLANNEL_SUBNET=10.1.2.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=x\n', 'f').networks).toHaveLength(1);
    expect(() => parseSubnetFile('FLANNEL_MTU=1450\n', '/run/flannel/subnet.env')).toThrow(
      '/run/flannel/subnet.env is missing FLANNEL_NETWORK, FLANNEL_IPV6_NETWORK; FLANNEL_SUBNET, FLANNEL_IPV6_SUBNET; FLANNEL_IPMASQ',
    );
    expect(() => parseSubnetFile(V4_ENV.replace('1472', 'big'), 'f')).toThrow('FLANNEL_MTU is invalid (got "big")');
  });
});

describe('CNI protocol', () => {
  it.each([
    [{ CNI_COMMAND: 'ADD' }, 4, 'CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_PATH'],
    [{ CNI_COMMAND: 'NOPE' }, 4, 'CNI_COMMAND must be one of'],
    [{ CNI_COMMAND: 'DEL', CNI_CONTAINERID: '../etc', CNI_IFNAME: 'eth0', CNI_PATH: '/x' }, 4, 'CNI_CONTAINERID "../etc" is invalid'],
    [{ CNI_COMMAND: 'DEL', CNI_CONTAINERID: 'a/b', CNI_IFNAME: 'eth0', CNI_PATH: '/x' }, 4, 'CNI_CONTAINERID "a/b" is invalid'],
  ])('rejects env %j with code %i naming the problem', (env, code, message) => {
    try {
      parseCniEnv(env);
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(CniError);
      expect((err as CniError).code).toBe(code);
      expect((err as CniError).message).toContain(message);
    }
  });

  it('rejects an unknown cniVersion with code 1 and bad JSON with code 6', () => {
    expect(() => parseNetConf('{"cniVersion":"9.9.9"}')).toThrow(expect.objectContaining({ code: 1 }));
    expect(() => parseNetConf('{')).toThrow(expect.objectContaining({ code: 6 }));
  });

  it('converts results between 0.x and 1.x', () => {
    const v1 = { cniVersion: '1.0.0', ips: [{ address: '10.1.2.3/24', gateway: '10.1.2.1', interface: 2 }, { address: 'fc00::3/64' }] };
    expect(convertResult(v1, '0.3.1')).toEqual({ cniVersion: '0.3.1', ips: [{ address: '10.1.2.3/24', gateway: '10.1.2.1', interface: 2, version: '4' }, { address: 'fc00::3/64', version: '6' }] });
    expect(convertResult(convertResult(v1, '0.4.0'), '1.1.0')).toEqual({ ...v1, cniVersion: '1.1.0' });
  });
});
