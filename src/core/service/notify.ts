/**
 * Telling the service manager how the agent is doing, with the sd_notify(3) protocol: systemd
 * starts `agent@NAME.service` with `Type=notify` and a $NOTIFY_SOCKET, and the unit counts as
 * started when READY=1 arrives, not when the process exists (docs/service.md).
 *
 * What is said, and when (lifecycle.ts calls these):
 *   READY=1            once start() resolved: a node listens on its control port with its TUN
 *                      device, firewall and status socket in place; a client has its tunnel up
 *   RELOADING=1        a reload begins (SIGHUP, or `agent reload` through the status socket),
 *   MONOTONIC_USEC=…   with the time of CLOCK_MONOTONIC, as systemd ≥ 253 expects of it
 *   READY=1            the reload ended, applied or refused (the agent serves either way)
 *                      (a reload before the first READY=1 — a SIGHUP while starting — says
 *                      neither RELOADING=1 nor READY=1: only ready() says the agent serves)
 *   STOPPING=1         a stop began
 *   WATCHDOG=1         every half of $WATCHDOG_USEC, when the unit sets WatchdogSec=
 *   STATUS=…           a line for `systemctl status` with each of the above
 *
 * Without $NOTIFY_SOCKET (a terminal, a test, another service manager) there is no notifier and
 * nothing of this happens. A datagram that cannot be sent (the socket gone; EAGAIN when PID 1's
 * queue is full, as the send never blocks) is logged once per reason and never stops the agent:
 * it serves whether or not systemd hears about it.
 */
import type {Logger} from '../log.js'
import {loadAgentNative} from '../native/addon.js'

/** Sends one notification datagram (newline-separated KEY=VALUE lines); throws if it cannot. */
export type NotifySink = (message: string) => void

export interface NotifierOptions {
  /** $WATCHDOG_USEC: the watchdog interval systemd expects pings within (µs); none if undefined. */
  watchdogUsec?: number
  log?: Logger
  /** CLOCK_MONOTONIC in µs (tests). Node's hrtime is CLOCK_MONOTONIC (libuv's uv_hrtime). */
  monotonicUsec?: () => bigint
  /** Timers (tests). */
  setInterval?: (fn: () => void, ms: number) => {unref?: () => unknown}
  clearInterval?: (timer: unknown) => void
}

/** The variables sd_notify(3) reads; removed from the environment once taken (see fromEnv). */
export const NOTIFY_ENV = ['NOTIFY_SOCKET', 'WATCHDOG_USEC', 'WATCHDOG_PID'] as const

export class ServiceNotifier {
  /** Set by ready() only: before it, systemd must hear neither READY=1 nor RELOADING=1. */
  private isReady = false
  /** Reloads begun after ready(), which RELOADING=1 announced and READY=1 must close. */
  private reloads = 0
  /** Reloads begun before ready() (a SIGHUP or `agent reload` while starting): never announced. */
  private early = 0
  private stopped = false
  /** The failures already logged, by errno (or message): each is logged once. */
  private readonly warned = new Set<string>()
  private readonly watchdog: unknown
  private readonly clear: (timer: unknown) => void
  private readonly now: () => bigint

  constructor(
    private readonly sink: NotifySink,
    private readonly opts: NotifierOptions = {},
  ) {
    this.now = opts.monotonicUsec ?? (() => process.hrtime.bigint() / 1000n)
    this.clear = opts.clearInterval ?? ((t) => clearInterval(t as NodeJS.Timeout))
    const usec = opts.watchdogUsec
    if (usec !== undefined && Number.isFinite(usec) && usec > 0) {
      // Half the interval, as sd_watchdog_enabled(3) advises; at least every 10 ms, and at most
      // every 2^31-1 ms, the longest delay Node's timers hold (a longer one becomes 1 ms).
      const timer = (opts.setInterval ?? setInterval)(() => this.send('WATCHDOG=1'), watchdogIntervalMs(usec))
      // The pings must never keep a stopped agent alive.
      timer.unref?.()
      this.watchdog = timer
    }
  }

  /**
   * The notifier for this process, or undefined when no service manager listens (no
   * $NOTIFY_SOCKET). It takes the variables out of the environment, as sd_notify's
   * unset_environment does, so the commands the agent runs (ip, iptables...) do not inherit a
   * socket that is not theirs. WATCHDOG_USEC counts only when WATCHDOG_PID is unset or ours.
   */
  static fromEnv(opts: Omit<NotifierOptions, 'watchdogUsec'> & {env?: NodeJS.ProcessEnv; sink?: NotifySink} = {}): ServiceNotifier | undefined {
    const env = opts.env ?? process.env
    const socket = env.NOTIFY_SOCKET
    const watchdogPid = env.WATCHDOG_PID
    const watchdogUsec = env.WATCHDOG_USEC
    for (const k of NOTIFY_ENV) delete env[k]
    if (socket === undefined || socket === '') return undefined
    const forUs = watchdogPid === undefined || watchdogPid === '' || Number(watchdogPid) === process.pid
    const usec = forUs && watchdogUsec !== undefined && /^\d+$/.test(watchdogUsec) ? Number(watchdogUsec) : undefined
    return new ServiceNotifier(opts.sink ?? nativeSink(socket), {...opts, watchdogUsec: usec})
  }

  /** start() resolved: the agent serves. */
  ready(status = 'running'): void {
    if (this.stopped) return
    this.isReady = true
    this.send(`READY=1\nSTATUS=${oneLine(status)}`)
  }

  /**
   * A reload begins; nested or overlapping reloads say READY=1 once, after the last one. Before
   * ready() nothing is said: READY=1 after such a reload would tell systemd the agent serves while
   * start() is still running (or has failed); ready() says it when it is true.
   */
  reloading(): void {
    if (this.stopped) return
    if (!this.isReady) {
      this.early++
      return
    }
    if (this.reloads++ === 0) this.send(`RELOADING=1\nMONOTONIC_USEC=${this.now()}\nSTATUS=reloading the config`)
  }

  /** A reload ended, whether it applied the file or refused it: the agent serves on. */
  reloaded(status = 'running'): void {
    // Which reload ended is not known; the early ones are counted off first, so that READY=1
    // still comes once, after the last of the announced ones has ended.
    if (this.early > 0) {
      this.early--
      return
    }
    if (this.reloads === 0) return
    if (--this.reloads === 0 && !this.stopped) this.send(`READY=1\nSTATUS=${oneLine(status)}`)
  }

  /** A stop began; nothing but this is said after it. */
  stopping(status = 'stopping'): void {
    if (this.stopped) return
    this.stopped = true
    this.close()
    this.send(`STOPPING=1\nSTATUS=${oneLine(status)}`)
  }

  /** A line for `systemctl status`. */
  status(text: string): void {
    if (!this.stopped) this.send(`STATUS=${oneLine(text)}`)
  }

  /** Ends the watchdog pings. */
  close(): void {
    if (this.watchdog !== undefined) this.clear(this.watchdog)
  }

  private send(message: string): void {
    try {
      this.sink(message)
    } catch (e) {
      // Once per reason: a socket that is gone stays gone, a full queue (EAGAIN: the send never
      // blocks, notify.c) comes back with every ping, and the agent's own work matters more. A
      // new reason is still said, so a passing EAGAIN does not hide a socket gone later.
      const err = e as Error & {errno?: number}
      const key = err.errno !== undefined ? `errno ${err.errno}` : err.message
      if (this.warned.has(key)) return
      this.warned.add(key)
      this.opts.log?.warn(`cannot notify the service manager: ${err.message}`, {event: 'service.notify_failed', reason: err.message, ...(err.errno === undefined ? {} : {errno: err.errno})})
    }
  }
}

/** The longest delay setInterval holds: 2^31-1 ms (about 24.8 days). */
export const MAX_TIMER_MS = 2 ** 31 - 1

/** The watchdog ping interval for $WATCHDOG_USEC: half of it, within [10 ms, MAX_TIMER_MS]. */
export function watchdogIntervalMs(usec: number): number {
  return Math.min(MAX_TIMER_MS, Math.max(10, Math.floor(usec / 2000)))
}

/** STATUS= is one line: anything after a newline would be read as another variable. */
function oneLine(text: string): string {
  return text.replace(/[\r\n]+/g, ' ').slice(0, 200)
}

/** The addon's sender (src/core/native/notify.c) bound to one socket address. */
export function nativeSink(socket: string): NotifySink {
  return (message) => {
    const send = loadAgentNative().notify
    if (send === undefined) throw new Error('the native addon has no notify (rebuild it)')
    send(socket, message)
  }
}
