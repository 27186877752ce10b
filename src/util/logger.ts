// Structured logs (pino). The server logs to stderr; each job also gets logs/orchestrator.log in its directory.
// Nothing here writes to stdout, which belongs to the CLI's output.
import { pino, type Logger } from 'pino';

export function createLogger(level: string, destination: number | string = 2): Logger {
  return pino({ level, base: undefined, timestamp: pino.stdTimeFunctions.isoTime }, pino.destination({ dest: destination, sync: false, mkdir: true }));
}

/** A logger writing to one job's log file. Call `close()` when the job ends. */
export function fileLogger(level: string, file: string, bindings: Record<string, unknown>): { logger: Logger; close(): void } {
  const stream = pino.destination({ dest: file, sync: true, mkdir: true });
  const logger = pino({ level: level === 'silent' ? 'info' : level, base: undefined, timestamp: pino.stdTimeFunctions.isoTime }, stream).child(bindings);
  return { logger, close: () => stream.end() };
}
