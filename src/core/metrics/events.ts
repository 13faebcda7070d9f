/**
 * Counts of what happened, from the events the agent already logs (docs/logging.md): the
 * logger is wrapped, and each line's `event` is counted before the level decides whether it
 * is written, so a quiet log level or a rate-limited flood (log-limit.ts) counts all the same.
 * Control plane only: no event is logged per packet.
 *
 *   handshakes{result}: ok (a session began), refused (the roster, or the node, said no),
 *                       failed (the node's TLS handshake failed)
 *   reloads{result}:    ok, refused (counted by the agent's reload(), whichever way it came)
 *   revocations:        live sessions cut because the roster no longer admits them
 */
import type {LogFields, Logger} from '../log.js'
import type {EventsReport} from '../status/report.js'

const HANDSHAKE_EVENTS: Record<string, string> = {
  // The node's side.
  'client.connected': 'ok',
  'client.refused': 'refused',
  'handshake.failed': 'failed',
  // The client's side.
  'node.connected': 'ok',
  'node.refused': 'refused',
}

export const HANDSHAKE_RESULTS = ['ok', 'refused', 'failed'] as const
export const RELOAD_RESULTS = ['ok', 'refused'] as const

export class AgentEvents {
  readonly handshakes: Record<string, number> = {ok: 0, refused: 0, failed: 0}
  readonly reloads: Record<string, number> = {ok: 0, refused: 0}
  revocations = 0

  /** Counts one line's event, written or not. */
  note(fields: LogFields | undefined): void {
    const event = fields?.event
    if (event === undefined) return
    // log-limit.ts's "N more line(s) suppressed" line carries the kind's event and a numeric
    // `suppressed`: those N lines were counted one by one (suppressed()), and the summary is
    // not one more of them.
    if (typeof fields?.suppressed === 'number') return
    const result = HANDSHAKE_EVENTS[event]
    if (result !== undefined) this.handshakes[result]++
    else if (event === 'session.cut' && fields?.refused === true) this.revocations++
  }

  /** A logger that counts the events of every line (and of its children's) before writing as `log` would. */
  tap(log: Logger): Logger {
    const at =
      (level: 'trace' | 'debug' | 'info' | 'warn' | 'error') =>
      (msg: string, fields?: LogFields): void => {
        this.note(fields)
        log[level](msg, fields)
      }
    return {
      trace: at('trace'),
      debug: at('debug'),
      info: at('info'),
      warn: at('warn'),
      error: at('error'),
      child: (scope) => this.tap(log.child(scope)),
      setLevel: (level) => log.setLevel(level),
      suppressed: (fields) => {
        this.note(fields)
        log.suppressed?.(fields)
      },
    }
  }

  /** Counts a reload by how it ended; returns it unchanged. */
  reload<T>(run: Promise<T>): Promise<T> {
    run.then(
      () => this.reloads.ok++,
      () => this.reloads.refused++,
    )
    return run
  }

  report(): EventsReport {
    return {handshakes: {...this.handshakes}, reloads: {...this.reloads}, revocations: this.revocations}
  }
}
