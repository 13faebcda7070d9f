/**
 * Remove what crashed runs left behind (a SIGKILLed process runs no exit handler).
 *
 * Only names made by nsName with this prefix are considered, and only when the pid in the name is
 * no longer alive: a live process's namespaces are never touched. A pid reused by an unrelated
 * process makes us keep the leftovers (the safe mistake).
 */
import {readdirSync, rmSync} from 'node:fs'
import {join} from 'node:path'
import {checkPrefix, ownerPid, pidAlive} from './names.js'
import {deleteNamespace, listNamespaces} from './netns.js'
import {SCRATCH_ROOT} from './topology.js'

export interface StaleCleanup {
  /** Namespaces deleted. */
  namespaces: string[]
  /** Scratch directories removed. */
  dirs: string[]
}

function isStale(prefix: string, name: string): boolean {
  const pid = ownerPid(prefix, name)
  return pid !== undefined && pid !== process.pid && !pidAlive(pid)
}

export async function cleanupStale(prefix: string): Promise<StaleCleanup> {
  checkPrefix(prefix)
  const namespaces = (await listNamespaces()).filter((n) => isStale(prefix, n))
  // Processes still inside a dead run's namespace were started by that run: deleteNamespace kills them.
  for (const ns of namespaces) await deleteNamespace(ns)
  let entries: string[] = []
  try {
    entries = readdirSync(SCRATCH_ROOT)
  } catch {
    // No scratch root yet: nothing to remove.
  }
  const dirs = entries.filter((d) => isStale(prefix, d)).map((d) => join(SCRATCH_ROOT, d))
  for (const d of dirs) rmSync(d, {recursive: true, force: true})
  return {namespaces, dirs}
}
