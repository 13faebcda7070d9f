/**
 * Running an agent in the foreground until a signal, and bringing one down from outside
 * (`agent down`), including after it crashed.
 */
import type {Logger} from './log.js'
import type {ReloadObserver, ReloadResult} from './status/server.js'
import type {ServiceNotifier} from './service/notify.js'
import {StateFile, isAgentAlive} from './state/state-file.js'
import {teardown} from './state/teardown.js'
import {checkRunDir} from './state/run-dir.js'

export interface RunningAgent {
  /** Brings the agent up; rejects, with everything undone, if it cannot. */
  start(): Promise<void>
  /**
   * Undoes everything start() did; safe to call more than once and while start() is still
   * running (start() then settles, either way). Resolves with what could not be removed (see
   * finishTeardown): empty when everything is gone. `void` is taken as "nothing left".
   */
  stop(): Promise<readonly string[] | void>
  /** Resolves if the agent ends by itself, with why. */
  readonly ended?: Promise<Error>
  /** Re-reads the config file it runs from and applies what may change live (SIGHUP). */
  reload?(): Promise<ReloadResult>
  /**
   * Told around each reload the agent's status socket runs (`agent reload`); set by
   * runInForeground when a service manager listens. SIGHUP's reloads runInForeground tells itself.
   */
  reloadObserver?: ReloadObserver
}

/** The signals that stop a foreground agent. */
export const STOP_SIGNALS = ['SIGINT', 'SIGTERM'] as const
/** The signal that reloads one, as operators expect of OpenVPN, nginx and the like. */
export const RELOAD_SIGNAL = 'SIGHUP'

/** One line saying what a reload did. */
export function describeReload(r: ReloadResult): string {
  if (r.changed.length === 0) return 'reloaded: nothing changed'
  return `reloaded: ${r.changed.join(', ')} changed${r.effects.length > 0 ? `; ${r.effects.join('; ')}` : ''}`
}

/** Where runInForeground listens for signals: the process, or a test's emitter. */
export interface SignalSource {
  on(event: NodeJS.Signals, listener: (sig: NodeJS.Signals) => void): unknown
  off(event: NodeJS.Signals, listener: (sig: NodeJS.Signals) => void): unknown
}

/**
 * Start, then wait for SIGINT/SIGTERM or a fatal end; always clean up. SIGHUP reloads the
 * config (an agent without reload ignores it, rather than dying of it). The signal
 * handlers are in place before start(), so a signal while it runs (a client retrying an
 * unreachable node) stops the agent cleanly too; repeated signals during the stop are ignored
 * rather than killing it half-way.
 *
 * Returns the exit code: 0 after a stop caused by a signal that removed everything, 1 after a
 * fatal end or when something could not be removed (the state file is then kept for
 * `agent down`). Rejects with start()'s error if the agent could not start (and no signal came).
 *
 * `notifier` (a service manager listening, service/notify.ts) is told READY once start()
 * resolved, RELOADING then READY around each reload (SIGHUP or the status socket's; none for a
 * reload before READY, which the notifier keeps quiet), and STOPPING when a stop begins.
 */
export async function runInForeground(agent: RunningAgent, log: Logger, signals: SignalSource = process, notifier?: ServiceNotifier): Promise<number> {
  let signalled: NodeJS.Signals | null = null
  let onFirstSignal!: () => void
  const gotSignal = new Promise<'signal'>((resolve) => (onFirstSignal = () => resolve('signal')))
  let stopping: Promise<readonly string[]> | null = null
  const stop = (): Promise<readonly string[]> =>
    (stopping ??= Promise.resolve()
      .then(() => notifier?.stopping())
      .then(() => agent.stop())
      .then(
        (problems) => problems ?? [],
        (e: unknown) => [`stop failed: ${(e as Error)?.message ?? String(e)}`],
      ))
  const onSignal = (sig: NodeJS.Signals) => {
    if (signalled !== null) {
      log.warn(`${sig}: already shutting down (on ${signalled}); cleaning up first`, {event: 'agent.stopping', signal: sig})
      return
    }
    signalled = sig
    log.info(`${sig}: shutting down`, {event: 'agent.stopping', signal: sig})
    void stop()
    onFirstSignal()
  }
  const onReload = () => {
    if (signalled !== null) return
    if (agent.reload === undefined) return log.warn(`${RELOAD_SIGNAL}: this agent has nothing to reload`, {event: 'reload.unsupported', signal: RELOAD_SIGNAL})
    log.info(`${RELOAD_SIGNAL}: reloading the config`, {event: 'reload.requested', signal: RELOAD_SIGNAL})
    notifier?.reloading()
    agent
      .reload()
      .then(
        (r) => log.info(describeReload(r), {event: 'reload.done', changed: r.changed, effects: r.effects}),
        (e: Error) => log.error(`reload refused: ${e.message}`, {event: 'reload.refused', reason: e.message}),
      )
      .finally(() => notifier?.reloaded())
  }
  // `agent reload` comes through the status socket rather than a signal.
  if (notifier) agent.reloadObserver = {begin: () => notifier.reloading(), end: () => notifier.reloaded()}
  for (const s of STOP_SIGNALS) signals.on(s, onSignal)
  signals.on(RELOAD_SIGNAL, onReload)
  try {
    const started = agent.start().then(
      () => 'started' as const,
      (e: unknown) => ({error: e}),
    )
    const first = await Promise.race([started, gotSignal])
    if (first !== 'signal' && first !== 'started') {
      // It failed by itself; start() undid what it had done.
      if (signalled === null) throw first.error
    }
    let code = 0
    if (signalled === null) {
      notifier?.ready()
      // Up: run until a signal or until the agent ends by itself.
      const ended = agent.ended?.then(() => 'ended' as const) ?? new Promise<never>(() => {})
      if ((await Promise.race([gotSignal, ended])) === 'ended') code = 1
    }
    // After a signal during start() there is no waiting for start() to settle: stop() is what
    // makes it give up, and a client may never settle while it retries.
    const problems = await stop()
    if (problems.length > 0) {
      log.error(`stopped, but some of what it set up could not be removed: ${problems.join('; ')}; run \`agent down\` to retry`, {event: 'agent.stopped', problems})
      return 1
    }
    log.info('stopped; everything it set up is removed', {event: 'agent.stopped', problems: []})
    return code
  } finally {
    for (const s of STOP_SIGNALS) signals.off(s, onSignal)
    signals.off(RELOAD_SIGNAL, onReload)
    if (notifier) agent.reloadObserver = undefined
    notifier?.close()
  }
}

export interface DownResult {
  /** The pid that was running and was stopped, if any. */
  stoppedPid: number | null
  /** True when a crashed run's leftovers were removed from its state record. */
  cleanedStale: boolean
}

/** Stop a running instance by SIGTERM and wait; or, if it died, undo what its state records. */
export async function bringDown(dir: string, name: string, log: Logger, timeoutMs = 15_000): Promise<DownResult> {
  // The record says which pid to signal and what to delete: only one in a safe directory counts.
  if (!checkRunDir(dir)) return {stoppedPid: null, cleanedStale: false}
  const file = new StateFile(dir, name)
  const state = file.read()
  if (state === null) return {stoppedPid: null, cleanedStale: false}
  let stoppedPid: number | null = null
  const alive = () => isAgentAlive(state.pid, state.startTime, state.bootId)
  if (state.pid !== process.pid && alive()) {
    process.kill(state.pid, 'SIGTERM')
    const deadline = Date.now() + timeoutMs
    while (alive()) {
      if (Date.now() > deadline) throw new Error(`agent "${name}" (pid ${state.pid}) did not stop within ${timeoutMs / 1000} s`)
      await new Promise((r) => setTimeout(r, 100))
    }
    stoppedPid = state.pid
  }
  // A clean stop removes the state file itself; if it is still there, the process died
  // without cleaning up (or could not clean everything), and we do it from the record, holding
  // the instance's lock so that an `up` of the same name cannot start meanwhile.
  if (file.read() === null) return {stoppedPid, cleanedStale: false}
  file.acquire()
  try {
    const left = file.read()
    if (left === null) return {stoppedPid, cleanedStale: false}
    if (left.pid !== state.pid && left.pid !== process.pid && isAgentAlive(left.pid, left.startTime, left.bootId)) {
      throw new Error(`agent "${name}" was started again meanwhile (pid ${left.pid}); run \`agent down\` again to stop it`)
    }
    const problems = await teardown(left, log)
    if (problems.length > 0) throw new Error(`cleanup of "${name}" incomplete: ${problems.join('; ')}`)
    file.removeRecord()
    return {stoppedPid, cleanedStale: true}
  } finally {
    file.release()
  }
}
