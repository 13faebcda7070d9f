import type {Peer} from './peer.js'
import type {FastPathStats} from './fast-path.js'
import type {PeerReport} from '../status/report.js'

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
