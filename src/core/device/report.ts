import type {Peer} from './peer.js'
import type {FastPathStats} from './fast-path.js'
import type {PeerReport, TotalsReport} from '../status/report.js'
import type {DataPath} from './datapath.js'

export function peerReport(p: Peer): PeerReport {
  const s = p.stats
  s.sync?.()
  return {
    name: p.name,
    address: p.addressText,
    endpoint: p.link.endpoint,
    ...(p.session.id === undefined ? {} : {sessionId: p.session.id}),
    connectedAt: new Date(p.connectedAt).toISOString(),
    lastSeen: s.lastSeen === 0 ? null : new Date(s.lastSeen).toISOString(),
    rxBytes: s.rxBytes,
    txBytes: s.txBytes,
    rxPackets: s.rxPackets,
    txPackets: s.txPackets,
    drops: s.dropsSnapshot(),
    path: s.sync === null ? 'javascript' : 'native',
  }
}

/** The fast path's own counters for status output, prefixed so they read as its. */
export function fastPathCounters(stats: FastPathStats | null | undefined): Record<string, number> {
  if (stats == null) return {}
  return {
    fastPathSessions: stats.sessions,
    fastPathTxPackets: stats.txPackets,
    fastPathRxPackets: stats.rxPackets,
    fastPathSendDrops: stats.sendDrops,
    fastPathTunWriteDrops: stats.tunWriteDrops,
    fastPathTunGsoPackets: stats.tunGsoPackets,
    fastPathTunGsoSegments: stats.tunGsoSegments,
  }
}

/**
 * Traffic since start, gone peers included, and every drop by reason: what `agent status
 * --json` shows as `totals` and what the metrics endpoint serves, from the same counters.
 * `extraDrops`: the carrier's own (by reason), which no peer owns.
 */
export function totalsReport(datapath: DataPath | null, extraDrops: Record<string, number> = {}): TotalsReport {
  const t = datapath?.totals() ?? {rxPackets: 0, rxBytes: 0, txPackets: 0, txBytes: 0, drops: {}}
  const drops: Record<string, number> = {...t.drops}
  const add = (reason: string, n: number | undefined) => {
    if (n !== undefined && n > 0) drops[reason] = (drops[reason] ?? 0) + n
  }
  if (datapath !== null) {
    const c = datapath.counters
    add('no-peer', c.noPeer)
    add('bad-tun-packet', c.badTunPacket)
    add('tun-write', c.tunWriteDrops)
    add('transport-error', c.transportErrors)
    // Since start: a fast path that closed (a carrier change) keeps counting in the totals.
    const fast = datapath.fastPathTotals()
    add('tun-write', fast?.tunWriteDrops)
    add('send', fast?.sendDrops)
    for (const lane of fast?.workers ?? []) add('handoff', lane.handoffDrops)
  }
  for (const [reason, n] of Object.entries(extraDrops)) add(reason, n)
  return {rxPackets: t.rxPackets, rxBytes: t.rxBytes, txPackets: t.txPackets, txBytes: t.txBytes, drops}
}
