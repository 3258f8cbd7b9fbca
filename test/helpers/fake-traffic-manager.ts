/** A TrafficManager that records what it was asked and holds the "installed" plan in memory. */
import type { TrafficManager, TrafficPlan } from '../../flanneld/traffic/traffic-manager.js';

export class FakeTrafficManager implements TrafficManager {
  readonly calls: string[] = [];
  installed: TrafficPlan | undefined;

  constructor(readonly kind: 'iptables' | 'nftables') {}

  async ensure(plan: TrafficPlan): Promise<void> {
    this.calls.push('ensure');
    this.installed = plan;
  }

  async matches(plan: TrafficPlan): Promise<boolean> {
    this.calls.push('matches');
    return this.installed === plan;
  }

  randomFully = true;

  async supportsRandomFully(): Promise<boolean> {
    return this.randomFully;
  }

  async removeAll(): Promise<void> {
    this.calls.push('removeAll');
    this.installed = undefined;
  }

  /** Someone deleted our rules behind our back. */
  wipe(): void {
    this.installed = undefined;
  }
}
