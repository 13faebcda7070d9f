/**
 * Undoing what `agent up` changed, from its state record: used by a clean stop, by
 * `agent down`, and by the next `up` after a kill -9. Every step tolerates "already gone",
 * and one failing step does not stop the others.
 */
import type {Logger} from '../log.js'
import {removeFirewall} from '../firewall/index.js'
import {removeRoutes} from '../routes/index.js'
import {deleteLink} from '../routes/link.js'
import {setSysctl} from '../sys/sysctl.js'
import {type AgentState, type StateFile, isAgentAlive} from './state-file.js'

export async function teardown(state: AgentState, log: Logger): Promise<string[]> {
  const problems: string[] = []
  const step = async (what: string, fn: () => Promise<unknown>) => {
    try {
      await fn()
    } catch (e) {
      problems.push(`${what}: ${(e as Error).message}`)
      log.warn(`cleanup: ${what} failed: ${(e as Error).message}`)
    }
  }
  await step('remove routes', () => removeRoutes(state.routes))
  if (state.firewall !== undefined) await step('remove firewall chains', () => removeFirewall(state.firewall!))
  if (state.ipForwardBefore !== undefined && state.ipForwardBefore !== '1') {
    await step('restore net.ipv4.ip_forward', () => setSysctl('net.ipv4.ip_forward', state.ipForwardBefore!))
  }
  // A TUN device goes with the process that opened it; this only matters if one lingers.
  await step(`delete ${state.interface}`, () => deleteLink(state.interface, 'tun'))
  return problems
}

/**
 * Before `up`: refuse if this instance is already running; otherwise clean whatever a
 * crashed predecessor left (its state file says what).
 */
export async function reclaimStale(file: StateFile, log: Logger): Promise<void> {
  const old = file.read()
  if (old === null) return
  if (old.pid !== process.pid && isAgentAlive(old.pid)) {
    throw new Error(`agent "${file.name}" is already running (pid ${old.pid}); stop it with \`agent down\` first`)
  }
  log.warn(`found state of a previous run of "${file.name}" (pid ${old.pid}, not running): cleaning up after it`)
  await teardown(old, log)
  file.remove()
}
