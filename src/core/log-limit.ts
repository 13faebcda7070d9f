/**
 * Log lines that a stranger can trigger (a failed handshake, a refused certificate, a closed
 * connection), limited per kind: a flood must not fill the disk or bury what matters. Each
 * kind gets `lines` lines per window; past that its lines are counted, and when the window
 * ends one line says how many were suppressed: in JSON, with the kind's `event` and a numeric
 * `suppressed` field (docs/logging.md).
 */
import type {LogFields, Logger} from './log.js'

export const LOG_LIMIT_LINES = 10
export const LOG_LIMIT_WINDOW_MS = 10_000

interface Window {
  started: number
  written: number
  suppressed: number
  timer: NodeJS.Timeout | null
  /** The kind's event name, for the suppression line. */
  event: string
}

export class LogLimiter {
  private readonly windows = new Map<string, Window>()
  /** Lines suppressed since start, all kinds. */
  suppressedTotal = 0

  constructor(
    private readonly log: Logger,
    private readonly lines = LOG_LIMIT_LINES,
    private readonly windowMs = LOG_LIMIT_WINDOW_MS,
    private readonly now: () => number = Date.now,
  ) {}

  /** `fields.event` names the kind's lines, and its suppression line, in JSON. */
  warn(kind: string, message: string, fields?: LogFields): void {
    const now = this.now()
    let w = this.windows.get(kind)
    if (w === undefined || now - w.started >= this.windowMs) {
      if (w !== undefined) this.report(kind, w)
      w = {started: now, written: 0, suppressed: 0, timer: null, event: fields?.event ?? 'log'}
      this.windows.set(kind, w)
    }
    if (w.written < this.lines) {
      w.written++
      this.log.warn(message, fields)
      return
    }
    w.suppressed++
    this.suppressedTotal++
    this.log.suppressed?.(fields)
    if (w.timer === null) {
      // Said when the window ends even if nothing else of this kind comes.
      const win = w
      win.timer = setTimeout(() => {
        if (this.windows.get(kind) === win) this.windows.delete(kind)
        this.report(kind, win)
      }, Math.max(0, win.started + this.windowMs - now))
      win.timer.unref()
    }
  }

  /** Say what is still suppressed now (the node is stopping). */
  flush(): void {
    for (const [kind, w] of this.windows) this.report(kind, w)
    this.windows.clear()
  }

  private report(kind: string, w: Window): void {
    if (w.timer !== null) clearTimeout(w.timer)
    w.timer = null
    if (w.suppressed === 0) return
    this.log.warn(`${kind}: ${w.suppressed} more line(s) suppressed in ${Math.round(this.windowMs / 1000)} s`, {event: w.event, suppressed: w.suppressed})
    w.suppressed = 0
  }
}
