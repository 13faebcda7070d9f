/**
 * Undoing what `agent up` changed, from its state record: used by a clean stop, by
 * `agent down`, and by the next `up` after a kill -9. Every step tolerates "already gone",
 * and one failing step does not stop the others.
 */
import type {Logger} from '../log.js'
import {removeFirewall} from '../firewall/index.js'
import {removeRoutes} from '../routes/index.js'
import {releaseIpForward} from './ip-forward.js'
import {type AgentState, type StateFile, isAgentAlive} from './state-file.js'

/**
 * Undoes what `state` records; returns what could not be undone (empty: all of it).
 *
 * The TUN device is not a step: it is never persistent, so it disappears with the descriptor
 * of the process that opened it. Deleting "the interface named in the record" would delete
 * whatever device has that name now, e.g. the TUN of another instance that was started after
 * this one failed.
 */
export async function teardown(state: AgentState, log: Logger): Promise<string[]> {
  const problems: string[] = []
  const step = async (what: string, fn: () => Promise<unknown>) => {
    try {
      await fn()
    } catch (e) {
      problems.push(`${what}: ${(e as Error).message}`)
      log.warn(`cleanup: ${what} failed: ${(e as Error).message}`, {event: 'cleanup.failed', step: what, reason: (e as Error).message})
    }
  }
  await step('remove routes', () => removeRoutes(state.routes))
  if (state.firewall !== undefined) await step('remove firewall chains', () => removeFirewall(state.firewall!))
  // Put back only if no other live node of the namespace still forwards (ip-forward.ts).
  if (state.ipForwardBefore !== undefined) await step('restore net.ipv4.ip_forward', () => releaseIpForward(state, log))
  return problems
}

/**
 * The end of an agent's stop: tear down what `state` records, then remove the state file only
 * if that worked. With problems the record stays (`agent down` or the next `up` retries from
 * it) and only the status socket and this process's lock go. Returns the problems.
 *
 * An agent stopped before its reclaimStale() took the lock (a signal during start) has changed
 * nothing, and the record and firewall chains under its name may be another run's: then this
 * does nothing at all.
 */
export async function finishTeardown(state: AgentState, file: StateFile, log: Logger): Promise<string[]> {
  if (!file.holdsLock()) {
    log.debug(`stopped before taking the lock of "${file.name}": nothing of this run to remove`)
    return []
  }
  const problems = await teardown(state, log)
  if (problems.length === 0) {
    file.remove()
  } else {
    file.removeSocket()
    file.release()
    log.warn(`cleanup incomplete; keeping ${file.path} so that \`agent down\` can retry`, {event: 'cleanup.incomplete', file: file.path})
  }
  return problems
}

/**
 * Before `up`: take the instance's lock (so a concurrent `up` of the same name fails here),
 * refuse if this instance is already running, otherwise clean whatever a crashed predecessor
 * left (its state file says what). On success the lock stays held: StateFile.remove() (or
 * finishTeardown) releases it. On failure it is released.
 */
export async function reclaimStale(file: StateFile, log: Logger): Promise<void> {
  file.acquire()
  try {
    const old = file.read()
    if (old === null) return
    if (old.pid !== process.pid && isAgentAlive(old.pid, old.startTime, old.bootId)) {
      throw new Error(`agent "${file.name}" is already running (pid ${old.pid}); stop it with \`agent down\` first`)
    }
    log.warn(`found state of a previous run of "${file.name}" (pid ${old.pid}, not running): cleaning up after it`, {event: 'cleanup.stale', pid: old.pid})
    const problems = await teardown(old, log)
    // Go on regardless (as before): this run re-applies its own firewall chains over any left.
    if (problems.length > 0) log.warn(`some of what the previous run of "${file.name}" set up may remain: ${problems.join('; ')}`, {event: 'cleanup.incomplete', problems})
    file.removeRecord()
  } catch (e) {
    file.release()
    throw e
  }
}
