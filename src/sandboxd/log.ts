// sandboxd's logger: one JSON object per line on stderr, with pino's field names and numeric levels so the same
// tools read it. Not pino itself: sandboxd is bundled into one file that runs inside the sandbox, and a dozen lines
// are cheaper than bundling pino's worker-thread transports. stdout is never written here: it carries the protocol.
export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

const levels = { debug: 20, info: 30, warn: 40, error: 50 } as const;
type LevelName = keyof typeof levels;

export function createLogger(options: { level?: LevelName; write?: (line: string) => void; bindings?: Record<string, unknown> } = {}): Logger {
  const minimum = levels[options.level ?? 'info'];
  const write = options.write ?? ((line: string) => process.stderr.write(line));
  const bindings = { name: 'sandboxd', pid: process.pid, ...options.bindings };
  const emit = (level: LevelName) => (msg: string, fields?: Record<string, unknown>) => {
    if (levels[level] < minimum) return;
    let line: string;
    try {
      line = JSON.stringify({ level: levels[level], time: Date.now(), ...bindings, ...fields, msg });
    } catch {
      line = JSON.stringify({ level: levels[level], time: Date.now(), ...bindings, msg });
    }
    write(line + '\n');
  };
  return { debug: emit('debug'), info: emit('info'), warn: emit('warn'), error: emit('error') };
}

/** A logger that drops everything (the default in tests and library use). */
export const silentLogger: Logger = { debug() {}, info() {}, warn() {}, error() {} };
