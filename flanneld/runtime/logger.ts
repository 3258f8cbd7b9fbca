/**
 * The pino root logger, created once by main.ts. Logs go to stderr like upstream's klog. The klog-style `-v`
 * maps onto pino levels: 0 -> info, 1-4 -> debug, 5 and above -> trace.
 */
import { pino, type Logger } from 'pino';

export function levelForVerbosity(v: number): pino.Level {
  if (v >= 5) return 'trace';
  if (v >= 1) return 'debug';
  return 'info';
}

export function createRootLogger(v: number): Logger {
  return pino(
    { level: levelForVerbosity(v), base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime },
    pino.destination({ fd: 2, sync: true }),
  );
}
