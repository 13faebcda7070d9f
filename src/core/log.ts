/**
 * A small leveled logger writing one line per event to stderr, the way an operator reads a
 * foreground daemon or journald (`text`), or one JSON object per line for a log shipper
 * (`json`, docs/logging.md). Control plane only: the data path counts, it never logs per
 * packet, so one JSON.stringify per line costs nothing that matters.
 *
 * A call site may pass structured fields beside its message: `event`, a stable dotted name
 * (`client.connected`), and context (`peer`, `endpoint`, `reason`...). The text format ignores
 * them, so its lines stay what they were; the JSON format writes them next to the message.
 */
export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error'
export type LogFormat = 'text' | 'json'
export const LOG_FORMATS: readonly LogFormat[] = ['text', 'json']
const ORDER: Record<LogLevel, number> = {trace: 10, debug: 20, info: 30, warn: 40, error: 50}

/** A context field's value: what JSON says plainly (a list of names, an address, a count). */
export type LogValue = string | number | boolean | null | readonly string[]

export interface LogFields {
  /** A stable dotted name for what happened (docs/logging.md); `log` when a line has none. */
  event?: string
  [field: string]: LogValue | undefined
}

export interface Logger {
  trace(msg: string, fields?: LogFields): void
  debug(msg: string, fields?: LogFields): void
  info(msg: string, fields?: LogFields): void
  warn(msg: string, fields?: LogFields): void
  error(msg: string, fields?: LogFields): void
  child(scope: string): Logger
  /** Changes the level of this logger and of every child made from it (a reload). */
  setLevel(level: LogLevel): void
  /**
   * A line that was not written (log-limit.ts suppressed it): a logger that counts events
   * (metrics/events.ts) counts it all the same. Plain loggers have nothing to do.
   */
  suppressed?(fields?: LogFields): void
}

export interface LoggerOptions {
  level?: LogLevel
  format?: LogFormat
  /** The text format's prefix; `instance` when not given. */
  scope?: string
  /** The agent's config name (JSON `instance`); null before a config is read. */
  instance?: string
  /** The agent's role (JSON `role`); null before a config is read. */
  role?: 'node' | 'client'
  write?: (line: string) => void
  now?: () => Date
}

/** Fields every JSON line has, in this order, whatever a call site passes. */
const STABLE = new Set(['time', 'level', 'instance', 'role', 'scope', 'event', 'msg'])

/**
 * `createLogger(level, scope, write)`, as before, writes text; `createLogger({...})` chooses
 * the format and says who is logging.
 */
export function createLogger(level: LogLevel | LoggerOptions = 'info', scope = 'agent', write?: (line: string) => void): Logger {
  const o: LoggerOptions = typeof level === 'string' ? {level, scope, ...(write === undefined ? {} : {write})} : level
  const root: Root = {
    min: ORDER[o.level ?? 'info'],
    format: o.format ?? 'text',
    instance: o.instance ?? null,
    role: o.role ?? null,
    write: o.write ?? ((line: string) => process.stderr.write(line)),
    now: o.now ?? (() => new Date()),
  }
  return scoped(root, o.scope ?? o.instance ?? 'agent', null)
}

/** What every logger of one tree shares. */
interface Root {
  min: number
  readonly format: LogFormat
  readonly instance: string | null
  readonly role: 'node' | 'client' | null
  readonly write: (line: string) => void
  readonly now: () => Date
}

/** A logger of the tree: `scope` is the text prefix, `sub` the children's part of it (JSON `scope`). */
function scoped(root: Root, scope: string, sub: string | null): Logger {
  const at = (l: LogLevel) => (msg: string, fields?: LogFields) => {
    if (ORDER[l] < root.min) return
    const time = root.now().toISOString()
    root.write(root.format === 'json' ? jsonLine(root, time, l, sub, msg, fields) : `${time} ${l.padEnd(5)} ${scope}: ${msg}\n`)
  }
  return {
    trace: at('trace'),
    debug: at('debug'),
    info: at('info'),
    warn: at('warn'),
    error: at('error'),
    child: (s) => scoped(root, `${scope}/${s}`, sub === null ? s : `${sub}/${s}`),
    setLevel: (l) => {
      root.min = ORDER[l]
    },
  }
}

function jsonLine(root: Root, time: string, level: LogLevel, scope: string | null, msg: string, fields: LogFields | undefined): string {
  const record: Record<string, unknown> = {time, level, instance: root.instance, role: root.role}
  if (scope !== null) record.scope = scope
  record.event = typeof fields?.event === 'string' && fields.event !== '' ? fields.event : 'log'
  record.msg = msg
  if (fields !== undefined) {
    for (const [k, v] of Object.entries(fields)) if (v !== undefined && !STABLE.has(k)) record[k] = v
  }
  // JSON.stringify escapes quotes, backslashes and control characters (a newline in a
  // certificate's name stays inside its string) and lone surrogates, so one event is one line.
  return `${JSON.stringify(record)}\n`
}
