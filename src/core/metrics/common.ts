/**
 * What an agent gives its metrics to read (MetricsSource), the snapshot taken once per scrape,
 * and the series node and client share: traffic and drops (in all, per transport, per peer),
 * handshakes, reloads, sessions, the fast path and its lanes, and agent_info.
 */
import type {Registry} from 'prom-client'
import type {DataPath} from '../device/datapath.js'
import type {FastPathStats} from '../device/fast-path.js'
import {totalsReport} from '../device/report.js'
import type {TotalsReport} from '../status/report.js'
import type {AgentEvents} from './events.js'
import {readCounter, readGauge, type Sample} from './registry.js'

export interface MetricsSource {
  role: 'node' | 'client'
  transport: string
  version: string
  datapath(): DataPath | null
  /** Drops the carrier counts, which no peer owns, by reason. */
  extraDrops(): Record<string, number>
  /** Live sessions: a node's clients, or 1 while a client is connected. */
  sessions(): number
  events: AgentEvents
}

export interface PeerSample {
  name: string
  rxPackets: number
  rxBytes: number
  txPackets: number
  txBytes: number
  drops: Record<string, number>
}

/** Everything a scrape reads, taken once when it starts (the fast path's counts folded in once). */
export interface Snapshot {
  totals: TotalsReport
  /** Empty unless per-peer series are on. */
  peers: PeerSample[]
  /** The fast paths' counters since start (closed ones included), null if none ever opened. */
  fast: FastPathStats | null
  /** A fast path is open now (its sessions gauge is served). */
  fastOpen: boolean
}

export function takeSnapshot(source: MetricsSource, perPeer: boolean): Snapshot {
  const datapath = source.datapath()
  // totals() syncs every peer with the fast path: the per-peer reads below see the same counts.
  const totals = totalsReport(datapath, source.extraDrops())
  const peers = !perPeer || datapath === null ? [] : datapath.peers().map((p) => ({name: p.name, rxPackets: p.stats.rxPackets, rxBytes: p.stats.rxBytes, txPackets: p.stats.txPackets, txBytes: p.stats.txBytes, drops: p.stats.drops}))
  return {totals, peers, fast: datapath?.fastPathTotals() ?? null, fastOpen: datapath?.hasFastPath() ?? false}
}

export function registerCommon(registry: Registry, source: MetricsSource, perPeer: boolean, snap: () => Snapshot): void {
  const transport = source.transport
  readGauge(registry, {
    name: 'agent_info',
    help: 'Always 1: the agent version, its role and its transport.',
    labelNames: ['version', 'role', 'transport'] as const,
    read: () => [[{version: source.version, role: source.role, transport}, 1]],
  })
  const traffic = [
    ['rx_packets', 'rxPackets', 'Packets received from peers and written to the TUN device'],
    ['tx_packets', 'txPackets', 'Packets read from the TUN device and sent to peers'],
    ['rx_bytes', 'rxBytes', 'Bytes of inner packets received from peers'],
    ['tx_bytes', 'txBytes', 'Bytes of inner packets sent to peers'],
  ] as const
  for (const [name, key, help] of traffic) {
    readCounter(registry, {
      name: `agent_${name}_total`,
      help: `${help}, since start (peers that left included).`,
      labelNames: ['transport'] as const,
      read: () => [[{transport}, snap().totals[key]]],
    })
  }
  readCounter(registry, {
    name: 'agent_drops_total',
    help: 'Packets dropped, by reason (authentication, endpoint, source, no-peer, tun-write, send...), since start.',
    labelNames: ['reason'] as const,
    read: () => Object.entries(snap().totals.drops).map(([reason, n]): Sample<'reason'> => [{reason}, n]),
  })
  if (perPeer) {
    for (const [name, key, help] of traffic) {
      readCounter(registry, {
        name: `agent_peer_${name}_total`,
        help: `${help}, per connected peer (its current session).`,
        labelNames: ['peer', 'transport'] as const,
        read: () => snap().peers.map((p): Sample<'peer' | 'transport'> => [{peer: p.name, transport}, p[key]]),
      })
    }
    readCounter(registry, {
      name: 'agent_peer_drops_total',
      help: "Packets of a connected peer dropped, by reason (its current session).",
      labelNames: ['peer', 'reason'] as const,
      read: () => snap().peers.flatMap((p) => Object.entries(p.drops).map(([reason, n]): Sample<'peer' | 'reason'> => [{peer: p.name, reason}, n])),
    })
  }
  const events = source.events
  readCounter(registry, {
    name: 'agent_handshakes_total',
    help: 'Handshakes by result: ok (a session began), refused (by the roster or by the node), failed (TLS handshake failed, node).',
    labelNames: ['result'] as const,
    read: () => Object.entries(events.handshakes).map(([result, n]): Sample<'result'> => [{result}, n]),
  })
  readCounter(registry, {
    name: 'agent_reloads_total',
    help: 'Config reloads by result: ok (applied, perhaps changing nothing) or refused (nothing changed).',
    labelNames: ['result'] as const,
    read: () => Object.entries(events.reloads).map(([result, n]): Sample<'result'> => [{result}, n]),
  })
  readGauge(registry, {name: 'agent_sessions', help: 'Live sessions: clients connected to a node, or 1 while a client is connected.', read: () => [[{}, source.sessions()]]})
  registerFastPath(registry, snap)
}

/** The native fast path and its lanes (threads), when there is one: no series otherwise. */
function registerFastPath(registry: Registry, snap: () => Snapshot): void {
  readGauge(registry, {name: 'agent_fastpath_sessions', help: "Sessions in the native fast path's table.", read: () => (snap().fastOpen ? fastOnly(snap(), (f) => f.sessions) : [])})
  const totals = [
    ['rx_packets', 'rxPackets', 'Packets the native fast path decapsulated and wrote to the TUN device'],
    ['tx_packets', 'txPackets', 'Packets the native fast path encapsulated and sent'],
    ['tun_gso_packets', 'tunGsoPackets', 'Runs of TCP segments the fast path wrote to the TUN device as one GSO packet'],
    ['tun_gso_segments', 'tunGsoSegments', 'TCP segments in those GSO packets'],
  ] as const
  for (const [name, key, help] of totals) {
    readCounter(registry, {name: `agent_fastpath_${name}_total`, help: `${help}.`, read: () => fastOnly(snap(), (f) => f[key])})
  }
  const lanes = [
    ['rx_packets', 'rxPackets', 'Packets a lane (thread) of the fast path received and wrote to the TUN device'],
    ['tx_packets', 'txPackets', 'Packets a lane (thread) of the fast path sent'],
    ['handed_off', 'handedOff', 'Packets a worker lane passed to the main thread (keepalives, anything unusual)'],
    ['handoff_drops', 'handoffDrops', 'Packets a worker lane dropped because the main thread was too far behind'],
  ] as const
  for (const [name, key, help] of lanes) {
    readCounter(registry, {
      name: `agent_lane_${name}_total`,
      help: `${help}; lane 0 is the main thread.`,
      labelNames: ['lane'] as const,
      read: () => (snap().fast?.workers ?? []).map((w, i): Sample<'lane'> => [{lane: String(i)}, w[key]]),
    })
  }
}

function fastOnly(s: Snapshot, pick: (f: FastPathStats) => number): Sample<never>[] {
  return s.fast === null ? [] : [[{}, pick(s.fast)]]
}
