import { pino, type Logger } from 'pino';

/** Silent unless TEST_LOG=debug (or another level) is set, to see a failing run's story. */
export function testLog(): Logger {
  return pino({ level: process.env['TEST_LOG'] ?? 'silent' });
}
