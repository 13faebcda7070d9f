/**
 * A client's own series: the RTT to each node it may ride, as its probes measure it
 * (client/node-probing.ts), and its moves between nodes. A node sends no keepalives of its
 * own and measures no RTT to its clients: it has no such series.
 */
import type {Registry} from 'prom-client'
import type {MetricsSource} from './common.js'
import {readCounter, readGauge, type Sample} from './registry.js'

export interface ClientMetricsSource extends MetricsSource {
  role: 'client'
  /** Each node's measured RTT in seconds (null: not measured yet), and whether the client rides it. */
  rtts(): {node: string; seconds: number | null; current: boolean}[]
  /** Moves between nodes since start. */
  switches(): number
}

export function registerClient(registry: Registry, source: ClientMetricsSource, perPeer: boolean): void {
  if (perPeer) {
    readGauge(registry, {
      name: 'agent_peer_rtt_seconds',
      help: 'RTT to each node the client may ride, as its probes measured it last.',
      labelNames: ['peer'] as const,
      read: () => source.rtts().flatMap((r): Sample<'peer'>[] => (r.seconds === null ? [] : [[{peer: r.node}, r.seconds]])),
    })
  }
  readGauge(registry, {
    name: 'agent_rtt_seconds',
    help: 'RTT to the node the client rides now, as its probes measured it last.',
    read: () => source.rtts().flatMap((r): Sample<never>[] => (r.current && r.seconds !== null ? [[{}, r.seconds]] : [])),
  })
  readCounter(registry, {name: 'agent_node_switches_total', help: 'Moves to another node (failovers and moves to a better one).', read: () => [[{}, source.switches()]]})
}
