/**
 * The nftables TrafficManager: our own tables `ip flannel-ipv4` / `ip6 flannel-ipv6`, written with one `nft -f -`
 * transaction per ensure (atomic across families) and compared with `nft list table` on every resync (unlike upstream's
 * nftables mode, which never resyncs: docs/compatibility.md#traffic-rules). Transactions are serialised like iptables
 * restores.
 */
import type { Logger } from 'pino';
import { errorMessage } from '../runtime/errors.js';
import { ExecError, type Exec } from '../runtime/exec.js';
import {
  nftMatches,
  nftRules,
  parseNftTable,
  parseNftTableList,
  renderNftEnsure,
  renderNftFullyRandomProbe,
  renderNftRemoval,
} from './render-nft.js';
import type { TrafficManager, TrafficPlan } from './traffic-manager.js';
import { Serial } from '../runtime/serial.js';

export interface NftablesTrafficManagerDeps {
  readonly exec: Exec;
  readonly log?: Logger;
}

export class NftablesTrafficManager implements TrafficManager {
  readonly kind = 'nftables' as const;
  private readonly exec: Exec;
  private readonly log: Logger | undefined;
  private randomFully: boolean | undefined;
  private readonly serial = new Serial();

  constructor(deps: NftablesTrafficManagerDeps) {
    this.exec = deps.exec;
    this.log = deps.log;
  }

  /** True when `masquerade fully-random` passes an `nft --check` transaction (nothing is committed). */
  async supportsRandomFully(signal: AbortSignal): Promise<boolean> {
    if (this.randomFully !== undefined) return this.randomFully;
    try {
      await this.exec(['nft', '--check', '-f', '-'], { input: renderNftFullyRandomProbe(), signal });
      this.randomFully = true;
    } catch (err) {
      if (!(err instanceof ExecError) || signal.aborted) throw err;
      this.log?.debug({ err: err.message }, 'nft rejects masquerade fully-random');
      // A missing nft binary says nothing about support; only a rejection by nft is remembered.
      if (err.exitCode !== null) this.randomFully = false;
    }
    return this.randomFully ?? false;
  }

  ensure(plan: TrafficPlan, signal: AbortSignal): Promise<void> {
    return this.serial.run(async () => {
      if (plan.families.length === 0) return;
      const script = renderNftEnsure(plan);
      this.log?.debug({ script }, 'nft -f');
      await this.exec(['nft', '-f', '-'], { input: script, signal });
    });
  }

  async matches(plan: TrafficPlan, signal: AbortSignal): Promise<boolean> {
    const wanted = plan.families.map((family) => nftRules(plan, family));
    if (wanted.length === 0) return true;
    const present = parseNftTableList((await this.exec(['nft', 'list', 'tables'], { signal })).stdout);
    for (const want of wanted) {
      const { family, name } = want.table;
      if (!present.has(`${family} ${name}`)) return false;
      const { stdout } = await this.exec(['nft', 'list', 'table', family, name], { signal });
      if (!nftMatches(want, parseNftTable(stdout))) return false;
    }
    return true;
  }

  /** Deletes both of our tables (and with them every chain and rule), tolerating their absence. */
  removeAll(signal: AbortSignal): Promise<void> {
    return this.serial.run(async () => {
      try {
        await this.exec(['nft', '-f', '-'], { input: renderNftRemoval(), signal });
      } catch (err) {
        // Without an nft binary nobody could have created our tables through it.
        if (!toolMissing(err) || signal.aborted) throw err;
        this.log?.debug({ err: errorMessage(err) }, 'no nft binary; nothing to remove');
      }
    });
  }
}

function toolMissing(err: unknown): boolean {
  return err instanceof ExecError && err.cause instanceof Error && (err.cause as NodeJS.ErrnoException).code === 'ENOENT';
}
