/**
 * The nodes a client may ride: those its config lists (`node` or `nodes`), and, for a fleet,
 * those its node's welcome names. The config's come first and keep their settings; a fleet's
 * node the config also lists (same host and port, or same certificate name) is the config's.
 */
import type {FleetPeer} from '../control/messages.js'
import type {ResolvedNodeEntry} from '../config/types.js'

export interface Candidate {
  /** host:port, the node's identity here. */
  key: string
  host: string
  port: number
  /** The name its certificate must carry. */
  name: string
  preference: number
  source: 'config' | 'fleet'
}

export function candidateKey(host: string, port: number): string {
  return `${host.toLowerCase()}:${port}`
}

export function mergeCandidates(configured: readonly ResolvedNodeEntry[], fleet: readonly FleetPeer[]): Candidate[] {
  const out = configured.map((n): Candidate => ({key: candidateKey(n.host, n.port), host: n.host, port: n.port, name: n.name, preference: n.preference, source: 'config'}))
  // The same node under another host (a name in the config, an address in the fleet) is found
  // by its certificate name: two entries for one node would have its tickets replace each other.
  const seen = new Set(out.flatMap((c) => [c.key, `name:${c.name}`]))
  for (const p of fleet) {
    const key = candidateKey(p.host, p.port)
    if (seen.has(key) || seen.has(`name:${p.name}`)) continue
    seen.add(key)
    seen.add(`name:${p.name}`)
    out.push({key, host: p.host, port: p.port, name: p.name, preference: 0, source: 'fleet'})
  }
  return out
}
