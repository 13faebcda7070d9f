import type {Peer} from './peer.js'
import type {PeerReport} from '../status/report.js'

export function peerReport(p: Peer): PeerReport {
  const s = p.stats
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
  }
}
