/**
 * Step lines with timings. On a terminal the running step shows a spinner and its elapsed time on one line that is
 * rewritten in place; anywhere else (CI logs, pipes) each step is one plain line, so captured output stays readable.
 */

export interface ProgressOutput {
  write(text: string): unknown;
  readonly isTTY?: boolean;
}

export interface Progress {
  /** Runs `work` as one step; the line ends with `done (N ms)` and `detail(result)` if given, or `failed`. */
  step<T>(text: string, work: () => Promise<T>, detail?: (result: T) => string): Promise<T>;
}

const FRAMES = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

export function createProgress(out: ProgressOutput, now: () => number = Date.now): Progress {
  return {
    async step<T>(text: string, work: () => Promise<T>, detail?: (result: T) => string): Promise<T> {
      const started = now();
      let timer: NodeJS.Timeout | undefined;
      if (out.isTTY) {
        let frame = 0;
        const draw = (): void => {
          const seconds = ((now() - started) / 1000).toFixed(1);
          out.write(`\r\x1b[K${FRAMES[frame++ % FRAMES.length]} ${text} … ${seconds} s`);
        };
        draw();
        timer = setInterval(draw, 80);
      } else {
        out.write(`• ${text} … `);
      }
      const finish = (mark: string, outcome: string): void => {
        if (timer) clearInterval(timer);
        const took = `${outcome} (${now() - started} ms)`;
        out.write(out.isTTY ? `\r\x1b[K${mark} ${text} … ${took}\n` : `${took}\n`);
      };
      try {
        const result = await work();
        const extra = detail?.(result);
        finish('✔', extra ? `done, ${extra}` : 'done');
        return result;
      } catch (err) {
        finish('✘', 'failed');
        throw err;
      }
    },
  };
}
