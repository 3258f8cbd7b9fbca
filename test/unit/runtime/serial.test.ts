import { describe, expect, it } from 'vitest';
import { Serial } from '../../../flanneld/runtime/serial.js';

describe('Serial', () => {
  it('runs jobs one at a time in call order, and a failed job does not stop the next', async () => {
    const serial = new Serial();
    const events: string[] = [];
    let release: () => void = () => undefined;
    const first = serial.run(async () => {
      events.push('first starts');
      await new Promise<void>((r) => (release = r));
      events.push('first ends');
      throw new Error('first failed');
    });
    const second = serial.run(async () => {
      events.push('second runs');
      return 2;
    });
    await Promise.resolve();
    expect(events).toEqual(['first starts']);
    release();
    await expect(first).rejects.toThrow('first failed');
    await expect(second).resolves.toBe(2);
    expect(events).toEqual(['first starts', 'first ends', 'second runs']);
  });
});
