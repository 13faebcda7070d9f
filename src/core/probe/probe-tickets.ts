/**
 * The node's probe tickets: a client the roster admits gets one on its session's welcome, or
 * on a probe-only hello when it is weighing this node as a place to go. With it the client may
 * send probes (probe-packet.ts); the node answers those that verify, with what it measured to
 * the client's game servers.
 *
 * One ticket per client name (a new one replaces the old), so tickets are bounded by the
 * roster; each expires, and one whose client the roster no longer admits is not answered.
 * A probe costs an HMAC only if its ticket id is one the node gave out (8 random bytes), and
 * then only within a budget of that ticket's: one for probes from the address its last genuine
 * probe came from, another for every other address. A stranger's flood costs a map lookup per
 * datagram, and one who saw a ticket id on the wire spends the second budget, not the holder's.
 * (Not a per-source budget: thousands of players behind one carrier-grade NAT share a source.)
 *
 * A client that asks again gets a new ticket, but keeps its game servers and what the node
 * measured there: a renewal must not reset the measurements, nor the prober's limit on how
 * fast a client may bring in new destinations (game-prober.ts).
 */
import {randomBytes} from 'node:crypto'
import {TokenBucket} from '../nat/keepalive-budget.js'
import {looksLikeProbe, makeProbe, PROBE_MAX_GAME, PROBE_TICKET_BYTES, ProbeKind, probeTicketOf, readProbe, type GameEntry} from './probe-packet.js'

/** What a ticket's holder is told: its id, its lifetime, and which of its routes are measured. */
export interface ProbeGrant {
  /** The ticket id, hex. */
  ticket: string
  /** Seconds it stays valid. */
  expires: number
  /** The node's UDP port for probes (datagram transports over UDP); absent: TCP to the control port. */
  udp?: number
  /** The client's routes this node measures, in the order a probe reply reports them. */
  game: string[]
  /** The routes it does not, and why. */
  refused: {dest: string; reason: string}[]
}

/** The node's measurements to game servers (game-prober.ts), as tickets need them. */
export interface GameMeasure {
  want(client: string, dests: readonly string[]): {accepted: string[]; refused: {dest: string; reason: string}[]}
  forget(client: string): void
  result(dest: string): {rttMs: number | null; loss: number; state: GameEntry['state']} | undefined
}

interface Ticket {
  id: string
  name: string
  /** Whether the roster still admits the client it was granted to. */
  admitted(): boolean
  key: Buffer
  game: string[]
  expiresAt: number
  lastCounter: bigint
  /** Where its last genuine probe came from (an IPv4 address as a number; 0: none yet). */
  holder: number
  budget: TokenBucket
  /** For probes from anywhere else. */
  foreign: TokenBucket
  grantedAt: number
}

export const PROBE_TICKET_SECONDS = 600
/** Probes checked per ticket per second, and at once: a client sends a few a second. */
export const PROBE_PER_TICKET_PER_SECOND = 20
export const PROBE_PER_TICKET_BURST = 40
/** A client gets a new ticket at most this often (a probe-only hello each time is a TLS handshake). */
export const PROBE_GRANT_MIN_MS = 2_000

export class ProbeTickets {
  private readonly byId = new Map<string, Ticket>()
  private readonly byName = new Map<string, Ticket>()
  readonly counters = {probesAnswered: 0, probesRefused: 0, probesOverRate: 0}

  constructor(
    private readonly o: {
      game: GameMeasure | null
      udpPort?: number
      ttlSeconds?: number
      now?: () => number
    },
  ) {}

  private now(): number {
    return this.o.now?.() ?? Date.now()
  }

  /**
   * A ticket for `name`, whose key both ends derived from the TLS session (probeKey); it is
   * answered only while `admitted` says the roster still admits the client.
   */
  grant(name: string, key: Buffer, routes: readonly string[] | undefined, admitted: () => boolean): ProbeGrant | string {
    const old = this.byName.get(name)
    if (old !== undefined && this.now() - old.grantedAt < PROBE_GRANT_MIN_MS) return `a probe ticket was given ${Math.round(this.now() - old.grantedAt)} ms ago: ask at most every ${PROBE_GRANT_MIN_MS / 1000} s`
    // Only the old id goes: the prober keeps the client's set (want() replaces it below).
    if (old !== undefined) this.byId.delete(old.id)
    const ttl = this.o.ttlSeconds ?? PROBE_TICKET_SECONDS
    // Only /32s name a game server; a prefix is not something to measure.
    const asked = (routes ?? []).slice(0, PROBE_MAX_GAME * 4)
    const hosts = asked.filter((r) => /^\d+\.\d+\.\d+\.\d+(\/32)?$/.test(r)).map((r) => r.replace(/\/32$/, ''))
    const notHosts = asked.filter((r) => !/^\d+\.\d+\.\d+\.\d+(\/32)?$/.test(r)).map((dest) => ({dest, reason: 'not a single host (/32)'}))
    const measured = this.o.game === null ? {accepted: [], refused: hosts.map((dest) => ({dest, reason: 'this node does not measure game servers'}))} : this.o.game.want(name, hosts.slice(0, PROBE_MAX_GAME))
    const over = hosts.slice(PROBE_MAX_GAME).map((dest) => ({dest, reason: `over the ${PROBE_MAX_GAME} measured per client`}))
    const t: Ticket = {
      id: randomBytes(PROBE_TICKET_BYTES).toString('hex'),
      name,
      admitted,
      key,
      game: measured.accepted.slice(0, PROBE_MAX_GAME),
      expiresAt: this.now() + ttl * 1000,
      lastCounter: 0n,
      holder: 0,
      budget: new TokenBucket(PROBE_PER_TICKET_PER_SECOND, PROBE_PER_TICKET_BURST, this.now()),
      foreign: new TokenBucket(PROBE_PER_TICKET_PER_SECOND, PROBE_PER_TICKET_BURST, this.now()),
      grantedAt: this.now(),
    }
    this.byId.set(t.id, t)
    this.byName.set(name, t)
    return {
      ticket: t.id,
      expires: ttl,
      ...(this.o.udpPort === undefined ? {} : {udp: this.o.udpPort}),
      game: t.game,
      refused: [...notHosts, ...measured.refused, ...over],
    }
  }

  /** The client is gone from the roster: its ticket and its game servers go. */
  revoke(name: string): void {
    const t = this.byName.get(name)
    if (t === undefined) return
    this.byName.delete(name)
    this.byId.delete(t.id)
    this.o.game?.forget(name)
  }

  /** Names holding a ticket now (for the roster to drop those it no longer admits). */
  names(): IterableIterator<string> {
    return this.byName.keys()
  }

  get size(): number {
    return this.byId.size
  }

  /** The game report of `name`'s ticket, for a probe answered over its session. */
  gameOf(name: string): {dest: string; rttMs: number | null; loss: number; state: GameEntry['state']}[] {
    const t = this.byName.get(name)
    return t === undefined ? [] : t.game.map((dest) => ({dest, ...this.entry(dest)}))
  }

  /**
   * The reply to a probe, or null when it earns none: not a probe, unknown or expired ticket,
   * over the ticket's budget, bad MAC, replay, a client no longer admitted.
   */
  answer(buf: Buffer, offset: number, length: number, source: number): Buffer | null {
    if (!looksLikeProbe(buf, offset, length)) return null
    const now = this.now()
    const t = this.byId.get(probeTicketOf(buf, offset))
    if (t !== undefined && !(t.holder === 0 || t.holder === source ? t.budget : t.foreign).take(now)) {
      this.counters.probesOverRate++
      return null
    }
    const p = t === undefined ? null : readProbe(buf, offset, t.key, ProbeKind.Request, t.lastCounter)
    if (t === undefined || p === null || t.expiresAt < now || !t.admitted()) {
      this.counters.probesRefused++
      return null
    }
    t.lastCounter = p.counter
    t.holder = source
    this.counters.probesAnswered++
    return makeProbe({kind: ProbeKind.Reply, ticket: p.ticket, counter: p.counter, game: t.game.map((d) => this.entry(d))}, t.key)
  }

  private entry(dest: string): GameEntry {
    const r = this.o.game?.result(dest)
    return r === undefined ? {rttMs: null, loss: 0, state: 'measuring'} : {rttMs: r.rttMs, loss: r.loss, state: r.state}
  }

  /** Drops expired tickets, and those of clients the roster no longer admits; run now and then. */
  sweep(): void {
    const now = this.now()
    for (const t of [...this.byId.values()]) if (t.expiresAt < now || !t.admitted()) this.revoke(t.name)
  }
}
