/**
 * The one resync loop for both firewall modes (upstream runs it for iptables only; we extend it to nftables, see
 * docs/compatibility.md#traffic-rules): every --iptables-resync seconds check that our rules are all there, in order,
 * and re-apply the whole plan atomically when they are not. A repair is logged once per occurrence, a check that keeps
 * failing once per distinct error.
 */
import type { Logger } from 'pino';
import type { Clock } from '../runtime/clock.js';
import { repeatEvery } from '../runtime/repeat.js';
import type { TrafficManager, TrafficPlan } from './traffic-manager.js';

export interface KeepRulesDeps {
  readonly manager: TrafficManager;
  readonly clock: Clock;
  readonly log: Logger;
  readonly periodMs: number;
  /** Called after each repair (metrics). */
  readonly onRepair?: () => void;
  /** Called after each round that ended with the rules in place (liveness). */
  readonly onChecked?: () => void;
}

/** Settles when `signal` aborts. */
export function keepRules(plan: TrafficPlan, deps: KeepRulesDeps, signal: AbortSignal): Promise<void> {
  const { manager, log } = deps;
  return repeatEvery({ clock: deps.clock, periodMs: deps.periodMs, log: log.child({ manager: manager.kind }), failure: 'cannot check traffic rules' }, async () => {
    if (!(await manager.matches(plan, signal))) {
      log.warn({ manager: manager.kind }, 'Some traffic rules are missing; deleting and recreating rules');
      await manager.ensure(plan, signal);
      deps.onRepair?.();
    }
    deps.onChecked?.();
  }, signal);
}
