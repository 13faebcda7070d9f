/**
 * One session of the tls transport as the fuzzing client: the control handshake through Node's
 * TLS, then the move to native records, which this side writes itself (records.ts) so that it
 * can send what the real client never would. What goes in the records: RecordFuzzer.next.
 */
import {connect as netConnect, type Socket} from 'node:net'
import {Duplex} from 'node:stream'
import {connect as tlsConnect} from 'node:tls'
import {FrameDecoder, FrameType, encodeFrame} from '../../core/control/framing.js'
import {PROTOCOL_VERSION, type Welcome, decodeMessage, encodeMessage} from '../../core/control/messages.js'
import {EXPORTER_LABEL, RECORDS} from '../../core/control/native-records.js'
import {RECORD_SECRET_BYTES} from '../../core/carrier/native-stream.js'
import {ipv4ToNumber} from '../../core/net/ipv4.js'
import {tlsClientOptions, type Credentials} from '../../core/pki/index.js'
import {controlFuzz} from './control-fuzz.js'
import {type InnerSpec, TcpFlow, makeInner, mutateInner} from './packets.js'
import {CT_ALERT, CT_APPLICATION, CT_HANDSHAKE, RecordWriter, REC_CONTENT_MAX} from './records.js'
import type {Rng} from './rng.js'
import {type Budget, type FuzzClientOptions, type FuzzClientSummary, WELCOME_TIMEOUT_MS, count, sleep} from './session.js'

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

export async function tlsSession(o: FuzzClientOptions, credentials: Credentials, rng: Rng, budget: Budget, summary: FuzzClientSummary): Promise<string> {
  const raw = netConnect({host: o.host, port: o.port})
  raw.setNoDelay(true)
  let closed: string | null = null
  raw.on('close', () => (closed ??= 'connection closed'))
  raw.on('error', (e) => (closed ??= `connect or socket error: ${e.message}`))
  const tap = new Tap(raw)
  const tls = tlsConnect({...tlsClientOptions(credentials, o.nodeName), socket: tap})
  tls.on('error', (e) => (closed ??= `tls: ${e.message}`))
  let onWelcome: (w: {welcome: Welcome}) => void = () => {}
  const welcomed = new Promise<{welcome: Welcome}>((resolve) => (onWelcome = resolve))
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

