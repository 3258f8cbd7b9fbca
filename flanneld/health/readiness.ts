/**
 * /readyz: upstream's meaning (ready once traffic rules are in and subnet.env is written) plus the two ways a
 * running node stops being able to carry traffic: its lease is lost, or the datapath cannot be programmed. Each
 * condition keeps its own reason, so the 503 body says exactly what is wrong.
 */

export type ReadinessCondition = 'started' | 'lease' | 'datapath';

export class Readiness {
  private readonly problems = new Map<ReadinessCondition, string>([['started', 'subnet.env not written yet']]);
  private readonly listeners = new Set<(ready: boolean) => void>();

  /** `reason` undefined clears the condition. */
  set(condition: ReadinessCondition, reason: string | undefined): void {
    const was = this.ready();
    if (reason === undefined) this.problems.delete(condition);
    else this.problems.set(condition, reason);
    const now = this.ready();
    if (now !== was) for (const listener of this.listeners) listener(now);
  }

  ready(): boolean {
    return this.problems.size === 0;
  }

  reasons(): string[] {
    return [...this.problems.values()];
  }

  onChange(listener: (ready: boolean) => void): void {
    this.listeners.add(listener);
  }
}
