/**
 * The iptables TrafficManager: per family and table, read the table with iptables-save, then apply one
 * `iptables-restore --noflush` payload, so each table changes atomically and nothing outside our chains and their
 * jumps is touched. Restores are serialised (upstream holds a mutex) so a resync never interleaves with removeAll.
 */
import type { Logger } from 'pino';
import type { Family } from '../ip/address.js';
import { ExecError, type Exec } from '../runtime/exec.js';
import {
  IPTABLES_CHAINS,
  hasRandomFullyAndWait,
  iptablesMatches,
  iptablesRules,
  iptablesTools,
  parseIptablesSave,
  parseIptablesVersion,
  renderIptablesRemoval,
  renderIptablesRestore,
  type IptablesChainRef,
  type SavedIptablesChain,
} from './render-iptables.js';
import type { TrafficManager, TrafficPlan } from './traffic-manager.js';
import { Serial } from '../runtime/serial.js';

export interface IptablesTrafficManagerDeps {
  readonly exec: Exec;
  readonly log?: Logger;
}

type Version = readonly [number, number, number];

export class IptablesTrafficManager implements TrafficManager {
  readonly kind = 'iptables' as const;
  private readonly exec: Exec;
  private readonly log: Logger | undefined;
  private version: Version | undefined;
  private readonly serial = new Serial();

  constructor(deps: IptablesTrafficManagerDeps) {
    this.exec = deps.exec;
    this.log = deps.log;
  }

  /** True when iptables accepts `--random-fully` (>= 1.6.2); the daemon turns plan.fullyRandom off otherwise. */
  async supportsRandomFully(signal: AbortSignal): Promise<boolean> {
    const version = await this.readVersion(signal);
    return version !== undefined && hasRandomFullyAndWait(version);
  }

  ensure(plan: TrafficPlan, signal: AbortSignal): Promise<void> {
    return this.serial.run(async () => {
      for (const family of plan.families) {
        const fam = family.clusterCidr.family;
        const wanted = iptablesRules(plan, family);
        // Chains the plan does not use (e.g. --ip-masq off) are removed, so turning a flag off takes effect.
        for (const ref of IPTABLES_CHAINS) {
          const want = wanted.find((w) => w.ref === ref);
          const saved = await this.save(fam, ref, signal);
          const payload = want ? renderIptablesRestore(want, saved) : renderIptablesRemoval(ref, saved);
          if (payload !== undefined) await this.restore(fam, payload, signal);
        }
      }
    });
  }

  async matches(plan: TrafficPlan, signal: AbortSignal): Promise<boolean> {
    for (const family of plan.families) {
      for (const want of iptablesRules(plan, family)) {
        const saved = await this.save(family.clusterCidr.family, want.ref, signal);
        if (!iptablesMatches(want, saved)) return false;
      }
    }
    return true;
  }

  /** Removes FLANNEL-POSTRTG (nat) and FLANNEL-FWD (filter) and their jumps, for both families, where present. */
  removeAll(signal: AbortSignal): Promise<void> {
    return this.serial.run(async () => {
      for (const fam of [4, 6] as const) {
        for (const ref of IPTABLES_CHAINS) {
          let saved: SavedIptablesChain;
          try {
            saved = await this.save(fam, ref, signal);
          } catch (err) {
            // No tool or no such table (legacy iptables without the module): nothing of ours can be there.
            if (!(err instanceof ExecError) || signal.aborted) throw err;
            this.log?.debug({ table: ref.table, family: fam, err: err.message }, 'cannot read table; nothing to remove');
            continue;
          }
          const payload = renderIptablesRemoval(ref, saved);
          if (payload !== undefined) await this.restore(fam, payload, signal);
        }
      }
    });
  }

  private async save(family: Family, ref: IptablesChainRef, signal: AbortSignal): Promise<SavedIptablesChain> {
    const { stdout } = await this.exec([iptablesTools(family).save, '-t', ref.table], { signal });
    return parseIptablesSave(stdout, ref);
  }

  private async restore(family: Family, payload: string, signal: AbortSignal): Promise<void> {
    const version = await this.readVersion(signal);
    // Without a readable version assume a current iptables: every supported distribution has 1.6.2 or later.
    const wait = version === undefined || hasRandomFullyAndWait(version) ? ['--wait'] : [];
    this.log?.debug({ family, payload }, 'iptables-restore');
    await this.exec([iptablesTools(family).restore, '--noflush', ...wait], { input: payload, signal });
  }

  private async readVersion(signal: AbortSignal): Promise<Version | undefined> {
    if (this.version) return this.version;
    try {
      const { stdout } = await this.exec(['iptables', '--version'], { signal });
      this.version = parseIptablesVersion(stdout);
    } catch (err) {
      if (!(err instanceof ExecError) || signal.aborted) throw err;
      this.log?.debug({ err: err.message }, 'cannot read the iptables version');
    }
    return this.version;
  }
}
