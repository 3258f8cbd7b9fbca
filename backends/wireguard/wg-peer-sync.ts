/**
 * Keeps each WireGuard device's peer list equal to what the leases want. Between resyncs only the difference from
 * what each device was last told is sent; a full resync reads the device back and sends the difference from what it
 * really holds, so a peer removed, added or altered behind our back (or lost with a restarted device) is put right,
 * and a peer no lease names any more is removed.
 */
import type { Logger } from 'pino';
import type { OpenedDevice } from './wg-device-choice.js';
import { diffPeers, isEmptyChange, wantedPeers, type DevicePeers } from './wg-peer-diff.js';
import type { PlannedWgPeer } from './wg-peers.js';

export class WgPeerSync {
  /** By lease key, in the order the leases appeared (key clashes go to the first). */
  private readonly plans = new Map<string, readonly PlannedWgPeer[]>();
  /** Per device, the peers it was last told to have. */
  private readonly told = new Map<string, DevicePeers>();
  private dirty = false;
  private conflicts = new Set<string>();

  constructor(
    private readonly devices: readonly OpenedDevice[],
    private readonly log: Logger,
  ) {}

  /** A lease's peers (undefined: the lease is gone). */
  setLease(key: string, peers: readonly PlannedWgPeer[] | undefined): void {
    if (peers) this.plans.set(key, peers);
    else this.plans.delete(key);
    this.dirty = true;
  }

  /** Devices were made anew: what they were told is gone with them. */
  devicesReplaced(): void {
    this.told.clear();
    this.dirty = true;
  }

  async converge(full: boolean): Promise<void> {
    if (!full && !this.dirty) return;
    const wanted = wantedPeers(this.plans, this.devices.map((o) => o.device.name));
    this.reportConflicts(wanted.conflicts);
    for (const opened of this.devices) {
      const name = opened.device.name;
      const want = wanted.devices.get(name) ?? new Map();
      const held = full ? await this.readBack(opened) : (this.told.get(name) ?? new Map());
      const changes = diffPeers(want, held);
      if (!isEmptyChange(changes)) await opened.device.update(opened.iface, changes);
      this.told.set(name, want);
    }
    this.dirty = false;
  }

  /** The device's peers as it reports them, after logging how they differ from what it was told. */
  private async readBack(opened: OpenedDevice): Promise<DevicePeers> {
    const state = await opened.device.state();
    const name = opened.device.name;
    const held = new Map(state.peers.map((p) => [p.publicKey, p]));
    const told = this.told.get(name);
    if (state.privateKey !== opened.iface.privateKey || state.listenPort !== opened.iface.listenPort) {
      this.log.warn({ device: name, listenPort: state.listenPort }, 'WireGuard device lost its key or port; setting them again');
      await opened.device.update(opened.iface, { remove: [], write: [] });
    }
    if (told) {
      const drift = diffPeers(told, held);
      if (!isEmptyChange(drift)) {
        this.log.info({ device: name, unknownPeers: drift.remove.length, missingOrChanged: drift.write.length }, 'WireGuard peers drifted from the leases; converging');
      }
    }
    return held;
  }

  private reportConflicts(now: readonly string[]): void {
    for (const sentence of now) if (!this.conflicts.has(sentence)) this.log.warn(sentence);
    this.conflicts = new Set(now);
  }
}
