import { pino, type Logger } from 'pino';

/** Silent unless TEST_LOG=debug (or another level) is set, to see a failing run's story. */
export function testLog(): Logger {
  return pino({ level: process.env['TEST_LOG'] ?? 'silent' });
}

export interface LogLine {
  readonly level: number;
  readonly msg: string;
  readonly [field: string]: unknown;
}

/** A debug-level pino logger that keeps every line in memory as parsed JSON, for asserting on what was logged. */
export function memoryLog(): { log: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const log = pino({ level: 'debug' }, { write: (line: string) => void lines.push(JSON.parse(line) as LogLine) });
  return { log, lines };
}
