/**
 * The node's own round trip time and loss to the game servers its clients route (/32s), so a
 * client can rank nodes by the whole path (client→node plus node→server), not by the first leg.
 *
 * A client names the addresses and the node sends the packets: left unbounded, that is a
 * scanner anyone with a client certificate can aim. So everything here is bounded:
 * - only a dotted-quad IPv4 unicast address the node would forward for that client (o.refuse);
 * - at most maxPerClient per client and maxDestinations node-wide, one probe loop per
 *   destination however many clients want it;
 * - a client may replace its set at will, but brings in at most maxPerClient new addresses a
 *   minute (after a burst of twice that), so swapping sets cannot sweep a range;
 * - at most MAX_PROBES_PER_SECOND probes and MAX_IN_FLIGHT open sockets node-wide, whatever the
 *   options say: many destinations at a short interval just probe each one less often.
 *
 * A probe is a TCP connect to one port: a SYN-ACK or a RST is an answer, either way the host
 * is there. A connection that opens is reset at once, so nothing is held on the game server
 * (and no TIME_WAIT piles up on the node).
 *
 * ICMP echo is not offered. Node has no ICMP sockets; the native addon's raw IP socket
 * (openRawIp, the ip carriers') would do protocol 1, but without ICMP_FILTER or a BPF filter it
 * hands every ICMP packet the node receives, a ping flood at the node included, to JS on the
 * main thread. The clean way is a kernel ping socket (SOCK_DGRAM, IPPROTO_ICMP: the kernel
 * matches replies to the socket), which the addon does not open and which also needs
 * net.ipv4.ping_group_range to admit the node's group.
 */
import net from 'node:net'
import {parseIpv4} from '../net/ipv4.js'

export interface GameProberOptions {
  /** 'tcp': a TCP SYN to `port` (connect; a RST answers as well as a SYN-ACK, both count as a reply). 'icmp': not supported, throws. */
  method: 'tcp' | 'icmp'
  /** tcp only; default 443 in config, but given here. */
  port: number
  /** Per destination, jittered ±20 %; e.g. 2000. */
  intervalMs: number
  /** Unanswered this long = lost; e.g. 1000. */
  timeoutMs: number
  /** e.g. 8; at most MAX_EXAMINED. */
  maxPerClient: number
  /** Node-wide distinct destinations, e.g. 1024; at most MAX_DESTINATIONS. */
  maxDestinations: number
  /** Why the node would not forward to `dest` for clients (egress.deny, its own addresses, not unicast...), or null if it would. */
  refuse(dest: string): string | null
  /** Injected for tests (the rate limits' clock); default Date.now. */
  now?: () => number
  /** Injected for tests (a destination that never answers without sending anything); default net.connect. */
  connect?: (options: net.TcpNetConnectOpts) => net.Socket
}

export interface DestinationResult {
  dest: string
  /** Median RTT of the answered probes in the window; null when none was answered. */
  rttMs: number | null
  /** Unanswered / sent, over the window (0..1). */
  loss: number
  /** Probes in the window (at most WINDOW). */
  samples: number
  state: 'measuring' | 'ok' | 'unreachable'
}

export interface WantResult {
  accepted: string[]
  refused: {dest: string; reason: string}[]
}

/** Probes per destination that rttMs and loss are computed over. */
export const WINDOW = 10
/** Node-wide, whatever maxDestinations / intervalMs say. */
export const MAX_PROBES_PER_SECOND = 500
/** Probes sent at once after a quiet spell (a client's first set goes out together). */
const PROBE_BURST = 50
/** Open sockets at once: 500/s with a long timeout would otherwise hold thousands of fds. */
export const MAX_IN_FLIGHT = 256
/** Entries of one want() call looked at; the rest are refused in one line, unread. */
export const MAX_EXAMINED = 256
/** Upper bound of maxDestinations: its state is a few hundred bytes a destination. */
export const MAX_DESTINATIONS = 65_536
/** A client's new addresses: maxPerClient per this long, after a burst of twice that. */
const CLIENT_ADDS_REFILL_MS = 60_000
/** A dotted quad is at most 15 characters: longer strings are refused without parsing. */
const MAX_IPV4_LENGTH = 15
/** Refused entries are echoed back this long at most. */
const MAX_ECHO_LENGTH = 40

/** A probe's outcome: an RTT in ms, lost, or no sample (the node's own failure, not the path's). */
type Outcome = number | 'lost' | 'skip'

/**
 * The node's own shortage (fds, ports, memory): saying nothing about the path, they are not
 * counted as losses. ECONNREFUSED is the RST, an answer; everything else (EHOSTUNREACH,
 * ENETUNREACH, a local firewall's EPERM, ...) is a loss.
 */
const LOCAL_ERRORS = new Set(['EMFILE', 'ENFILE', 'ENOBUFS', 'ENOMEM', 'EADDRNOTAVAIL', 'EADDRINUSE'])

/** A token bucket: `capacity` at once, refilled at `perMs` tokens a millisecond. */
class Bucket {
  private tokens: number
  private last: number

  constructor(
    private readonly capacity: number,
    private readonly perMs: number,
    private readonly now: () => number,
  ) {
    this.tokens = capacity
    this.last = now()
  }

  private refill(): void {
    const t = this.now()
    // A clock stepped back refills nothing (and does not go negative).
    if (t > this.last) this.tokens = Math.min(this.capacity, this.tokens + (t - this.last) * this.perMs)
    this.last = t
  }

  take(): boolean {
    this.refill()
    if (this.tokens < 1) return false
    this.tokens -= 1
    return true
  }

  /** Milliseconds until take() can succeed. */
  wait(): number {
    this.refill()
    return this.tokens >= 1 ? 0 : Math.ceil((1 - this.tokens) / this.perMs)
  }
}

interface Probe {
  readonly dest: string
  /** Clients that want it; 0 only inside want(), between releasing a set and taking the next. */
  refs: number
  /** The last WINDOW outcomes, oldest first: an RTT in ms, or null for lost. */
  readonly window: (number | null)[]
  /** Exactly one of: waiting for its next turn (timer), in the due queue, in flight (abort). */
  timer: NodeJS.Timeout | undefined
  abort: (() => void) | undefined
}

interface Client {
  dests: Set<string>
  /** Kept while the client is known, empty set or not: emptying the set must not refill it. */
  readonly adds: Bucket
}

export class GameProber {
  private readonly o: GameProberOptions
  private readonly now: () => number
  private readonly connect: (options: net.TcpNetConnectOpts) => net.Socket
  private readonly probes = new Map<string, Probe>()
  private readonly clients = new Map<string, Client>()
  /** Destinations whose turn has come, oldest first; each at most once. */
  private readonly due = new Set<Probe>()
  private readonly rate: Bucket
  /** Destinations with at least one client (probes.size but for want()'s released ones). */
  private live = 0
  private inFlight = 0
  private pumpTimer: NodeJS.Timeout | undefined
  private closed = false

  constructor(o: GameProberOptions) {
    if (o.method === 'icmp') {
      throw new Error("game prober: method 'icmp' is not supported (no clean ICMP socket without native changes: see src/core/probe/game-prober.ts); use 'tcp'")
    }
    if (o.method !== 'tcp') throw new Error(`game prober: unknown method ${JSON.stringify(o.method)}`)
    checkInt('port', o.port, 1, 65_535)
    checkInt('intervalMs', o.intervalMs, 100, 3_600_000)
    checkInt('timeoutMs', o.timeoutMs, 1, 60_000)
    checkInt('maxPerClient', o.maxPerClient, 1, MAX_EXAMINED)
    checkInt('maxDestinations', o.maxDestinations, 1, MAX_DESTINATIONS)
    if (typeof o.refuse !== 'function') throw new TypeError('game prober: refuse must be a function')
    this.o = o
    this.now = o.now ?? (() => Date.now())
    this.connect = o.connect ?? ((options) => net.connect(options))
    this.rate = new Bucket(PROBE_BURST, MAX_PROBES_PER_SECOND / 1000, this.now)
  }

  /** Distinct destinations probed now. */
  get size(): number {
    return this.probes.size
  }

  /**
   * Replaces this client's wanted set. A destination it keeps keeps its window; one no client
   * wants any more stops at once. Never throws on what a client sent: anything malformed is
   * refused, and only the first MAX_EXAMINED entries are looked at.
   */
  want(client: string, dests: readonly string[]): WantResult {
    const accepted: string[] = []
    const refused: {dest: string; reason: string}[] = []
    const list: readonly unknown[] = Array.isArray(dests) ? dests : []
    if (!Array.isArray(dests)) refused.push({dest: '', reason: 'not a list of destinations'})
    const examined = Math.min(list.length, MAX_EXAMINED)
    if (this.closed) {
      for (let i = 0; i < examined; i++) refused.push({dest: echo(list[i]), reason: 'the prober is closed'})
      return {accepted, refused}
    }

    let c = this.clients.get(client)
    if (c === undefined) {
      c = {dests: new Set(), adds: new Bucket(2 * this.o.maxPerClient, this.o.maxPerClient / CLIENT_ADDS_REFILL_MS, this.now)}
      this.clients.set(client, c)
    }
    // Release the old set first but stop nothing yet, so what the new set keeps keeps its window.
    const old = c.dests
    for (const d of old) this.release(this.probes.get(d)!)
    const next = new Set<string>()
    for (let i = 0; i < examined; i++) {
      const x = list[i]
      const reason = this.check(x, next, old, c)
      if (reason !== null) refused.push({dest: echo(x), reason})
      else {
        next.add(x as string)
        this.acquire(x as string)
        accepted.push(x as string)
      }
    }
    if (list.length > examined) {
      refused.push({dest: `(${list.length - examined} more)`, reason: `not examined: at most ${MAX_EXAMINED} destinations are looked at per request`})
    }
    c.dests = next
    for (const d of old) {
      const p = this.probes.get(d)!
      if (p.refs === 0) this.stop(p)
    }
    return {accepted, refused}
  }

  /** The client is gone (its session ended): drop its set and what it knew of its rate. */
  forget(client: string): void {
    const c = this.clients.get(client)
    if (c === undefined) return
    this.clients.delete(client)
    for (const d of c.dests) {
      const p = this.probes.get(d)!
      this.release(p)
      if (p.refs === 0) this.stop(p)
    }
  }

  result(dest: string): DestinationResult | undefined {
    const p = typeof dest === 'string' ? this.probes.get(dest) : undefined
    if (p === undefined) return undefined
    const answered = p.window.filter((x): x is number => x !== null)
    const samples = p.window.length
    return {
      dest,
      rttMs: answered.length > 0 ? Math.round(median(answered) * 1000) / 1000 : null,
      loss: samples > 0 ? (samples - answered.length) / samples : 0,
      samples,
      state: samples === 0 ? 'measuring' : answered.length === 0 ? 'unreachable' : 'ok',
    }
  }

  /** Stops every timer and socket; want() refuses everything afterwards. Idempotent. */
  close(): void {
    this.closed = true
    for (const p of this.probes.values()) this.stop(p)
    this.clients.clear()
    clearTimeout(this.pumpTimer)
    this.pumpTimer = undefined
  }

  /** Why `x` cannot join the client's next set, or null. Cheapest checks first; the rate last, so only a real addition spends it. */
  private check(x: unknown, next: Set<string>, old: Set<string>, c: Client): string | null {
    if (typeof x !== 'string' || x.length > MAX_IPV4_LENGTH) return 'not a dotted-quad IPv4 address'
    const addr = parseIpv4(x)
    if (addr === undefined) return 'not a dotted-quad IPv4 address'
    if (next.has(x)) return 'listed twice'
    // Whatever o.refuse says: 0.0.0.0/8 connects to the node itself, 224/3 is multicast and reserved.
    if (addr < 0x01000000 || addr >= 0xe0000000) return 'not a unicast address'
    const refusal = this.o.refuse(x)
    if (refusal !== null) return refusal
    if (next.size >= this.o.maxPerClient) return `over the limit of ${this.o.maxPerClient} destinations per client`
    const p = this.probes.get(x)
    if ((p === undefined || p.refs === 0) && this.live >= this.o.maxDestinations) {
      return `the node is probing as many destinations as it will (${this.o.maxDestinations})`
    }
    if (!old.has(x) && !c.adds.take()) return 'too many new destinations lately: try again in a minute'
    return null
  }

  private acquire(dest: string): void {
    const p = this.probes.get(dest)
    if (p !== undefined) {
      if (p.refs++ === 0) this.live++
      return
    }
    const fresh: Probe = {dest, refs: 1, window: [], timer: undefined, abort: undefined}
    this.probes.set(dest, fresh)
    this.live++
    // First probe now, as far as the node-wide rate allows.
    this.enqueue(fresh)
  }

  private release(p: Probe): void {
    if (--p.refs === 0) this.live--
  }

  private stop(p: Probe): void {
    clearTimeout(p.timer)
    p.timer = undefined
    p.abort?.()
    this.due.delete(p)
    this.probes.delete(p.dest)
  }

  private enqueue(p: Probe): void {
    p.timer = undefined
    this.due.add(p)
    // From a timer of its own, not inside want(): a caller's loop never runs socket code.
    this.pumpSoon(0)
  }

  private pumpSoon(ms: number): void {
    if (this.pumpTimer !== undefined) return
    this.pumpTimer = setTimeout(() => {
      this.pumpTimer = undefined
      this.pump()
    }, ms)
    this.pumpTimer.unref()
  }

  /** Sends the due probes, oldest turn first, as the node-wide rate and in-flight caps allow. */
  private pump(): void {
    for (const p of this.due) {
      if (this.inFlight >= MAX_IN_FLIGHT) return // a probe's end pumps again
      const wait = this.rate.wait()
      if (wait > 0) return this.pumpSoon(wait)
      this.rate.take()
      this.due.delete(p)
      this.launch(p)
    }
  }

  private launch(p: Probe): void {
    const started = performance.now()
    this.inFlight++
    const abort = probeTcp(this.connect, p.dest, this.o.port, this.o.timeoutMs, (outcome) => {
      this.inFlight--
      p.abort = undefined
      if (outcome !== 'skip') {
        p.window.push(outcome === 'lost' ? null : outcome)
        if (p.window.length > WINDOW) p.window.shift()
      }
      // The interval runs from this probe's start, jittered so destinations do not fall into step.
      const delay = Math.max(0, this.o.intervalMs * (0.8 + 0.4 * Math.random()) - (performance.now() - started))
      p.timer = setTimeout(() => this.enqueue(p), delay)
      p.timer.unref()
      this.pump()
    })
    p.abort = () => {
      abort()
      this.inFlight--
      p.abort = undefined
    }
  }
}

/**
 * One TCP connect to host:port. `done` gets the RTT (SYN-ACK or RST), 'lost' (no answer within
 * timeoutMs, or an ICMP error) or 'skip' (the node's own shortage), always later, never twice,
 * never after the returned abort.
 */
function probeTcp(
  connect: (options: net.TcpNetConnectOpts) => net.Socket,
  host: string,
  port: number,
  timeoutMs: number,
  done: (outcome: Outcome) => void,
): () => void {
  const start = process.hrtime.bigint()
  const elapsedMs = () => Number(process.hrtime.bigint() - start) / 1e6
  let socket: net.Socket
  try {
    socket = connect({host, port})
  } catch {
    const later = setImmediate(() => done('skip'))
    return () => clearImmediate(later)
  }
  // A probe never holds the process up.
  socket.unref()
  let over = false
  const finish = (outcome: Outcome | undefined) => {
    if (over) return
    over = true
    clearTimeout(timer)
    if (!socket.destroyed) socket.destroy()
    if (outcome !== undefined) done(outcome)
  }
  const timer = setTimeout(() => finish('lost'), timeoutMs)
  timer.unref()
  socket.once('connect', () => {
    const rtt = elapsedMs()
    // A RST, not a FIN: the server's side is freed now, and the node keeps no TIME_WAIT.
    socket.resetAndDestroy()
    finish(rtt)
  })
  // Kept for the socket's life: an error after the outcome must not go unhandled.
  socket.on('error', (err: NodeJS.ErrnoException) => {
    const rtt = elapsedMs()
    finish(err.code === 'ECONNREFUSED' ? rtt : err.code !== undefined && LOCAL_ERRORS.has(err.code) ? 'skip' : 'lost')
  })
  return () => finish(undefined)
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  const mid = s.length >> 1
  return s.length % 2 === 1 ? s[mid] : (s[mid - 1] + s[mid]) / 2
}

/** A refused entry as echoed back: short, and never anything's toString. */
function echo(x: unknown): string {
  if (typeof x !== 'string') return `(${x === null ? 'null' : typeof x})`
  return x.length > MAX_ECHO_LENGTH ? `${x.slice(0, MAX_ECHO_LENGTH)}…` : x
}

function checkInt(name: string, v: unknown, min: number, max: number): void {
  if (!(typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max)) {
    throw new RangeError(`game prober: ${name} must be an integer from ${min} to ${max}, got ${String(v)}`)
  }
}
