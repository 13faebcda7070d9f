/**
 * A small leveled logger writing one human-readable line per event to stderr, the way an
 * operator reads a foreground daemon or journald. Control plane only: the data path counts,
 * it never logs per packet.
 */
export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error'
const ORDER: Record<LogLevel, number> = {trace: 10, debug: 20, info: 30, warn: 40, error: 50}

export interface Logger {
  trace(msg: string): void
  debug(msg: string): void
  info(msg: string): void
  warn(msg: string): void
  error(msg: string): void
  child(scope: string): Logger
  /** Changes the level of this logger and of every child made from it (a reload). */
  setLevel(level: LogLevel): void
}

export function createLogger(level: LogLevel = 'info', scope = 'agent', write = (line: string) => process.stderr.write(line)): Logger {
  return scoped({min: ORDER[level]}, scope, write)
}

/** Loggers that share one level. */
function scoped(level: {min: number}, scope: string, write: (line: string) => void): Logger {
  const at = (l: LogLevel) => (msg: string) => {
    if (ORDER[l] >= level.min) write(`${new Date().toISOString()} ${l.padEnd(5)} ${scope}: ${msg}\n`)
  }
  return {
    trace: at('trace'),
    debug: at('debug'),
    info: at('info'),
    warn: at('warn'),
    error: at('error'),
    child: (s) => scoped(level, `${scope}/${s}`, write),
    setLevel: (l) => {
      level.min = ORDER[l]
    },
  }
}
