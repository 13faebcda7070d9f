/**
 * Running an agent in the foreground until a signal, and bringing one down from outside
 * (`agent down`), including after it crashed.
 */
import type {Logger} from './log.js'
import {StateFile, isAgentAlive} from './state/state-file.js'
import {teardown} from './state/teardown.js'

export interface RunningAgent {
  start(): Promise<void>
  stop(): Promise<void>
  /** Resolves if the agent ends by itself, with why. */
  readonly ended?: Promise<Error>
}

/** Start, then wait for SIGINT/SIGTERM (exit 0) or a fatal end (exit 1); always clean up. */
export async function runInForeground(agent: RunningAgent, log: Logger): Promise<number> {
  await agent.start()
  const code = await new Promise<number>((resolve) => {
    const onSignal = (sig: NodeJS.Signals) => {
      log.info(`${sig}: shutting down`)
      resolve(0)
    }
    process.once('SIGINT', onSignal)
    process.once('SIGTERM', onSignal)
    process.once('SIGHUP', onSignal)
    agent.ended?.then(() => resolve(1))
  })
  await agent.stop()
  log.info('stopped; everything it set up is removed')
  return code
}

export interface DownResult {
  /** The pid that was running and was stopped, if any. */
  stoppedPid: number | null
  /** True when a crashed run's leftovers were removed from its state record. */
  cleanedStale: boolean
}

/** Stop a running instance by SIGTERM and wait; or, if it died, undo what its state records. */
export async function bringDown(dir: string, name: string, log: Logger, timeoutMs = 15_000): Promise<DownResult> {
  const file = new StateFile(dir, name)
  const state = file.read()
  if (state === null) return {stoppedPid: null, cleanedStale: false}
  let stoppedPid: number | null = null
  if (state.pid !== process.pid && isAgentAlive(state.pid)) {
    process.kill(state.pid, 'SIGTERM')
    const deadline = Date.now() + timeoutMs
    while (isAgentAlive(state.pid)) {
      if (Date.now() > deadline) throw new Error(`agent "${name}" (pid ${state.pid}) did not stop within ${timeoutMs / 1000} s`)
      await new Promise((r) => setTimeout(r, 100))
    }
    stoppedPid = state.pid
  }
  // A clean stop removes the state file itself; if it is still there, the process died
  // without cleaning up, and we do it from the record.
  const left = file.read()
  if (left === null) return {stoppedPid, cleanedStale: false}
  const problems = await teardown(left, log)
  if (problems.length > 0) throw new Error(`cleanup of "${name}" incomplete: ${problems.join('; ')}`)
  file.remove()
  return {stoppedPid, cleanedStale: true}
}
