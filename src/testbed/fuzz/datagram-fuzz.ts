/**
 * One session of a datagram transport (ipip, gre, ipsec-over-gre) as the fuzzing client: the
 * control handshake, the transport's own client session, authenticated keepalives from our own
 * UDP socket until the node answers (it has then learned our endpoint), and then datagrams
 * with the session's real key and SPI from that endpoint, so they get past the first checks
 * and into the node's C. What goes in them: DatagramFuzzer.next.
 */
import {createSocket, type Socket as UdpSocket} from 'node:dgram'
import {connect as tlsConnect} from 'node:tls'
import {ControlConnection} from '../../core/control/connection.js'
import {PROTOCOL_VERSION, type ControlMessage, type Welcome} from '../../core/control/messages.js'
import {KeepaliveKind, keepaliveKeys} from '../../core/nat/keepalive.js'
import {KeepaliveState} from '../../core/nat/session-keepalive.js'
import {ipv4ToNumber} from '../../core/net/ipv4.js'
import {tlsClientOptions, type Credentials} from '../../core/pki/index.js'
import {openCarrierSocket} from '../../core/carrier/carrier-socket.js'
import type {CarrierSpec, Session, Span, Transport} from '../../core/transport/contract.js'
import {sessionContext} from '../../core/transport/session-context.js'
import {sendControlFuzz} from './control-fuzz.js'
import {type InnerSpec, TcpFlow, makeInner, mutateBytes, mutateInner} from './packets.js'
import type {Rng} from './rng.js'
import {type Budget, type FuzzClientOptions, type FuzzClientSummary, WELCOME_TIMEOUT_MS, count, sleep} from './session.js'

/**
 * One authenticated session of a datagram transport, fuzzed until the budget is spent or the
 * node ends it; resolves with why it ended.
 */
export async function datagramSession(o: FuzzClientOptions, transport: Transport, credentials: Credentials, rng: Rng, budget: Budget, summary: FuzzClientSummary): Promise<string> {
  const socket = tlsConnect({...tlsClientOptions(credentials, o.nodeName), host: o.host, port: o.port})
  let closed: string | null = null
  let session: Session | null = null
  const early: ControlMessage[] = []
  let onWelcome: (w: Welcome) => void = () => {}
  const welcomed = new Promise<Welcome>((resolve) => (onWelcome = resolve))
  const conn = new ControlConnection(socket, 0xffff, {
    onMessage: (m) => {
      if (m.type === 'welcome') onWelcome(m)
      else if (m.type === 'transport') {
        // The node's rekeys (ipsec-over-gre): counted, as evidence the fuzz ran through them.
        if (typeof m.body.rekey === 'number') count(summary.kinds, 'node-rekey')
        // The real session answers rekeys: the fuzz goes on under each new SA.
        if (session !== null) session.onControl?.(m.body)
        else early.push(m)
      } else if (m.type === 'refused') closed = `refused: ${m.reason}`
    },
    onData: () => {},
    onClose: (reason) => (closed ??= reason),
  })
  socket.once('secureConnect', () => conn.send({type: 'hello', version: PROTOCOL_VERSION, transport: o.transport}))
  const w = await Promise.race([welcomed, sleep(WELCOME_TIMEOUT_MS).then(() => null)])
  if (w === null || closed !== null) {
    conn.close('fuzz: no welcome')
    return `no welcome (${closed ?? 'timeout'})`
  }
  summary.sessions++
  const ctx = sessionContext({
    role: 'client',
    transport: o.transport,
    peerName: 'fuzz',
    tunnelAddress: w.address,
    nodeAddress: w.gateway,
    options: {},
    mtu: w.mtu,
    conn,
    fastPathChanged: () => {},
  })
  const s = transport.openClientSession(ctx, w.params)
  session = s
  for (const m of early.splice(0)) if (m.type === 'transport') s.onControl?.(m.body)
  conn.keepalive(w.keepalive, true)
  let learned = false
  // The node sends to an endpoint only once an authenticated keepalive taught it: the first
  // datagram back says our endpoint is learned.
  const carrier = await openCarrier(w.carrier, o.host, () => {
    learned = true
    summary.received++
  })
  const keys = keepaliveKeys(conn.socket, 'client')
  const keepalive = new KeepaliveState(keys.receive, keys.send)
  const src = ipv4ToNumber(w.address)
  const gateway = ipv4ToNumber(w.gateway)
  const sendKeepalive = () => {
    const k = keepalive.build(s, src, gateway, KeepaliveKind.Request)
    if (k !== null) carrier.send(k.buf.subarray(k.span.offset, k.span.offset + k.span.length))
  }
  const tick = setInterval(() => {
    sendKeepalive()
    try {
      s.tick?.(Date.now())
    } catch {
      // A session that throws on a tick is the fuzz client's problem, not the node's.
    }
  }, 1000)
  try {
    sendKeepalive()
    const until = Date.now() + WELCOME_TIMEOUT_MS
    while (!learned && closed === null && Date.now() < until) await sleep(50)
    if (!learned) return closed ?? 'the node never answered a keepalive'
    const spec: InnerSpec = {src, dst: ipv4ToNumber(o.target), mtu: w.mtu}
    const fuzzer = new DatagramFuzzer(s, spec, rng, summary.kinds, keepalive, gateway)
    // Most sessions end on a garbled control message sooner or later; a calm one runs on.
    // It still ends, after more than ipsec-over-gre's shortest rekey interval (10 s): sessions
    // coming and going under traffic is part of what is tested.
    const calm = rng.chance(0.25)
    const calmUntil = calm ? Date.now() + 12_000 + rng.int(13_000) : Infinity
    let nextControl = budget.sent + rng.int(17_000)
    while (closed === null && !budget.done) {
      if (Date.now() >= calmUntil) return 'calm session over'
      const n = budget.allowance()
      if (n === 0) {
        await sleep(1)
        continue
      }
      for (let i = 0; i < n; ) {
        for (const d of fuzzer.next()) {
          carrier.send(d)
          i++
          budget.sent++
        }
      }
      if (budget.sent >= nextControl) {
        nextControl = budget.sent + 2_000 + rng.int(15_000)
        sendControlFuzz(conn.socket, rng, summary.kinds, calm)
      }
      // Let the socket's sends and the node's answers through.
      await new Promise((r) => setImmediate(r))
    }
    return closed ?? 'budget spent'
  } finally {
    clearInterval(tick)
    carrier.close()
    conn.close('fuzz session over')
    s.close()
  }
}

interface Carrier {
  send(d: Buffer): void
  close(): void
}

/**
 * Our end of the carrier: a UDP socket (through the NAT), or for carrier ip a raw socket of the
 * core's own (the kernel writes the outer IPv4 header; this namespace must reach the node
 * without NAT). `onReceive` for each datagram from the node.
 */
async function openCarrier(spec: CarrierSpec, host: string, onReceive: () => void): Promise<Carrier> {
  if (spec.kind === 'udp') {
    const udp: UdpSocket = createSocket('udp4')
    await new Promise<void>((resolve) => udp.bind(0, resolve))
    udp.on('message', onReceive)
    return {send: (d) => udp.send(d, spec.port!, host), close: () => udp.close()}
  }
  const raw = openCarrierSocket(spec, RAW_MTU, '0.0.0.0', 0)
  const node = ipv4ToNumber(host)
  raw.start((count, ring) => {
    for (let i = 0; i < count; i++) if (ring.addrs[i] === node) onReceive()
  })
  return {
    // A raw socket takes no more than its ring's payload; longer ones are cut to that.
    send: (d) => void raw.send(d, 0, Math.min(d.length, RAW_MTU), node, 0),
    close: () => raw.close(),
  }
}

/** The payload size the fuzzer's raw socket is opened for (and sends at most). */
const RAW_MTU = 9000

/** What goes in each datagram: see next(). */
class DatagramFuzzer {
  private flow: TcpFlow
  private readonly scratch = Buffer.alloc(70_000)
  private readonly span: Span = {offset: 0, length: 0}
  private readonly sentBefore: Buffer[] = []

  constructor(
    private readonly session: Session,
    private readonly spec: InnerSpec,
    private readonly rng: Rng,
    private readonly kinds: Record<string, number>,
    private readonly keepalive: KeepaliveState,
    private readonly gateway: number,
  ) {
    this.flow = new TcpFlow(rng)
  }

  /** The next datagram(s) to send (a TCP run is several at once). */
  next(): Buffer[] {
    const r = this.rng.int(100)
    if (r < 3) return this.tcpRun()
    if (r < 55) return this.one('inner', (b, off, len) => (this.rng.chance(0.65) ? mutateInner(b, off, len, this.spec.mtu + 64, this.rng) : len), null)
    if (r < 80) return this.one('outer', null, (b, off, len) => mutateBytes(b, off, len, b.length, this.rng))
    if (r < 82) {
      // Valid, then longer than the MTU, or than the node's ring slots (which cut it short).
      const more = this.rng.pick([1, 16, 100, 1500, 4000, 9000])
      return this.one('oversize', null, (b, off, len) => {
        this.rng.fill(b, off + len, off + len + more)
        return len + more
      }, more)
    }
    if (r < 90) {
      const len = this.rng.int(this.spec.mtu + 100)
      const d = Buffer.allocUnsafe(len)
      this.rng.fill(d)
      // Random bytes behind a valid-looking first word sometimes, so the GRE and ESP parsers get further.
      if (len >= 8 && this.rng.chance(0.5)) this.validPrefix(d)
      count(this.kinds, 'random')
      return [d]
    }
    if (r < 95) {
      const k = this.keepalive.build(this.session, this.spec.src, this.gateway, KeepaliveKind.Request)
      if (k === null) return []
      const d = Buffer.from(k.buf.subarray(k.span.offset, k.span.offset + k.span.length))
      count(this.kinds, 'keepalive-mutated')
      return [d.subarray(0, mutateBytes(d, 0, d.length, d.length, this.rng))]
    }
    // A replay of something sent before, as is or with its sequence number changed.
    count(this.kinds, 'replay')
    if (this.sentBefore.length === 0) return []
    const d = Buffer.from(this.rng.pick(this.sentBefore))
    if (this.rng.chance(0.5) && d.length >= 16) d.writeUInt32BE(this.rng.u32(), 12)
    return [d]
  }

  private validPrefix(d: Buffer): void {
    const good = this.encap(makeInner(this.scratch, 256, 2048, this.spec, this.rng))
    if (good !== null) good.copy(d, 0, 0, Math.min(good.length, d.length, 16))
  }

  /** Encapsulates the packet at scratch[256, 256+len) with the real session; a copy to send. */
  private encap(len: number): Buffer | null {
    if (!this.session.encap(this.scratch, 256, len, this.span)) {
      count(this.kinds, 'encap-refused')
      return null
    }
    const d = Buffer.from(this.scratch.subarray(this.span.offset, this.span.offset + this.span.length))
    if (this.sentBefore.length < 32) this.sentBefore.push(d)
    else if (this.rng.chance(0.01)) this.sentBefore[this.rng.int(32)] = d
    return d
  }

  private one(kind: string, inner: ((b: Buffer, off: number, len: number) => number) | null, outer: ((b: Buffer, off: number, len: number) => number) | null, slack = 64): Buffer[] {
    let len = makeInner(this.scratch, 256, 2048, this.spec, this.rng)
    if (inner !== null) len = inner(this.scratch, 256, len)
    const d = this.encap(len)
    if (d === null) return []
    count(this.kinds, kind)
    if (outer === null) return [d]
    const room = Buffer.alloc(d.length + slack)
    d.copy(room)
    return [room.subarray(0, outer(room, 0, d.length))]
  }

  /** Consecutive segments of one TCP flow in a burst, so the node's coalescer has runs to merge. */
  private tcpRun(): Buffer[] {
    if (this.rng.chance(0.2)) this.flow = new TcpFlow(this.rng)
    const n = 2 + this.rng.int(40)
    const size = this.rng.chance(0.7) ? this.spec.mtu - 52 : 1 + this.rng.int(this.spec.mtu - 52)
    const out: Buffer[] = []
    for (let i = 0; i < n; i++) {
      let len = makeInner(this.scratch, 256, 2048, this.spec, this.rng, this.flow, i === n - 1 && this.rng.chance(0.3) ? this.rng.int(size + 1) : size)
      if (this.rng.chance(0.05)) len = mutateInner(this.scratch, 256, len, this.spec.mtu + 64, this.rng)
      // Now and then a gap or an overlap in the sequence.
      if (this.rng.chance(0.03)) this.flow.seq = (this.flow.seq + this.rng.int(3000) - 1500) >>> 0
      const d = this.encap(len)
      if (d !== null) out.push(d)
    }
    count(this.kinds, 'tcp-run-segment', out.length)
    return out
  }
}

