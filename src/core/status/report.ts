import type {LaneStats} from '../device/fast-path.js'
import type {FleetStatus} from '../fleet/fleet-watch.js'

/** What `agent status` shows: one report per running instance. */
export interface PeerReport {
  name: string
  address: string
  endpoint: string
  /** The session id on the wire (a GRE key, an SPI), for transports that have one. */
  sessionId?: number
  connectedAt: string
  /** ISO time of the last payload heard, or null before any. */
  lastSeen: string | null
  rxBytes: number
  txBytes: number
  rxPackets: number
  txPackets: number
  drops: Record<string, number>
  /**
   * Who carries the peer's common packets: `native` (the fast path, in C; for tls the
   * connection's native records) or `javascript` (the reference data path: AGENT_FAST_PATH=off,
   * a transport without a FastCodec, or a peer that did not agree to native records).
   */
  path: 'native' | 'javascript'
  /**
   * Node with workers: the worker (0: the main thread) the peer's datagrams are steered to,
   * from its endpoint. Its return traffic follows the same flows onto the same worker.
   */
  worker?: number
}

/** What one thread of a node's fast path carried (the main thread first, then each worker). */
export type WorkerReport = LaneStats

export interface StatusReport {
  name: string
  role: 'node' | 'client'
  pid: number
  transport: string
  interface: string
  /** This end's tunnel address (a client's is null until the node welcomed it). */
  address: string | null
  mtu: number | null
  startedAt: string
  /** Node: where it listens. Client: the node it talks to. */
  endpoint: string
  /** Client: connected, connecting, or refused. */
  state: string
  peers: PeerReport[]
  counters: Record<string, number>
  /** Node with more than one worker: each one's counters, the main thread's first. */
  workers?: WorkerReport[]
  /** Node: who may connect. */
  roster?: RosterReport
  /** Node: its control port's gate for connections not yet authenticated (connection-gate.ts). */
  control?: ControlReport
  /** Client: the nodes it may ride, as measured, and its moves between them. */
  selection?: SelectionReport
  /** Node of a fleet: etcd's state as this node sees it (src/core/fleet/fleet-watch.ts). */
  fleet?: FleetReport
  /** Traffic since start, departed peers included, and drops by reason (what /metrics serves too). */
  totals?: TotalsReport
  /** Counts of what happened since start: handshakes by result, reloads by result, revocations. */
  events?: EventsReport
}

export interface TotalsReport {
  rxPackets: number
  rxBytes: number
  txPackets: number
  txBytes: number
  drops: Record<string, number>
}

export interface EventsReport {
  /** ok: a session began; refused: the peer refused or was refused; failed: the TLS handshake failed (node). */
  handshakes: Record<string, number>
  /** ok: applied (perhaps changing nothing); refused: nothing was changed. */
  reloads: Record<string, number>
  /** Live sessions cut because the roster stopped admitting them (revoked or removed). */
  revocations: number
}

/** A fleet node's view of etcd (src/core/fleet/fleet-watch.ts), with its prefix and whether it registered. */
export type FleetReport = FleetStatus & {prefix: string; registered: boolean}

/** What the control port's gate has done since start. */
export interface ControlReport {
  /** Unauthenticated connections held now. */
  pending: number
  accepted: number
  authenticated: number
  /** Closed at once: their source held its limit of unauthenticated connections. */
  sourceFull: number
  /** Closed to make room when the port was full. */
  evicted: number
  /** Closed at the handshake deadline. */
  expired: number
  /** Log lines a stranger could cause that were suppressed (counted, not written). */
  logSuppressed: number
}

/** A node's roster as `agent status` shows it. */
export interface RosterReport {
  /** Clients listed by name in the config. */
  listed: number
  /** Any other certificate of the CA is admitted too (`clients: any`). */
  any: boolean
  /** Clients with a session now. */
  connected: number
  /** Revoked certificates the node enforces. */
  revoked: number
  /** The CRL, when the node has one (pki.crl). */
  crl?: {file: string; revoked: number; number?: string; thisUpdate?: string; nextUpdate?: string; expired: boolean; error?: string}
}

/** A client's choice of node (client/node-probing.ts, probe/ranking.ts). */
export interface SelectionReport {
  /** The node it rides now, by name; null between sessions. */
  current: string | null
  /** "path": ranked by RTT to the node plus on to the game servers; "node": to the node alone. */
  basis: 'path' | 'node'
  candidates: CandidateReport[]
  /** Moves since start (failovers and moves to a better node). */
  switches: number
  /** The last few moves, oldest first. */
  recent: SwitchRecord[]
}

export interface SwitchRecord {
  at: string
  from: string
  to: string
  reason: string
}

export type {CandidateReport} from '../client/node-probing.js'
import type {CandidateReport} from '../client/node-probing.js'
