/**
 * Who may hold a connection to the node's control port before proving who they are.
 *
 * Anyone can open a TCP connection to a public node. Left alone, one host that opens
 * connections and says nothing holds every slot, and no player gets in. The gate bounds only
 * what has not been authenticated yet (the TLS handshake and the certificate check); a session
 * it lets through is never counted, closed or evicted by it, so any number of players behind
 * one carrier-grade NAT address stay connected. Three rules:
 *
 * - per source address, at most `perSource` unauthenticated connections: more are closed at
 *   once, before any TLS work is spent on them;
 * - in all, at most `total`: past it, the oldest unauthenticated connection is closed to make
 *   room, so many sources together cannot lock a newcomer out either;
 * - each must be authenticated within `deadlineMs` of its accept, whatever it sends (an
 *   inactivity timer would let a ClientHello trickled a byte at a time live for ever).
 */

/** What the gate can do to a connection: close it. */
export interface GatedSocket {
  destroy(): void
}

export interface GateLimits {
  /** Unauthenticated connections one source address may hold at once. */
  perSource: number
  /** Unauthenticated connections in all; past it the oldest goes. */
  total: number
  /** From accept to authenticated, at most this long. */
  deadlineMs: number
}

/**
 * perSource is above the 128 handshakes in flight of the scale benchmark, whose 10,000
 * simulated players share one address as a carrier-grade NAT's would; a genuine handshake takes
 * milliseconds, so even a NAT's reconnect storm rarely holds that many at once. 5 s is far above
 * a TLS 1.3 handshake over the worst game-worthy path, and well under a player's patience.
 */
export const DEFAULT_GATE_LIMITS: GateLimits = {perSource: 256, total: 2048, deadlineMs: 5_000}

export interface GateCounters {
  /** Connections let in to try to authenticate. */
  accepted: number
  /** Closed at once: their source held perSource already. */
  sourceFull: number
  /** Closed to make room for a newer one when `total` were held. */
  evicted: number
  /** Closed at the deadline, not authenticated. */
  expired: number
  /** Authenticated in time: the gate forgot them. */
  authenticated: number
}

/** Why the gate closed a connection, for the (rate-limited) log. */
export type GateClosure = 'source-full' | 'evicted' | 'expired'

interface Entry {
  socket: GatedSocket
  source: string
  timer: NodeJS.Timeout
}

export class ConnectionGate {
  /** Unauthenticated connections by key, oldest first (a Map keeps insertion order). */
  private readonly pending = new Map<string, Entry>()
  private readonly perSource = new Map<string, number>()
  readonly counters: GateCounters = {accepted: 0, sourceFull: 0, evicted: 0, expired: 0, authenticated: 0}

  constructor(
    private readonly limits: GateLimits = DEFAULT_GATE_LIMITS,
    private readonly onClose: (why: GateClosure, source: string) => void = () => {},
  ) {
    for (const [k, v] of Object.entries(limits)) if (!(Number.isInteger(v) && v > 0)) throw new Error(`gate limit ${k} must be a positive integer, got ${v}`)
  }

  /** Unauthenticated connections held now. */
  get size(): number {
    return this.pending.size
  }

  /**
   * A connection was accepted from `source`; `key` names it until it closes (its remote
   * address and port). False: it was closed, its source holds too many already.
   */
  enter(key: string, source: string, socket: GatedSocket): boolean {
    const held = this.perSource.get(source) ?? 0
    if (held >= this.limits.perSource) {
      this.counters.sourceFull++
      socket.destroy()
      this.onClose('source-full', source)
      return false
    }
    if (this.pending.size >= this.limits.total) {
      const [oldest, entry] = this.pending.entries().next().value as [string, Entry]
      this.counters.evicted++
      this.drop(oldest)
      entry.socket.destroy()
      this.onClose('evicted', entry.source)
    }
    this.drop(key) // a key reused before its close was seen: the new connection is the one
    const timer = setTimeout(() => this.expire(key), this.limits.deadlineMs)
    timer.unref()
    this.pending.set(key, {socket, source, timer})
    this.perSource.set(source, held + 1)
    this.counters.accepted++
    return true
  }

  /** The connection proved an identity the node accepts: it is a player's, no longer ours. */
  authenticated(key: string): void {
    if (this.drop(key)) this.counters.authenticated++
  }

  /** The connection closed (for whatever reason). */
  closed(key: string): void {
    this.drop(key)
  }

  /** Forget every connection (the node is stopping and closes them itself). */
  clear(): void {
    for (const key of [...this.pending.keys()]) this.drop(key)
  }

  private expire(key: string): void {
    const entry = this.pending.get(key)
    if (entry === undefined) return
    this.counters.expired++
    this.drop(key)
    entry.socket.destroy()
    this.onClose('expired', entry.source)
  }

  private drop(key: string): boolean {
    const entry = this.pending.get(key)
    if (entry === undefined) return false
    clearTimeout(entry.timer)
    this.pending.delete(key)
    const left = (this.perSource.get(entry.source) ?? 1) - 1
    if (left > 0) this.perSource.set(entry.source, left)
    else this.perSource.delete(entry.source)
    return true
  }
}
