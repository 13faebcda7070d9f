/** Gathering and printing the status of every instance found in a run directory. */
import {readdirSync} from 'node:fs'
import {StateFile, isAgentAlive} from '../state/state-file.js'
import {checkRunDir} from '../state/run-dir.js'
import type {ControlReport, EventsReport, RosterReport, SelectionReport, StatusReport, TotalsReport} from './report.js'
import {queryStatus} from './server.js'

export type InstanceStatus = StatusReport | {name: string; pid: number; state: 'not running (stale state: run `agent down`)' | 'not answering'}

/** Throws if the run directory exists but is not safe to trust (run-dir.ts). */
export async function collectStatus(dir: string, only?: string): Promise<InstanceStatus[]> {
  if (!checkRunDir(dir)) return []
  let names: string[]
  try {
    names = readdirSync(dir)
      .filter((f) => f.endsWith('.json'))
      .map((f) => f.slice(0, -'.json'.length))
  } catch {
    return []
  }
  if (only !== undefined) names = names.filter((n) => n === only)
  const out: InstanceStatus[] = []
  for (const name of names.sort()) {
    const file = new StateFile(dir, name)
    const state = file.read()
    if (state === null) continue
    if (!isAgentAlive(state.pid, state.startTime, state.bootId)) {
      out.push({name, pid: state.pid, state: 'not running (stale state: run `agent down`)'})
      continue
    }
    try {
      out.push(await queryStatus(file.socketPath))
    } catch {
      out.push({name, pid: state.pid, state: 'not answering'})
    }
  }
  return out
}

export function formatStatus(all: InstanceStatus[]): string {
  if (all.length === 0) return 'no agent is running'
  return all.map(formatOne).join('\n\n')
}

function rosterLine(r: RosterReport): string {
  const who = `${r.listed} listed${r.any ? ' + any certificate of the CA' : ''}`
  const crl = r.crl === undefined ? '' : `; CRL${r.crl.number === undefined ? '' : ` #${r.crl.number}`}, next update ${r.crl.nextUpdate ?? '-'}${r.crl.expired ? ' (PAST: re-issue it)' : ''}${r.crl.error === undefined ? '' : `, not applied: ${r.crl.error}`}`
  return `roster ${who}, ${r.connected} connected, ${r.revoked} revoked${crl}`
}

function controlLine(c: ControlReport): string {
  const closed = [`${c.sourceFull} over a source's limit`, `${c.evicted} evicted`, `${c.expired} past the deadline`]
  const quiet = c.logSuppressed > 0 ? `; ${c.logSuppressed} log line(s) suppressed` : ''
  return `control port ${c.pending} unauthenticated now; closed unauthenticated: ${closed.join(', ')}${quiet}`
}

/** Only counts that moved: a quiet node's status stays short. */
const moved = (counts: Record<string, number>) =>
  Object.entries(counts)
    .filter(([, v]) => v > 0)
    .map(([k, v]) => `${k}=${v}`)
    .join(' ') || 'none'

function totalsLine(t: TotalsReport): string {
  return `since start: received ${t.rxPackets} packets (${bytes(t.rxBytes)}), sent ${t.txPackets} (${bytes(t.txBytes)}); drops ${moved(t.drops)}`
}

/** Null when nothing happened yet. */
function eventsLine(e: EventsReport): string | null {
  const parts = [
    ...(Object.values(e.handshakes).some((v) => v > 0) ? [`handshakes ${moved(e.handshakes)}`] : []),
    ...(Object.values(e.reloads).some((v) => v > 0) ? [`reloads ${moved(e.reloads)}`] : []),
    ...(e.revocations > 0 ? [`revocations ${e.revocations}`] : []),
  ]
  return parts.length === 0 ? null : parts.join('; ')
}

function formatOne(s: InstanceStatus): string {
  if (!('role' in s)) return `${s.name} (pid ${s.pid}): ${s.state}`
  const head = [
    `${s.role} ${s.name} (pid ${s.pid}) ${s.state}, transport ${s.transport}`,
    `  interface ${s.interface} ${s.address ?? '-'} mtu ${s.mtu ?? '-'}, ${s.role === 'node' ? 'listening on' : 'node'} ${s.endpoint}`,
  ]
  if (s.roster !== undefined) head.push(`  ${rosterLine(s.roster)}`)
  if (s.control !== undefined) head.push(`  ${controlLine(s.control)}`)
  if (s.fleet !== undefined) {
    const f = s.fleet
    head.push(
      `  fleet ${f.prefix}: etcd ${f.state} since ${f.since}${f.lastError === undefined ? '' : ` (${f.lastError})`}, revision ${f.revision}, ` +
        `${f.clients} client(s), ${f.revokedNames + f.revokedSerials} revocation(s), ${f.nodes} node(s)${f.registered ? '' : ', this node not registered'}`,
    )
  }
  if (s.totals !== undefined) head.push(`  ${totalsLine(s.totals)}`)
  const events = s.events === undefined ? null : eventsLine(s.events)
  if (events !== null) head.push(`  ${events}`)
  const drops = Object.entries(s.counters).filter(([, v]) => v > 0)
  if (drops.length > 0) head.push(`  counters ${drops.map(([k, v]) => `${k}=${v}`).join(' ')}`)
  if (s.workers !== undefined) {
    const lanes = s.workers.map((w, i) => `${i === 0 ? 'main' : i}: rx ${w.rxPackets} tx ${w.txPackets}${w.handedOff > 0 ? ` handed off ${w.handedOff}` : ''}${w.handoffDrops > 0 ? ` dropped ${w.handoffDrops}` : ''}`)
    head.push(`  workers ${s.workers.length} (packets) ${lanes.join(', ')}`)
  }
  const nodes = s.selection === undefined ? [] : selectionLines(s.selection)
  if (s.peers.length === 0) return [...head, `  no ${s.role === 'node' ? 'client' : 'node'} connected`, ...nodes].join('\n')
  const rows = s.peers.map((p) => [
    p.name,
    p.address,
    p.endpoint,
    bytes(p.rxBytes),
    bytes(p.txBytes),
    p.lastSeen === null ? 'never' : `${Math.round((Date.now() - Date.parse(p.lastSeen)) / 1000)}s ago`,
    p.worker === undefined ? (p.path ?? '-') : `${p.path} w${p.worker}`,
    Object.entries(p.drops)
      .map(([k, v]) => `${k}=${v}`)
      .join(' ') || '-',
  ])
  return [...head, table(['peer', 'tunnel address', 'endpoint', 'received', 'sent', 'last seen', 'path', 'drops'], rows), ...nodes].join('\n')
}

const ms = (v: number | null) => (v === null ? '-' : `${v.toFixed(1)} ms`)
const pct = (v: number) => `${Math.round(v * 100)}%`

/** A client's nodes: each one's RTT, on to the game, loss and score; and its moves. */
function selectionLines(sel: SelectionReport): string[] {
  const basis =
    sel.basis === 'path'
      ? 'ranked by RTT to the node + on to the game servers'
      : 'ranked by RTT to the node alone (some node measures no game server)'
  const rows = sel.candidates.map((c) => [
    `${c.current ? '* ' : '  '}${c.name}`,
    c.endpoint,
    ms(c.rttMs),
    c.game.length === 0 ? 'not measured' : ms(c.gameMs),
    `${pct(c.loss)}/${pct(c.gameLoss)}`,
    c.score === null ? '-' : c.score.toFixed(1),
    c.problem ?? (c.source === 'fleet' ? 'from the fleet' : ''),
  ])
  const moves = sel.recent.slice(-3).map((m) => `  ${m.at} ${m.from} -> ${m.to}: ${m.reason}`)
  return [
    `  nodes: ${sel.candidates.length}, ${basis}; ${sel.switches} move(s)`,
    table(['node', 'endpoint', 'rtt', 'to the game', 'loss', 'score', 'note'], rows),
    ...moves,
  ]
}

function bytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let i = 0
  let v = n
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024
    i++
  }
  return i === 0 ? `${v} B` : `${v.toFixed(1)} ${units[i]}`
}

function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)))
  const line = (cells: string[]) => '  ' + cells.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd()
  return [line(header), ...rows.map(line)].join('\n')
}
