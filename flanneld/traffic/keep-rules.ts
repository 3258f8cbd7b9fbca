/**
 * The one resync loop for both firewall modes (upstream runs it for iptables only; compat.md's Decision extends
 * it to nftables): every --iptables-resync seconds check that our rules are all there, in order, and re-apply
 * the whole plan atomically when they are not. A repair is logged once per occurrence, a check that keeps
 * failing once per distinct error.
 */
import type { Logger } from 'pino';
import type { Clock } from '../runtime/clock.js';
import { errorMessage } from '../runtime/errors.js';
import type { TrafficManager, TrafficPlan } from './traffic-manager.js';

export interface KeepRulesDeps {
  readonly manager: TrafficManager;
  readonly clock: Clock;
  readonly log: Logger;
  readonly periodMs: number;
  /** Called after each repair (metrics). */
  readonly onRepair?: () => void;
}

/** Settles when `signal` aborts. */
export async function keepRules(plan: TrafficPlan, deps: KeepRulesDeps, signal: AbortSignal): Promise<void> {
  let lastError = '';
  while (!signal.aborted) {
    try {
      await deps.clock.sleep(deps.periodMs, signal);
    } catch {
      return;
    }
    try {
      if (!(await deps.manager.matches(plan, signal))) {
        deps.log.warn({ manager: deps.manager.kind }, 'Some traffic rules are missing; deleting and recreating rules');
        await deps.manager.ensure(plan, signal);
        deps.onRepair?.();
      }
      lastError = '';
    } catch (err) {
      if (signal.aborted) return;
      if (errorMessage(err) !== lastError) deps.log.error({ err: errorMessage(err), manager: deps.manager.kind }, 'cannot check traffic rules');
      lastError = errorMessage(err);
    }
  }
}
