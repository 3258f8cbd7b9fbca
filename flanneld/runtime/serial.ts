/**
 * Runs async jobs one after another, in call order, whatever the earlier ones did: a failed job does not stop the
 * next. The firewall managers use one each, so a periodic resync never interleaves with a removal.
 */
export class Serial {
  private tail: Promise<unknown> = Promise.resolve();

  run<T>(work: () => Promise<T>): Promise<T> {
    const run = this.tail.then(work, work);
    this.tail = run.catch(() => undefined);
    return run;
  }
}
