/**
 * The fuzzing client: a genuine, authenticated client of the node (a certificate the node
 * admits, the control handshake, the transport's own client session, authenticated keepalives
 * from its own UDP socket, so the node learns that endpoint), which then sends what a real client
 * never would. Its datagrams carry valid keys and SPIs from the learned endpoint, so they get
 * past the first checks and into the node's C: the fast path, ESP, the TUN write and the TCP
 * coalescing. On tls it writes the native records itself (records.ts). Over the control
 * connection it sends mutated control messages. When the node closes the connection (as it
 * should, for many of these), it connects again and goes on until its budget is spent.
 *
 * Run in a client namespace by run.ts: `node client.js '<FuzzClientOptions as JSON>'`; prints
 * progress on stderr and one JSON summary line (FuzzClientSummary) on stdout.
 */
import {createSocket, type Socket as UdpSocket} from 'node:dgram'
import {connect as netConnect, type Socket} from 'node:net'
import {Duplex} from 'node:stream'
import {connect as tlsConnect, type TLSSocket} from 'node:tls'
import {join} from 'node:path'
import {pathToFileURL} from 'node:url'
import {ControlConnection} from '../../core/control/connection.js'
import {FrameDecoder, FrameType, encodeFrame} from '../../core/control/framing.js'
import {PROTOCOL_VERSION, type ControlMessage, type Welcome, decodeMessage, encodeMessage} from '../../core/control/messages.js'
import {EXPORTER_LABEL, RECORDS} from '../../core/control/native-records.js'
import {RECORD_SECRET_BYTES} from '../../core/carrier/native-stream.js'
import {greCodec} from '../../core/codecs/gre/index.js'
import {KeepaliveKind, keepaliveKeys} from '../../core/nat/keepalive.js'
import {KeepaliveState} from '../../core/nat/session-keepalive.js'
import {ipv4ToNumber} from '../../core/net/ipv4.js'
import {loadCredentials, tlsClientOptions, type Credentials} from '../../core/pki/index.js'
import {CONTRACT_VERSION, type Session, type Span, type Transport} from '../../core/transport/contract.js'
import {sessionContext} from '../../core/transport/session-context.js'
import {type InnerSpec, TcpFlow, makeInner, mutateBytes, mutateInner} from './packets.js'
import {CT_ALERT, CT_APPLICATION, CT_HANDSHAKE, RecordWriter, REC_CONTENT_MAX} from './records.js'
import {Rng} from './rng.js'

export interface FuzzClientOptions {
  transport: string
  host: string
  port: number
  nodeName: string
  /** The client's PKI bundle (a certificate the node admits). */
  bundle: string
  /** The package root: plugins/<transport>/dist/index.js is loaded from there. */
  root: string
  /** Where the inner packets go (the testbed's target). */
  target: string
  packets: number
  seconds: number
  seed: number
  /** Packets (datagrams, or Data frames on tls) per second at most. */
  rate: number
}

export interface FuzzClientSummary {
  transport: string
  seed: number
  /** Datagrams sent (datagram transports) or Data frames sent in records (tls). */
  packets: number
  seconds: number
  /** Connections made, each authenticated and welcomed. */
  sessions: number
  /** What was sent, by kind. */
  kinds: Record<string, number>
  /** Why the node ended our connections, by reason. */
  closes: Record<string, number>
  /** Datagrams (or stream bytes) the node sent back. */
  received: number
  records?: number
}

const WELCOME_TIMEOUT_MS = 10_000
const ENDPOINT_TIMEOUT_MS = 10_000
const BURST = 64

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

class Budget {
  sent = 0
  readonly start = Date.now()
  constructor(readonly o: FuzzClientOptions) {}
  get done(): boolean {
    return this.sent >= this.o.packets || Date.now() - this.start >= this.o.seconds * 1000
  }
  /** How many packets may go now to keep to the rate (0: wait a little). */
  allowance(): number {
    const due = Math.floor(((Date.now() - this.start) / 1000) * this.o.rate) - this.sent
    return Math.max(0, Math.min(due, BURST, this.o.packets - this.sent))
  }
}

function count(map: Record<string, number>, key: string, n = 1): void {
  map[key] = (map[key] ?? 0) + n
}

/** A welcome over Node's TLS, through a ControlConnection or a bare frame decoder. */
interface Welcomed {
  welcome: Welcome
}

export async function runFuzzClient(o: FuzzClientOptions): Promise<FuzzClientSummary> {
  const rng = new Rng(o.seed)
  const credentials = await loadCredentials({bundle: o.bundle})
  const budget = new Budget(o)
  const summary: FuzzClientSummary = {transport: o.transport, seed: o.seed, packets: 0, seconds: 0, sessions: 0, kinds: {}, closes: {}, received: 0}
  const transport = o.transport === 'tls' ? null : await loadTransport(o)
  let lastReport = Date.now()
  let failedInARow = 0
  while (!budget.done) {
    const welcomedBefore = summary.sessions
    const reason =
      transport === null ? await tlsSession(o, credentials, rng.fork(), budget, summary) : await datagramSession(o, transport, credentials, rng.fork(), budget, summary)
    count(summary.closes, reason.replace(/\d+/g, 'N'))
    // Welcomed sessions reset the count; a node that stops welcoming us is a finding of its own.
    failedInARow = summary.sessions === welcomedBefore ? failedInARow + 1 : 0
    if (failedInARow >= 5) throw new Error(`the node stopped welcoming us: ${reason}`)
    if (Date.now() - lastReport > 5000) {
      lastReport = Date.now()
      process.stderr.write(`fuzz ${o.transport}: ${budget.sent} packets, ${summary.sessions} sessions\n`)
    }
    if (!budget.done) await sleep(100)
  }
  summary.packets = budget.sent
  summary.seconds = (Date.now() - budget.start) / 1000
  return summary
}

async function loadTransport(o: FuzzClientOptions): Promise<Transport> {
  const mod = (await import(pathToFileURL(join(o.root, 'plugins', o.transport, 'dist', 'index.js')).href)) as {
    default: (opts: {core: {contractVersion: 1; gre: typeof greCodec}}) => Promise<Transport>
  }
  return mod.default({core: {contractVersion: CONTRACT_VERSION, gre: greCodec}})
}

// ---------------------------------------------------------------- datagram transports

/**
 * One authenticated session of a datagram transport, fuzzed until the budget is spent or the
 * node ends it; resolves with why it ended.
 */
async function datagramSession(o: FuzzClientOptions, transport: Transport, credentials: Credentials, rng: Rng, budget: Budget, summary: FuzzClientSummary): Promise<string> {
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
  const port = w.carrier.port!
  const udp: UdpSocket = createSocket('udp4')
  await new Promise<void>((resolve) => udp.bind(0, resolve))
  let learned = false
  udp.on('message', () => {
    // The node sends to an endpoint only once an authenticated keepalive taught it: the first
    // datagram back says our endpoint is learned.
    learned = true
    summary.received++
  })
  const keys = keepaliveKeys(conn.socket, 'client')
  const keepalive = new KeepaliveState(keys.receive, keys.send)
  const src = ipv4ToNumber(w.address)
  const gateway = ipv4ToNumber(w.gateway)
  const sendKeepalive = () => {
    const k = keepalive.build(s, src, gateway, KeepaliveKind.Request)
    if (k !== null) udp.send(k.buf, k.span.offset, k.span.length, port, o.host)
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
    const until = Date.now() + ENDPOINT_TIMEOUT_MS
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
          udp.send(d, port, o.host)
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
    udp.close()
    conn.close('fuzz session over')
    s.close()
  }
}

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
    if (r < 82) return this.one('outer', null, (b, off, len) => mutateBytes(b, off, len, b.length, this.rng))
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

  private one(kind: string, inner: ((b: Buffer, off: number, len: number) => number) | null, outer: ((b: Buffer, off: number, len: number) => number) | null): Buffer[] {
    let len = makeInner(this.scratch, 256, 2048, this.spec, this.rng)
    if (inner !== null) len = inner(this.scratch, 256, len)
    const d = this.encap(len)
    if (d === null) return []
    count(this.kinds, kind)
    if (outer === null) return [d]
    const room = Buffer.alloc(d.length + 64)
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

// ---------------------------------------------------------------- control messages

/** A control message as an authenticated client might garble it. */
function controlFuzz(rng: Rng, calm: boolean): Buffer {
  const spi = rng.pick([0, 1, 255, 256, 0xffffffff, rng.u32()])
  const messages: unknown[] = [
    {type: 'transport', body: {hello: true, spi}},
    {type: 'transport', body: {ack: rng.int(5), spi}},
    {type: 'transport', body: {rekey: rng.int(5), spi}},
    {type: 'transport', body: {spi: rng.u32() * 1000, x: 'y'.repeat(rng.int(2000))}},
    {type: 'transport', body: Object.fromEntries(Array.from({length: rng.int(200)}, (_, i) => [`k${i}`, rng.u32()]))},
    {type: 'hello', version: PROTOCOL_VERSION, transport: rng.pick(['tls', 'gre', 'ipip', 'ipsec-over-gre', ''])},
    {type: 'welcome', version: 1},
    {type: 'refused', reason: 'x'},
    {type: 'transport', body: {nested: {a: 1}}},
    {type: rng.u32()},
    [1, 2, 3],
  ]
  // A calm session says only what a node should take without ending the connection: transport
  // messages, well formed, whatever they ask (so it lives long enough to see rekeys).
  let text = JSON.stringify(calm ? messages[rng.int(5)] : rng.pick(messages))
  if (calm) return Buffer.from(text)
  if (rng.chance(0.3)) {
    // Byte damage to the JSON itself.
    const b = Buffer.from(text)
    return b.subarray(0, mutateBytes(b, 0, b.length, b.length, rng))
  }
  if (rng.chance(0.1)) text = text.slice(0, rng.int(text.length))
  return Buffer.from(text)
}

/** Over Node's TLS (datagram transports' control connection). */
function sendControlFuzz(socket: TLSSocket, rng: Rng, kinds: Record<string, number>, calm: boolean): void {
  const r = calm ? 0 : rng.int(10)
  if (r < 7) {
    count(kinds, 'control')
    socket.write(encodeFrame(FrameType.Control, controlFuzz(rng, calm)))
  } else if (r < 8) {
    count(kinds, 'control-ping')
    socket.write(encodeFrame(FrameType.Ping))
  } else if (r < 9) {
    // A Data frame on a datagram session's control connection.
    count(kinds, 'control-data')
    const b = Buffer.alloc(rng.int(1500))
    rng.fill(b)
    socket.write(encodeFrame(FrameType.Data, b))
  } else {
    count(kinds, 'control-raw')
    const b = Buffer.alloc(1 + rng.int(64))
    rng.fill(b)
    socket.write(b)
  }
}

// ---------------------------------------------------------------- tls: native records

/**
 * Node's TLS on a socket we keep: until the welcome the bytes go through Node's TLS; after it
 * (when both ends move to native records) they are ours to write and read.
 */
class Tap extends Duplex {
  cut = false
  constructor(readonly raw: Socket) {
    super()
    raw.on('data', (b: Buffer) => {
      if (!this.cut) this.push(b)
    })
    raw.on('end', () => {
      if (!this.cut) this.push(null)
    })
    raw.on('error', (e) => {
      if (!this.cut) this.destroy(e)
    })
  }
  override _read(): void {}
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (e?: Error | null) => void): void {
    if (this.cut) return cb()
    this.raw.write(chunk, cb)
  }
  override _destroy(e: Error | null, cb: (e?: Error | null) => void): void {
    cb(e)
  }
}

async function tlsSession(o: FuzzClientOptions, credentials: Credentials, rng: Rng, budget: Budget, summary: FuzzClientSummary): Promise<string> {
  const raw = netConnect({host: o.host, port: o.port})
  raw.setNoDelay(true)
  let closed: string | null = null
  raw.on('close', () => (closed ??= 'connection closed'))
  raw.on('error', (e) => (closed ??= `connect or socket error: ${e.message}`))
  const tap = new Tap(raw)
  const tls = tlsConnect({...tlsClientOptions(credentials, o.nodeName), socket: tap})
  tls.on('error', (e) => (closed ??= `tls: ${e.message}`))
  let onWelcome: (w: Welcomed) => void = () => {}
  const welcomed = new Promise<Welcomed>((resolve) => (onWelcome = resolve))
  const decoder = new FrameDecoder(0xffff, (type, buf, off, len) => {
    if (type !== FrameType.Control) return
    const m = decodeMessage(buf, off, len)
    if (m.type === 'welcome') {
      // The node writes nothing more through Node's TLS: what follows is native records.
      tap.cut = true
      onWelcome({welcome: m})
    } else if (m.type === 'refused') closed = `refused: ${m.reason}`
  })
  tls.on('data', (b: Buffer) => {
    if (!tap.cut) decoder.push(b)
  })
  tls.once('secureConnect', () => tls.write(encodeFrame(FrameType.Control, encodeMessage({type: 'hello', version: PROTOCOL_VERSION, transport: 'tls', records: RECORDS}))))
  const got = await Promise.race([welcomed, sleep(WELCOME_TIMEOUT_MS).then(() => null)])
  const end = () => {
    tls.removeAllListeners()
    tls.on('error', () => {})
    raw.destroy()
  }
  if (got === null || closed !== null) {
    end()
    return `no welcome (${closed ?? 'timeout'})`
  }
  const w = got.welcome
  if (w.records !== RECORDS) {
    end()
    throw new Error(`the node did not agree to native records (welcome.records ${JSON.stringify(w.records)}): the tls fuzz would not reach stream.c`)
  }
  summary.sessions++
  const keys = tls.exportKeyingMaterial(2 * RECORD_SECRET_BYTES, EXPORTER_LABEL, Buffer.alloc(0))
  const writer = new RecordWriter(keys.subarray(0, RECORD_SECRET_BYTES))
  raw.on('data', (b: Buffer) => (summary.received += b.length))
  const spec: InnerSpec = {src: ipv4ToNumber(w.address), dst: ipv4ToNumber(o.target), mtu: w.mtu}
  const maxData = Math.min(w.mtu, 16381)
  const fuzzer = new RecordFuzzer(writer, spec, rng, summary.kinds, maxData)
  try {
    // The first record, as the real client's: a Ping, which lets the node write.
    await write(raw, writer.seal(encodeFrame(FrameType.Ping), CT_APPLICATION))
    const calmUntil = fuzzer.calm ? Date.now() + 12_000 + rng.int(13_000) : Infinity
    while (closed === null && !budget.done) {
      if (Date.now() >= calmUntil) return 'calm session over'
      const n = budget.allowance()
      if (n === 0) {
        await sleep(1)
        continue
      }
      const {bytes, frames} = fuzzer.next(n)
      budget.sent += frames
      await write(raw, bytes)
    }
    return closed ?? 'budget spent'
  } finally {
    summary.records = (summary.records ?? 0) + writer.records
    end()
  }
}

function write(raw: Socket, b: Buffer): Promise<void> {
  if (raw.destroyed) return Promise.resolve()
  return raw.write(b) ? Promise.resolve() : new Promise((r) => raw.once('drain', r).once('close', r))
}

/** Records for the tls transport's native stream: mostly valid ones full of fuzzed frames. */
class RecordFuzzer {
  private flow: TcpFlow
  /** No record that ends the connection, no control message that would (see controlFuzz). */
  readonly calm: boolean
  /**
   * How a session that is not calm comes to its end: a record stream.c must refuse, or a
   * control message the node must refuse (one each, so neither hides the other).
   */
  private readonly ending: 'record' | 'control' | 'none'
  private frames = 0
  private nextFatal: number
  private nextKeyUpdate: number
  private nextControl: number
  private readonly scratch = Buffer.alloc(70_000)

  constructor(
    private readonly writer: RecordWriter,
    private readonly spec: InnerSpec,
    private readonly rng: Rng,
    private readonly kinds: Record<string, number>,
    private readonly maxData: number,
  ) {
    this.flow = new TcpFlow(rng)
    this.calm = rng.chance(0.25)
    this.ending = this.calm ? 'none' : rng.chance(0.6) ? 'record' : 'control'
    this.nextFatal = rng.int(20_000)
    this.nextKeyUpdate = rng.int(20_000)
    this.nextControl = rng.int(12_000)
  }

  /** Up to `want` Data frames' worth of records; says how many Data frames went. */
  next(want: number): {bytes: Buffer; frames: number} {
    // Spaced by Data frames sent, not by chance per record: the record that ends the connection
    // (and costs a reconnect), a KeyUpdate, a control message, each now and then.
    if (this.frames >= this.nextFatal && this.ending === 'record') {
      this.nextFatal = this.frames + 20_000 + this.rng.int(60_000)
      return {bytes: this.fatalRecord(), frames: 0}
    }
    if (this.frames >= this.nextKeyUpdate) {
      this.nextKeyUpdate = this.frames + 5_000 + this.rng.int(20_000)
      count(this.kinds, 'key-update')
      return {bytes: this.writer.keyUpdate(this.rng.chance(0.5)), frames: 0}
    }
    if (this.frames >= this.nextControl) {
      this.nextControl = this.frames + 2_000 + this.rng.int(10_000)
      count(this.kinds, 'control')
      return {bytes: this.writer.seal(encodeFrame(FrameType.Control, controlFuzz(this.rng, this.ending !== 'control')), CT_APPLICATION), frames: 0}
    }
    const frames: Buffer[] = []
    let size = 0
    let data = 0
    const run = this.rng.chance(0.2)
    if (run && this.rng.chance(0.2)) this.flow = new TcpFlow(this.rng)
    while (data < want) {
      const f = this.frame(run)
      if (size + f.length > REC_CONTENT_MAX - 1 - 256) break
      frames.push(f)
      size += f.length
      if (f[0] === FrameType.Data) data++
      if (!run && this.rng.chance(0.3)) break
    }
    const pad = this.rng.chance(0.1) ? this.rng.int(Math.min(256, REC_CONTENT_MAX - 1 - size)) : 0
    this.frames += data
    return {bytes: this.writer.seal(Buffer.concat(frames), CT_APPLICATION, pad), frames: data}
  }

  private frame(run: boolean): Buffer {
    const r = this.rng.int(100)
    if (!run && r < 5) {
      count(this.kinds, 'ping-pong')
      return encodeFrame(this.rng.chance(0.7) ? FrameType.Ping : FrameType.Pong, this.rng.chance(0.9) ? Buffer.alloc(0) : Buffer.alloc(this.rng.int(8)))
    }
    let len: number
    if (run) {
      len = makeInner(this.scratch, 0, 2048, this.spec, this.rng, this.flow, this.spec.mtu - 52)
      count(this.kinds, 'tcp-run-segment')
    } else if (r < 15) {
      len = this.rng.int(Math.min(this.maxData, 2048) + 1)
      this.rng.fill(this.scratch, 0, len)
      count(this.kinds, 'random')
    } else {
      len = makeInner(this.scratch, 0, 2048, this.spec, this.rng)
      if (this.rng.chance(0.6)) {
        len = mutateInner(this.scratch, 0, len, Math.min(this.maxData, 2048), this.rng)
        count(this.kinds, 'inner')
      } else count(this.kinds, 'valid')
    }
    return encodeFrame(FrameType.Data, this.scratch.subarray(0, len))
  }

  /** A record stream.c must refuse: each ends the connection. */
  private fatalRecord(): Buffer {
    const what = this.rng.int(10)
    count(this.kinds, `fatal-${what}`)
    const frame = encodeFrame(FrameType.Data, Buffer.alloc(40))
    switch (what) {
      case 0: return this.writer.seal(frame.subarray(0, 20), CT_APPLICATION) // a frame split across records
      case 1: return this.writer.seal(Buffer.from([4 + this.rng.int(250), 0, 0]), CT_APPLICATION) // unknown frame type
      case 2: return this.writer.seal(Buffer.from([FrameType.Data, 0xff, 0xff]), CT_APPLICATION) // too large for its type
      case 3: return this.writer.seal(frame, this.rng.pick([0, 1, 20, 24, 255])) // unexpected content type
      case 4: return this.writer.seal(Buffer.from([2, 10]), CT_ALERT)
      case 5: return this.writer.seal(Buffer.from([24, 0, 0, 1, 2 + this.rng.int(250)]), CT_HANDSHAKE) // not a KeyUpdate
      case 6: return this.writer.seal(frame, CT_APPLICATION, 0, {at: this.rng.int(1000)}) // damaged
      case 7: { // a header that lies about the length
        const b = this.writer.seal(frame, CT_APPLICATION)
        b.writeUInt16BE(this.rng.pick([0, 1, 16, 17, 0x4200, 0xffff]), 3)
        return b
      }
      case 8: return this.writer.seal(Buffer.alloc(0), 0, this.rng.int(16)) // no content type, only padding
      default: {
        const b = Buffer.alloc(1 + this.rng.int(200))
        this.rng.fill(b)
        return b
      }
    }
  }
}

// ---------------------------------------------------------------- main

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const o = JSON.parse(process.argv[2] ?? '{}') as FuzzClientOptions
  runFuzzClient(o).then(
    (s) => {
      process.stdout.write(`${JSON.stringify(s)}\n`)
      process.exit(0)
    },
    (e: Error) => {
      process.stderr.write(`fuzz client failed: ${e.stack ?? e.message}\n`)
      process.exit(1)
    },
  )
}
