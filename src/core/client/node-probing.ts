/**
 * The client's measurements of every node it may ride: RTT and loss to the node, and what the
 * node measures on to the game servers. They feed the ranking (probe/ranking.ts) and tell the
 * client when its current node stopped answering.
 *
 * Each node gives the client a probe ticket over a mutually authenticated TLS connection (a
 * probe-only hello, or the session's welcome for the current node); the probes then carry a
 * MAC with the ticket's key (probe/probe-packet.ts), so only that node can answer them:
 *   - over UDP to the node's carrier port, where the transport's carrier is UDP;
 *   - otherwise as a one-shot TCP connection to the node's control port, or, for the current
 *     node, as a `probe` message on the session's own connection (no connection per probe).
 * The current node is probed every `probeSeconds` while nothing else comes from it, and every
 * CURRENT_BUSY_MS while its packets do (they prove it alive; the probes then only keep its RTT
 * fresh), the others every `probeOthersSeconds` with jitter, so that a thousand players do not
 * probe a node in step.
 */
import {createSocket, type Socket as UdpSocket} from 'node:dgram'
import {lookup} from 'node:dns/promises'
import {connect as tcpConnect, isIP} from 'node:net'
import {connect as tlsConnect} from 'node:tls'
import {ControlConnection} from '../control/connection.js'
import {PROTOCOL_VERSION, type GameReport} from '../control/messages.js'
import type {Credentials} from '../pki/index.js'
import {tlsClientOptions} from '../pki/index.js'
import {PathStats} from '../probe/path-stats.js'
import {looksLikeProbe, makeProbe, PROBE_BYTES, ProbeKind, probeKey, readProbe} from '../probe/probe-packet.js'
import type {ProbeGrant} from '../probe/probe-tickets.js'
import type {RankInput} from '../probe/ranking.js'
import type {Candidate} from './candidates.js'
import {isFatalTlsError} from './tls-errors.js'

/** A probe unanswered this long is lost. */
export const PROBE_TIMEOUT_MS = 1000
/** Probes sent this often to every node while the client chooses at start. */
const START_PROBE_MS = 200
/** A ticket is renewed this long before it expires, or after this many losses in a row. */
const RENEW_BEFORE_MS = 60_000
const LOSSES_BEFORE_RENEW = 5
/**
 * After a ticket, a new one for lost probes (a node that restarted forgot it) is asked for no
 * sooner than this, doubling while renewals do not bring answers back, up to TICKET_RETRY_MAX_MS.
 */
const TICKET_MIN_MS = 5_000
/** Between two attempts to get a ticket from one node, at least... and at most... */
const TICKET_RETRY_MIN_MS = 2_000
const TICKET_RETRY_MAX_MS = 60_000
const TICKET_TIMEOUT_MS = 5_000
const TICK_MS = 50
/** The current node's probes while its packets arrive anyway. */
const CURRENT_BUSY_MS = 2_000

export interface ProbingOptions {
  /** The client's credentials, once loaded. */
  credentials(): Credentials | null
  transport: string
  /** The routes the client sends into the tunnel: the nodes measure the /32s among them. */
  routes(): readonly string[]
  probeMs: number
  probeOthersMs: number
  /** ms since epoch when packets last came from the current node (data, not probes). */
  heardFromCurrent(): number
  /** A node's address is known: the client keeps it outside its tunnel. */
  resolved(ip: string): void
  log: {warn(m: string): void; info(m: string): void}
}

/** The current node's session, for probing it over its own connection. */
export interface CurrentSession {
  conn: ControlConnection
  /** The address the session's connection went to: where its UDP probes go. */
  ip: string
  grant?: ProbeGrant
  key?: Buffer
}

interface NodeState {
  cand: Candidate
  ip: string | null
  stats: PathStats
  game: GameReport[]
  grant: ProbeGrant | null
  grantedAt: number
  key: Buffer | null
  ticket: Buffer | null
  counter: number
  /** Why the node gives us no ticket, or why the last attempt failed. */
  problem: string | null
  ticketing: boolean
  nextTicketAt: number
  ticketFailures: number
  /** Tickets taken since a probe was last answered: each waits twice as long as the one before. */
  lossRenewals: number
  lossesInRow: number
  lastProbeAt: number
  /** This interval's share of probeOthersMs, 0.75 to 1.25. */
  jitter: number
}

export interface CandidateReport {
  name: string
  endpoint: string
  source: 'config' | 'fleet'
  current: boolean
  rttMs: number | null
  loss: number
  gameMs: number | null
  gameLoss: number
  game: GameReport[]
  score: number | null
  problem: string | null
}

export class NodeProbing {
  private readonly nodes = new Map<string, NodeState>()
  private udp: UdpSocket | null = null
  private timer: NodeJS.Timeout | null = null
  private currentKey: string | null = null
  /** The keys of the last setCandidates: the current node is kept while it carries us, even if not listed. */
  private listed = new Set<string>()
  private session: CurrentSession | null = null
  private burstUntil = 0
  private closed = false

  constructor(private readonly o: ProbingOptions) {}

  /** The nodes to measure now: new ones start, gone ones stop. */
  setCandidates(cands: readonly Candidate[]): void {
    const keep = new Set(cands.map((c) => c.key))
    this.listed = keep
    for (const key of this.nodes.keys()) if (!keep.has(key) && key !== this.currentKey) this.nodes.delete(key)
    for (const cand of cands) {
      const known = this.nodes.get(cand.key)
      if (known !== undefined) {
        known.cand = cand
        continue
      }
      this.nodes.set(cand.key, {
        cand,
        ip: null,
        stats: new PathStats(PROBE_TIMEOUT_MS),
        game: [],
        grant: null,
        grantedAt: 0,
        key: null,
        ticket: null,
        counter: 0,
        problem: null,
        ticketing: false,
        nextTicketAt: 0,
        ticketFailures: 0,
        lossRenewals: 0,
        lossesInRow: 0,
        lastProbeAt: 0,
        jitter: 1,
      })
    }
  }

  start(): void {
    if (this.timer !== null || this.closed) return
    this.timer = setInterval(() => this.tick(Date.now()), TICK_MS)
    this.timer.unref()
  }

  /** Probe every node often for `ms` (the client is choosing where to start). */
  burst(ms: number): void {
    this.burstUntil = Date.now() + ms
    for (const n of this.nodes.values()) n.lastProbeAt = 0
  }

  /** The node the client rides now, and its session (null between sessions). */
  setCurrent(key: string | null, session: CurrentSession | null): void {
    const previous = this.currentKey
    this.currentKey = key
    // A node no longer listed (a reload took it out) goes once it stops carrying us.
    if (previous !== null && previous !== key && !this.listed.has(previous)) this.nodes.delete(previous)
    this.session = session
    const n = key === null ? undefined : this.nodes.get(key)
    if (n === undefined || session === null) return
    n.ip = session.ip
    // The welcome's ticket is as good as a probe-only one, and saves a TLS handshake.
    if (session.grant !== undefined && session.key !== undefined) this.takeGrant(n, session.grant, session.key)
    n.lastProbeAt = 0
  }

  /** The answer to a `probe` message on the current node's session. */
  onProbed(n: number, game: GameReport[]): void {
    const state = this.currentKey === null ? undefined : this.nodes.get(this.currentKey)
    if (state === undefined || state.stats.answered(n, Date.now()) === null) return
    state.lossesInRow = 0
    state.lossRenewals = 0
    // The node's figures, kept in range: a node cannot make itself look better than free.
    state.game = game.map((g) => ({...g, rttMs: g.rttMs === null ? null : Math.min(Math.max(g.rttMs, 0), 60_000), loss: Math.min(Math.max(g.loss, 0), 1)}))
  }

  /** ms since epoch of the last probe `key` answered; 0 if none. */
  lastAnswer(key: string): number {
    return this.nodes.get(key)?.stats.lastAnswer ?? 0
  }

  has(key: string): boolean {
    return this.nodes.has(key)
  }

  /**
   * Measured enough to choose: each node has a few outcomes and has measured the game servers it
   * took (or cannot give a ticket). Choosing before the game servers are known would rank by the
   * first leg alone.
   */
  settled(): boolean {
    return [...this.nodes.values()].every(
      (n) => (n.stats.samples >= 3 && (n.game.length === 0 || n.game.some((g) => g.state !== 'measuring'))) || (n.problem !== null && n.grant === null),
    )
  }

  views(): RankInput[] {
    return [...this.nodes.values()].map((n) => {
      // A game server the node cannot reach counts as lost; one still being measured, as nothing.
      const ok = n.game.filter((g) => g.state === 'ok' && g.rttMs !== null)
      const known = n.game.filter((g) => g.state !== 'measuring')
      return {
        key: n.cand.key,
        rttMs: n.stats.rttMs,
        loss: n.stats.loss,
        gameMs: ok.length === 0 ? null : ok.reduce((a, g) => a + g.rttMs!, 0) / ok.length,
        gameLoss: known.length === 0 ? 0 : known.reduce((a, g) => a + (g.state === 'ok' ? g.loss : 1), 0) / known.length,
        gameKnown: known.length > 0,
        preference: n.cand.preference,
        // A node that stopped answering is not a place to go, whatever it measured before.
        usable: n.stats.samples > 0 && n.lossesInRow < 3 && n.stats.loss < 1,
      }
    })
  }

  report(scores: Map<string, number>): CandidateReport[] {
    const views = new Map(this.views().map((v) => [v.key, v]))
    return [...this.nodes.values()].map((n) => {
      const v = views.get(n.cand.key)!
      const s = scores.get(n.cand.key)
      return {
        name: n.cand.name,
        endpoint: `${n.cand.host}:${n.cand.port}`,
        source: n.cand.source,
        current: n.cand.key === this.currentKey,
        rttMs: v.rttMs,
        loss: v.loss,
        gameMs: v.gameMs,
        gameLoss: v.gameLoss,
        game: n.game,
        score: s === undefined || !Number.isFinite(s) ? null : s,
        problem: n.problem ?? (n.lossesInRow >= 3 ? `${n.lossesInRow} probes in a row unanswered` : null),
      }
    })
  }

  close(): void {
    this.closed = true
    if (this.timer !== null) clearInterval(this.timer)
    this.timer = null
    this.udp?.close()
    this.udp = null
  }

  private tick(now: number): void {
    for (const n of this.nodes.values()) {
      n.stats.expire(now)
      const current = n.cand.key === this.currentKey
      const viaSession = current && this.session !== null && n.grant?.udp === undefined
      if (!viaSession && this.needsTicket(n, now)) this.fetchTicket(n)
      // The interval is worked out at each look, so a current node whose packets stop is
      // probed at the idle pace at once, not after the busy interval.
      const busy = current && now - this.o.heardFromCurrent() < this.o.probeMs
      const every =
        now < this.burstUntil ? START_PROBE_MS : current ? (busy ? Math.max(this.o.probeMs, CURRENT_BUSY_MS) : this.o.probeMs) : this.o.probeOthersMs * n.jitter
      if (now < n.lastProbeAt + every) continue
      n.lastProbeAt = now
      n.jitter = 0.75 + Math.random() / 2
      if (viaSession) this.probeSession(n, now)
      else if (n.grant !== null) this.probe(n, now)
    }
  }

  private needsTicket(n: NodeState, now: number): boolean {
    if (n.ticketing || now < n.nextTicketAt) return false
    if (n.grant === null) return true
    const expiresAt = n.grantedAt + n.grant.expires * 1000
    if (now > expiresAt - RENEW_BEFORE_MS) return true
    return n.lossesInRow >= LOSSES_BEFORE_RENEW && now - n.grantedAt > Math.min(TICKET_RETRY_MAX_MS, TICKET_MIN_MS * 2 ** n.lossRenewals)
  }

  private takeGrant(n: NodeState, grant: ProbeGrant, key: Buffer): void {
    n.grant = grant
    n.grantedAt = Date.now()
    n.key = key
    n.ticket = Buffer.from(grant.ticket, 'hex')
    // The counter keeps rising: a reply to the old ticket's probe n cannot pass for the new one's.
    n.problem = null
    n.ticketFailures = 0
    n.lossesInRow = 0
    // Replies for the old ticket will not verify; the window says what the new one finds.
    // Keep what the node reported for servers it still measures (a renewal keeps its window).
    const before = new Map(n.game.map((g) => [g.dest, g]))
    n.game = grant.game.map((dest) => before.get(dest) ?? {dest, rttMs: null, loss: 0, state: 'measuring'})
  }

  /** A probe-only hello to the node, for a ticket. */
  private fetchTicket(n: NodeState): void {
    const credentials = this.o.credentials()
    if (credentials === null) return
    n.ticketing = true
    const failed = (why: string, fatal = false) => {
      n.ticketing = false
      n.ticketFailures++
      n.problem = why
      // A node that refuses us, or whose certificate is wrong, is asked again rarely.
      const wait = fatal ? TICKET_RETRY_MAX_MS : Math.min(TICKET_RETRY_MAX_MS, TICKET_RETRY_MIN_MS * 2 ** (n.ticketFailures - 1))
      n.nextTicketAt = Date.now() + wait
    }
    this.resolve(n)
      .then((ip) => {
        if (this.closed) return
        this.o.resolved(ip)
        let done = false
        const socket = tlsConnect({...tlsClientOptions(credentials, n.cand.name), host: ip, port: n.cand.port})
        // Absolute: a node that finishes TLS and then says nothing must not hold the fetch.
        const deadline = setTimeout(() => conn.close(`no probe ticket within ${TICKET_TIMEOUT_MS / 1000} s`), TICKET_TIMEOUT_MS)
        deadline.unref()
        let key: Buffer | null = null
        const conn = new ControlConnection(socket, 0xffff, {
          onMessage: (m) => {
            if (done) return
            done = true
            if (m.type === 'probing' && key !== null) {
              n.ticketing = false
              if (n.lossesInRow >= LOSSES_BEFORE_RENEW) n.lossRenewals++
              this.takeGrant(n, m.grant, key)
              n.lastProbeAt = 0
            } else if (m.type === 'refused') {
              failed(`refuses probes: ${m.reason}`, true)
            } else {
              failed(`answered a probe hello with ${m.type}`, true)
            }
            conn.close('ticket received')
          },
          onData: () => {},
          onClose: (reason, cause) => {
            clearTimeout(deadline)
            if (done) return
            done = true
            failed(`no probe ticket: ${cause !== undefined && isFatalTlsError(cause) ? `TLS failed: ${cause.message}` : reason}`, cause !== undefined && isFatalTlsError(cause))
          },
        })
        socket.once('secureConnect', () => {
          key = probeKey(socket)
          conn.send({type: 'hello', version: PROTOCOL_VERSION, transport: this.o.transport, probe: true, routes: [...this.o.routes()]})
        })
      })
      .catch((e: Error) => failed(e.message))
  }

  private async resolve(n: NodeState): Promise<string> {
    if (isIP(n.cand.host) === 4) return (n.ip = n.cand.host)
    try {
      n.ip = (await lookup(n.cand.host, {family: 4})).address
      return n.ip
    } catch (e) {
      throw new Error(`cannot resolve ${n.cand.host}: ${(e as Error).message}`)
    }
  }

  private probe(n: NodeState, now: number): void {
    const ip = n.ip
    if (ip === null || n.key === null || n.ticket === null || n.grant === null) return
    const counter = ++n.counter
    const request = makeProbe({kind: ProbeKind.Request, ticket: n.ticket, counter: BigInt(counter), game: []}, n.key)
    this.countLoss(n, counter)
    if (n.grant.udp !== undefined) {
      n.stats.sent(counter, now)
      this.sendUdp(request, ip, n.grant.udp)
    } else {
      this.sendTcp(n, counter, request, ip)
    }
  }

  /** A probe counts as lost in a row until one after it is answered. */
  private countLoss(n: NodeState, counter: number): void {
    setTimeout(() => {
      if (n.stats.lastAnswer < Date.now() - PROBE_TIMEOUT_MS && n.counter >= counter) n.lossesInRow++
    }, PROBE_TIMEOUT_MS).unref()
  }

  private probeSession(n: NodeState, now: number): void {
    const conn = this.session?.conn
    if (conn === undefined || conn.isClosed) return
    const counter = ++n.counter
    n.stats.sent(counter, now)
    this.countLoss(n, counter)
    conn.send({type: 'probe', n: counter})
  }

  private sendUdp(request: Buffer, ip: string, port: number): void {
    if (this.udp === null) {
      const udp = createSocket('udp4')
      udp.on('message', (msg) => this.onReply(msg))
      // A probe socket's error (an ICMP unreachable, say) is a lost probe, not a failure.
      udp.on('error', () => {})
      udp.unref()
      this.udp = udp
    }
    this.udp.send(request, port, ip)
  }

  /**
   * A probe as the first bytes of a TCP connection, timed from the connect: one round trip,
   * as a UDP probe or a session's is, not two. A connection that fails is a lost probe.
   */
  private sendTcp(n: NodeState, counter: number, request: Buffer, ip: string): void {
    const s = tcpConnect({host: ip, port: n.cand.port})
    const started = Date.now()
    s.setTimeout(PROBE_TIMEOUT_MS, () => s.destroy())
    s.on('error', () => {})
    s.once('close', () => {
      if (!connected) n.stats.sent(counter, started - PROBE_TIMEOUT_MS)
    })
    let connected = false
    s.once('connect', () => {
      connected = true
      n.stats.sent(counter, Date.now())
      s.write(request)
    })
    let got = Buffer.alloc(0)
    s.on('data', (d: Buffer) => {
      got = Buffer.concat([got, d])
      if (got.length < PROBE_BYTES) return
      this.onReply(got.subarray(0, PROBE_BYTES))
      s.destroy()
    })
    s.unref()
  }

  /** A reply is the node's if it names the ticket and verifies with its key, from wherever it came. */
  private onReply(msg: Buffer): void {
    if (!looksLikeProbe(msg, 0, msg.length)) return
    const now = Date.now()
    for (const n of this.nodes.values()) {
      if (n.key === null || n.ticket === null || !msg.subarray(8, 16).equals(n.ticket)) continue
      const p = readProbe(msg, 0, n.key, ProbeKind.Reply, 0n)
      if (p === null) return
      if (n.stats.answered(Number(p.counter), now) === null) return
      n.lossesInRow = 0
      n.lossRenewals = 0
      const dests = n.grant?.game ?? []
      n.game = p.game.slice(0, dests.length).map((g, i) => ({dest: dests[i], ...g, rttMs: g.rttMs === null ? null : Math.min(g.rttMs, 60_000)}))
      return
    }
  }
}
