import { describe, expect, it } from 'vitest';
import type { WgDeviceConfig, WgDeviceState } from '../../../../backends/wireguard/uapi.js';
import type { WgPeerChanges } from '../../../../backends/wireguard/wg-device.js';
import { userspaceDevice } from '../../../../backends/wireguard/wg-userspace-device.js';
import type { WgExit, WireguardGoHandle, WireguardGoOptions } from '../../../../backends/wireguard/wireguard-go.js';
import { parseCidr, type IpNet } from '../../../../flanneld/ip/cidr.js';
import { FakeDatapath } from '../../../helpers/fake-datapath.js';
import { ManualClock } from '../../../helpers/manual-clock.js';
import { memoryLog } from '../../../helpers/test-log.js';

const key = (n: number): string => Buffer.alloc(32, n).toString('base64');
const IFACE = { privateKey: key(1), listenPort: 51820 };
const peer = (n: number) => ({ publicKey: key(n), allowedIps: [parseCidr(`10.244.${n}.0/24`) as IpNet] });

/** A supervisor stand-in: "starting" wireguard-go adds its TUN link, and every configure is recorded. */
class FakeSupervisor implements WireguardGoHandle {
  readonly configured: { desired: WgDeviceConfig; changes: WgPeerChanges | undefined }[] = [];
  stopped = false;
  exited: Promise<WgExit>;
  end!: (exit: WgExit) => void;

  constructor(
    readonly device: string,
    readonly options: WireguardGoOptions,
  ) {
    this.exited = new Promise((resolve) => (this.end = resolve));
  }

  async configure(desired: WgDeviceConfig, changes?: WgPeerChanges): Promise<void> {
    this.configured.push({ desired, changes });
  }

  async state(): Promise<WgDeviceState> {
    return { privateKey: IFACE.privateKey, listenPort: IFACE.listenPort, fwmark: 0, peers: [] };
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.end({ code: 0, signal: null });
  }
}

function setup() {
  const dp = new FakeDatapath();
  const supervisors: FakeSupervisor[] = [];
  const health: string[] = [];
  const { log, lines } = memoryLog();
  const device = userspaceDevice('flannel-wg', {
    datapath: dp,
    clock: new ManualClock(),
    log,
    health: (name, problem) => health.push(`${name}: ${problem ?? 'up'}`),
    start: async (options) => {
      dp.addLink({ name: options.device, kind: 'tun' });
      const s = new FakeSupervisor(options.device, options);
      supervisors.push(s);
      return s;
    },
  });
  return { dp, device, supervisors, health, lines };
}

describe('userspace WireGuard device', () => {
  it('starts wireguard-go once, sets the interface, and answers with the TUN link index', async () => {
    const h = setup();
    const index = await h.device.ensure(IFACE, new AbortController().signal);
    expect(index).toBe(h.dp.links.find((l) => l.name === 'flannel-wg')?.index);
    expect(await h.device.ensure(IFACE, new AbortController().signal)).toBe(index);
    expect(h.supervisors).toHaveLength(1);
    expect(h.supervisors[0]?.configured).toEqual([{ desired: { ...IFACE, peers: [] }, changes: { remove: [], write: [] } }]);
    expect(h.health).toEqual(['flannel-wg: up']);
  });

  it('sends each change alone while keeping the whole peer list for a restart', async () => {
    const h = setup();
    await h.device.ensure(IFACE, new AbortController().signal);
    await h.device.update(IFACE, { remove: [], write: [peer(2), peer(3)] });
    await h.device.update(IFACE, { remove: [key(2)], write: [peer(4)] });
    const last = h.supervisors[0]?.configured.at(-1);
    expect(last?.changes).toEqual({ remove: [key(2)], write: [peer(4)] });
    expect(last?.desired.peers).toEqual([peer(3), peer(4)]);
  });

  it('replaces a leftover device of its name, as upstream does with its link', async () => {
    const h = setup();
    const stale = h.dp.addLink({ name: 'flannel-wg', kind: 'tun' });
    const index = await h.device.ensure(IFACE, new AbortController().signal);
    expect(index).not.toBe(stale.index);
    expect(h.lines.find((l) => l.msg === 'flannel-wg already exists; recreating it')).toBeDefined();
  });

  it('passes down and up reports of its process on to health', async () => {
    const h = setup();
    await h.device.ensure(IFACE, new AbortController().signal);
    h.supervisors[0]?.options.onDown?.('wireguard-go for flannel-wg (pid 9) exited with code 2');
    h.supervisors[0]?.options.onUp?.();
    expect(h.health).toEqual(['flannel-wg: up', 'flannel-wg: wireguard-go for flannel-wg (pid 9) exited with code 2', 'flannel-wg: up']);
  });

  it('says the device is not there while wireguard-go restarts, and starts anew once supervision gave up', async () => {
    const h = setup();
    await h.device.ensure(IFACE, new AbortController().signal);
    h.dp.deleteLinkBehindOurBack('flannel-wg');
    await expect(h.device.ensure(IFACE, new AbortController().signal)).rejects.toThrow('flannel-wg is not there: wireguard-go is restarting');
    h.supervisors[0]?.end({ code: null, signal: null });
    await Promise.resolve();
    await h.device.ensure(IFACE, new AbortController().signal);
    expect(h.supervisors).toHaveLength(2);
  });

  it('close stops the process', async () => {
    const h = setup();
    await h.device.ensure(IFACE, new AbortController().signal);
    await h.device.close();
    expect(h.supervisors[0]?.stopped).toBe(true);
  });
});
