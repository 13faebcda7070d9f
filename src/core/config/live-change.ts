/**
 * What a reload may change in a running agent. A running node or client re-reads its config;
 * the fields that can be applied live are listed per role, and any other field that differs
 * makes the reload refuse, naming the field, before anything is changed.
 */
import type {ResolvedConfig} from './types.js'

/** Fields a reload applies live (a path, or the prefix of a path, in the resolved config). */
export const LIVE_FIELDS: Record<ResolvedConfig['role'], readonly string[]> = {
  // The roster and its revocations, and how the node watches its sessions and what it logs.
  // log.format is not live: a log shipper's parser expects one format for a process's life.
  node: ['clients', 'admitAny', 'pki.crl', 'session', 'log.level'],
  // The destinations routed into the tunnel, the nodes it may ride, reconnect pacing, and the log level.
  client: ['routes', 'nodes', 'reconnect', 'log.level'],
}

/** Paths (a.b.c, list items as [i]) whose values differ between two configs, leaves only. */
export function changedPaths(a: unknown, b: unknown, path = ''): string[] {
  if (Object.is(a, b)) return []
  const bothObjects = a !== null && b !== null && typeof a === 'object' && typeof b === 'object'
  if (!bothObjects || Array.isArray(a) !== Array.isArray(b)) return [path]
  if (Array.isArray(a) && Array.isArray(b)) {
    // A list is one value: say "routes", not "routes[3]" after an insertion shifted them.
    return JSON.stringify(a) === JSON.stringify(b) ? [] : [path]
  }
  const ra = a as Record<string, unknown>
  const rb = b as Record<string, unknown>
  const keys = [...new Set([...Object.keys(ra), ...Object.keys(rb)])].sort()
  return keys.flatMap((k) => changedPaths(ra[k], rb[k], path === '' ? k : `${path}.${k}`))
}

function isLive(path: string, live: readonly string[]): boolean {
  return live.some((f) => path === f || path.startsWith(`${f}.`))
}

export interface LiveChange {
  /** Changed fields a reload applies. */
  live: string[]
  /** Changed fields that need a restart. */
  refused: string[]
}

/**
 * Sorts what differs between the running config and the new one. The file's own location
 * (file, dir) is not a setting: the same settings moved to another file change nothing.
 */
export function classifyChange(running: ResolvedConfig, next: ResolvedConfig): LiveChange {
  if (running.role !== next.role) return {live: [], refused: ['role']}
  const strip = ({file: _f, dir: _d, ...rest}: ResolvedConfig) => rest
  const paths = changedPaths(strip(running), strip(next))
  const live = LIVE_FIELDS[running.role]
  return {live: paths.filter((p) => isLive(p, live)), refused: paths.filter((p) => !isLive(p, live))}
}

/** The error a refused reload reports. */
export function refusedMessage(refused: readonly string[]): string {
  const list = refused.join(', ')
  return `${refused.length === 1 ? `${list} cannot` : `these fields cannot`} change while the agent runs${refused.length === 1 ? '' : ` (${list})`}: restart it to apply; nothing was changed`
}
