/**
 * The tls data channel's records in C (src/core/carrier/native/stream.c), against a peer written
 * here from RFC 8446 with node:crypto: key and IV from a traffic secret by HKDF-Expand-Label
 * with SHA-256 (7.1, 7.3; checked against RFC 8448's trace), TLS 1.3 application data records,
 * AES-256-GCM, nonce = IV xor the 64-bit record number, the 5-byte header as additional data,
 * the content type inside after the frames, optional zero padding (5.2-5.4), and KeyUpdate
 * (4.6.3, 7.2). The native end runs on one side of a loopback TCP connection (its socket taken
 * from Node, as native-records.ts does), the reference on the other.
 */
import {createCipheriv, createDecipheriv, createHmac, randomBytes} from 'node:crypto'
import {type AddressInfo, type Server, type Socket, createServer, connect} from 'node:net'
import {afterEach, describe, expect, it} from 'vitest'
import {NativeStream} from '../../src/core/carrier/native-stream.js'
import {FrameType, encodeFrame} from '../../src/core/control/framing.js'

const CT_APPLICATION = 23
const CT_HANDSHAKE = 22
const CT_ALERT = 21

/** HKDF-Expand-Label(secret, label, "", length) with SHA-256, length <= 32 (RFC 8446 7.1). */
function expandLabel(secret: Buffer, label: string, length: number): Buffer {
  const full = Buffer.from(`tls13 ${label}`)
  const info = Buffer.concat([Buffer.from([length >> 8, length & 0xff, full.length]), full, Buffer.from([0])])
  return createHmac('sha256', secret).update(info).update(Buffer.from([1])).digest().subarray(0, length)
}

/** A KeyUpdate handshake message (RFC 8446 4.6.3). */
const keyUpdateMessage = (requested: boolean) => Buffer.from([24, 0, 0, 1, requested ? 1 : 0])

/** One direction of the reference record layer. */
class RefRecords {
  seq = 0n
  private key!: Buffer
  private iv!: Buffer
  constructor(private secret: Buffer) {
    this.rekey()
  }

  private rekey(): void {
    this.key = expandLabel(this.secret, 'key', 32)
    this.iv = expandLabel(this.secret, 'iv', 12)
    this.seq = 0n
  }

  /** Moves to the next traffic secret (RFC 8446 7.2). */
  update(): void {
    this.secret = expandLabel(this.secret, 'traffic upd', 32)
    this.rekey()
  }

  private nonce(): Buffer {
    const iv = Buffer.from(this.iv)
    const seq = Buffer.alloc(8)
    seq.writeBigUInt64BE(this.seq++)
    for (let i = 0; i < 8; i++) iv[4 + i] ^= seq[i]
    return iv
  }

  seal(content: Buffer, type = CT_APPLICATION, padding = 0): Buffer {
    const inner = Buffer.concat([content, Buffer.from([type]), Buffer.alloc(padding)])
    const header = Buffer.from([CT_APPLICATION, 3, 3, 0, 0])
    header.writeUInt16BE(inner.length + 16, 3)
    const c = createCipheriv('aes-256-gcm', this.key, this.nonce())
    c.setAAD(header)
    const body = Buffer.concat([c.update(inner), c.final()])
    return Buffer.concat([header, body, c.getAuthTag()])
  }

  /**
   * Opens every whole record in `bytes`; returns the frames of each record's content. A
   * KeyUpdate moves to the next key and shows as [{type: -1, payload: 'key update'}].
   */
  open(bytes: Buffer): {type: number; payload: string}[][] {
    const out: {type: number; payload: string}[][] = []
    for (let off = 0; off < bytes.length; ) {
      const header = bytes.subarray(off, off + 5)
      expect([header[0], header[1], header[2]]).toEqual([CT_APPLICATION, 3, 3])
      const len = header.readUInt16BE(3)
      const body = bytes.subarray(off + 5, off + 5 + len - 16)
      const d = createDecipheriv('aes-256-gcm', this.key, this.nonce())
      d.setAAD(header)
      d.setAuthTag(bytes.subarray(off + 5 + len - 16, off + 5 + len))
      const inner = Buffer.concat([d.update(body), d.final()])
      off += 5 + len
      if (inner[inner.length - 1] === CT_HANDSHAKE) {
        expect(inner.subarray(0, inner.length - 1)).toEqual(keyUpdateMessage(false))
        this.update()
        out.push([{type: -1, payload: 'key update'}])
        continue
      }
      expect(inner[inner.length - 1]).toBe(CT_APPLICATION)
      const frames = []
      for (let f = 0; f < inner.length - 1; ) {
        const n = inner.readUInt16BE(f + 1)
        frames.push({type: inner[f], payload: inner.toString('hex', f + 3, f + 3 + n)})
        f += 3 + n
      }
      out.push(frames)
    }
    return out
  }
}

interface Pair {
  native: NativeStream
  /** The reference end's socket. */
  peer: Socket
  /** Reference records: what the peer sends (native's rx key), and what native sends. */
  toNative: RefRecords
  fromNative: RefRecords
  frames: {type: number; payload: string}[]
  closes: string[]
  received: () => Buffer
}

const open: {server: Server; sockets: Socket[]; native: NativeStream}[] = []

afterEach(() => {
  for (const o of open.splice(0)) {
    o.native.close()
    for (const s of o.sockets) s.destroy()
    o.server.close()
  }
})

/** A loopback connection whose server end is taken over by a native stream in `role`. */
async function pair(role: 'node' | 'client', maxData = 1500, keyUpdateAfter?: number): Promise<Pair> {
  const server = createServer()
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const accepted = new Promise<Socket>((r) => server.once('connection', r))
  const peer = connect((server.address() as AddressInfo).port, '127.0.0.1')
  await new Promise<void>((r) => peer.once('connect', () => r()))
  const mine = await accepted
  // As native-records.ts does with a TLS socket: Node stops reading, C takes a dup of the fd.
  const handle = (mine as unknown as {_handle: {fd: number; readStop(): number}})._handle
  handle.readStop()
  ;(mine as unknown as {_read: () => void})._read = () => {}
  const txKey = randomBytes(32)
  const rxKey = randomBytes(32)
  const frames: {type: number; payload: string}[] = []
  const closes: string[] = []
  const native = NativeStream.open(handle.fd, role, txKey, rxKey, maxData, {
    onFrame: (type, payload) => frames.push({type, payload: payload.toString('hex')}),
    onClose: (reason) => closes.push(reason),
  }, keyUpdateAfter)
  open.push({server, sockets: [peer, mine], native})
  const chunks: Buffer[] = []
  peer.on('data', (b: Buffer) => chunks.push(b))
  return {native, peer, toNative: new RefRecords(rxKey), fromNative: new RefRecords(txKey), frames, closes, received: () => Buffer.concat(chunks)}
}

async function until(what: string, cond: () => boolean, ms = 2000): Promise<void> {
  const deadline = Date.now() + ms
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 5))
  }
}

const frame = (type: number, hex: string) => encodeFrame(type as FrameType, Buffer.from(hex, 'hex'))

describe('native records: the reference key schedule', () => {
  it('derives RFC 8448\'s server handshake key and IV from its traffic secret', () => {
    // RFC 8448 section 3, "derive write traffic keys for handshake data" (TLS_AES_128_GCM_SHA256).
    const secret = Buffer.from('b67b7d690cc16c4e75e54213cb2d37b4e9c912bcded9105d42befd59d391ad38', 'hex')
    expect(expandLabel(secret, 'key', 16).toString('hex')).toBe('3fce516009c21727d0f2e4e86ee403bc')
    expect(expandLabel(secret, 'iv', 12).toString('hex')).toBe('5d313eb2671276ee13000b30')
  })
})

describe('native records: reading what an RFC 8446 peer sends', () => {
  it('hands control, ping and (with no fast path bound) data frames to JS, in order', async () => {
    const p = await pair('client')
    p.peer.write(p.toNative.seal(Buffer.concat([frame(FrameType.Control, '7b7d'), frame(FrameType.Ping, ''), frame(FrameType.Data, '4500')])))
    await until('three frames', () => p.frames.length === 3)
    expect(p.frames).toEqual([
      {type: FrameType.Control, payload: '7b7d'},
      {type: FrameType.Ping, payload: ''},
      {type: FrameType.Data, payload: '4500'},
    ])
    expect(p.native.stats().recordsIn).toBe(1)
    expect(p.native.lastHeard()).toBeGreaterThan(Date.now() - 5000)
  })

  it('answers pings itself once JS has had a frame, one pong per wakeup, and keeps pongs from JS', async () => {
    const p = await pair('node')
    p.peer.write(p.toNative.seal(frame(FrameType.Ping, ''))) // the first record: JS's (it answers)
    await until('the first ping', () => p.frames.length === 1)
    expect(p.frames).toEqual([{type: FrameType.Ping, payload: ''}])
    p.native.send(FrameType.Pong, new Uint8Array(0))
    const heard = p.native.lastHeard()
    await new Promise((r) => setTimeout(r, 20))
    p.peer.write(p.toNative.seal(Buffer.concat([frame(FrameType.Ping, ''), frame(FrameType.Ping, ''), frame(FrameType.Pong, '')])))
    await until('a pong', () => p.native.stats().pingsAnswered === 1 && p.native.stats().queuedBytes === 0)
    p.peer.write(p.toNative.seal(frame(FrameType.Pong, '')))
    p.peer.write(p.toNative.seal(frame(FrameType.Control, '7b7d')))
    await until('the message', () => p.frames.length === 2)
    expect(p.frames[1]).toEqual({type: FrameType.Control, payload: '7b7d'})
    await new Promise((r) => setTimeout(r, 20))
    const pong = [{type: FrameType.Pong, payload: ''}]
    expect(p.fromNative.open(p.received())).toEqual([pong, pong]) // JS's, then one for the record of two pings
    expect(p.native.stats()).toMatchObject({recordsIn: 4, pingsAnswered: 1})
    expect(p.native.lastHeard()).toBeGreaterThan(heard)
    // A ping with a payload is not a keepalive of ours: JS decides.
    p.peer.write(p.toNative.seal(frame(FrameType.Ping, '01')))
    await until('the odd ping', () => p.frames.length === 3)
    expect(p.frames[2]).toEqual({type: FrameType.Ping, payload: '01'})
  })

  it('answers a flood of ping records with a few pongs, never one each', async () => {
    const p = await pair('client')
    p.peer.write(p.toNative.seal(frame(FrameType.Control, '7b7d')))
    await until('the message', () => p.frames.length === 1)
    const flood = Buffer.concat(Array.from({length: 5_000}, () => p.toNative.seal(frame(FrameType.Ping, ''))))
    p.peer.write(flood)
    await until('all of it read', () => p.native.stats().recordsIn === 5_001)
    await new Promise((r) => setTimeout(r, 20))
    const answered = p.native.stats().pingsAnswered
    expect(answered).toBeGreaterThanOrEqual(1)
    expect(answered).toBeLessThan(50) // one per wakeup: 125 KiB of records is a few reads
    expect(p.frames).toHaveLength(1)
  })

  it('reassembles records cut anywhere by TCP, and accepts padding', async () => {
    const p = await pair('client')
    const bytes = Buffer.concat([
      p.toNative.seal(frame(FrameType.Control, 'aa')),
      p.toNative.seal(frame(FrameType.Control, 'bbbb'), CT_APPLICATION, 7),
      p.toNative.seal(frame(FrameType.Control, 'cc'.repeat(3000))),
    ])
    // Pieces of 1 to 100 bytes, each with time for the native end to read it alone: record
    // headers and bodies arrive cut in every way.
    let off = 0
    for (const step of [1, 2, 2, 10, 3, 100, 7]) {
      p.peer.write(bytes.subarray(off, off + step))
      off += step
      await new Promise((r) => setTimeout(r, 10))
    }
    p.peer.write(bytes.subarray(off))
    await until('three frames', () => p.frames.length === 3)
    expect(p.frames.map((f) => f.payload)).toEqual(['aa', 'bbbb', 'cc'.repeat(3000)])
    expect(p.closes).toEqual([])
  })

  const bad: [string, (p: Pair) => Buffer, RegExp][] = [
    ['a record under another key', () => new RefRecords(randomBytes(44)).seal(frame(FrameType.Ping, '')), /failed authentication/],
    [
      'a record replayed (its number is spent)',
      (p) => {
        const r = p.toNative.seal(frame(FrameType.Ping, ''))
        return Buffer.concat([r, r])
      },
      /failed authentication/,
    ],
    ['a tampered byte', (p) => {
      const r = p.toNative.seal(frame(FrameType.Ping, ''))
      r[7] ^= 1
      return r
    }, /failed authentication/],
    ['a TLS alert (close_notify)', (p) => p.toNative.seal(Buffer.from([1, 0]), CT_ALERT), /TLS alert/],
    ['a handshake record that is not a KeyUpdate (a NewSessionTicket)', (p) => p.toNative.seal(Buffer.from([4, 0, 0, 1, 0]), CT_HANDSHAKE), /not a KeyUpdate/],
    ['a KeyUpdate with a bad request value', (p) => p.toNative.seal(Buffer.from([24, 0, 0, 1, 2]), CT_HANDSHAKE), /not a KeyUpdate/],
    [
      'a record still under the old key after a KeyUpdate',
      (p) => {
        const ku = p.toNative.seal(keyUpdateMessage(false), CT_HANDSHAKE)
        // The sender "forgets" to move on: its next record uses the old key and number 1.
        const stale = p.toNative.seal(frame(FrameType.Ping, ''))
        return Buffer.concat([ku, stale])
      },
      /failed authentication/,
    ],
    ['a frame cut by the end of its record', (p) => p.toNative.seal(frame(FrameType.Control, 'aabbcc').subarray(0, 4)), /frame split across records/],
    ['an unknown frame type', (p) => p.toNative.seal(frame(9, '')), /unknown frame type/],
    ['a Data frame above maxData', (p) => p.toNative.seal(frame(FrameType.Data, '00'.repeat(1501))), /too large/],
    ['a header that is not TLS application data', () => Buffer.from([22, 3, 3, 0, 20, ...Buffer.alloc(20)]), /not a TLS application data record/],
    ['a length above 2^14 + 256', () => Buffer.from([23, 3, 3, 0x41, 0x01]), /length out of range/],
    ['a record of only padding', (p) => p.toNative.seal(Buffer.alloc(0), 0, 3), /without a content type/],
  ]
  for (const [what, bytes, reason] of bad) {
    it(`ends the stream on ${what}, saying why`, async () => {
      const p = await pair('client')
      p.peer.write(bytes(p))
      await until('close', () => p.closes.length > 0)
      expect(p.closes).toHaveLength(1)
      expect(p.closes[0]).toMatch(reason)
      // Past a bad record nothing more is read: the next good one is not delivered.
      const before = p.frames.length
      p.peer.write(p.toNative.seal(frame(FrameType.Ping, '')))
      await new Promise((r) => setTimeout(r, 50))
      expect(p.frames.length).toBe(before)
    })
  }

  it('says so when the peer closes the connection', async () => {
    const p = await pair('client')
    p.peer.end()
    await until('close', () => p.closes.length > 0)
    expect(p.closes).toEqual(['peer closed the connection'])
  })
})

describe('native records: key updates', () => {
  it('reads records under the next key after the peer\'s KeyUpdate', async () => {
    const p = await pair('client')
    p.peer.write(p.toNative.seal(frame(FrameType.Control, '01')))
    p.peer.write(p.toNative.seal(keyUpdateMessage(false), CT_HANDSHAKE))
    p.toNative.update()
    p.peer.write(Buffer.concat([p.toNative.seal(frame(FrameType.Control, '02')), p.toNative.seal(frame(FrameType.Control, '03'))]))
    await until('three frames', () => p.frames.length === 3)
    expect(p.frames.map((f) => f.payload)).toEqual(['01', '02', '03'])
    expect(p.native.stats().keyUpdatesIn).toBe(1)
    expect(p.closes).toEqual([])
  })

  it('sends a KeyUpdate after every keyUpdateAfter records and moves to the next key', async () => {
    const p = await pair('client', 1500, 3)
    for (let i = 1; i <= 8; i++) p.native.send(FrameType.Control, Buffer.from([i]))
    await until('records', () => p.native.stats().queuedBytes === 0)
    await new Promise((r) => setTimeout(r, 50))
    const records = p.fromNative.open(p.received())
    const ku = {type: -1, payload: 'key update'}
    const c = (n: number) => ({type: FrameType.Control, payload: n.toString(16).padStart(2, '0')})
    expect(records).toEqual([[c(1)], [c(2)], [c(3)], [ku], [c(4)], [c(5)], [c(6)], [ku], [c(7)], [c(8)]])
    expect(p.native.stats().keyUpdatesOut).toBe(2)
  })

  it('answers a KeyUpdate that asks for one with its own before its next record', async () => {
    const p = await pair('client')
    p.peer.write(p.toNative.seal(keyUpdateMessage(true), CT_HANDSHAKE))
    p.toNative.update()
    p.peer.write(p.toNative.seal(frame(FrameType.Control, '7b7d')))
    await until('the message', () => p.frames.length === 1)
    p.native.send(FrameType.Pong, new Uint8Array(0))
    await until('records', () => p.received().length > 0 && p.native.stats().queuedBytes === 0)
    await new Promise((r) => setTimeout(r, 50))
    expect(p.fromNative.open(p.received())).toEqual([[{type: -1, payload: 'key update'}], [{type: FrameType.Pong, payload: ''}]])
  })
})

describe('native records: writing what an RFC 8446 peer reads', () => {
  it('seals each frame JS sends as a record the reference opens', async () => {
    const p = await pair('client')
    expect(p.native.send(FrameType.Control, Buffer.from('7b7d', 'hex'))).toBe(true)
    expect(p.native.send(FrameType.Pong, new Uint8Array(0))).toBe(true)
    await until('two records', () => p.received().length >= 2 * (5 + 1 + 16) + 5)
    expect(p.fromNative.open(p.received())).toEqual([[{type: FrameType.Control, payload: '7b7d'}], [{type: FrameType.Pong, payload: ''}]])
    expect(p.native.stats().recordsOut).toBe(2)
  })

  it('on the node, holds what it writes until the client\'s first record, then sends it in order', async () => {
    const p = await pair('node')
    p.native.send(FrameType.Control, Buffer.from('01', 'hex'))
    p.native.send(FrameType.Control, Buffer.from('02', 'hex'))
    await new Promise((r) => setTimeout(r, 50))
    expect(p.received().length).toBe(0)
    expect(p.native.stats().queuedBytes).toBeGreaterThan(0)
    p.peer.write(p.toNative.seal(frame(FrameType.Ping, '')))
    await until('the held records', () => p.received().length > 0 && p.native.stats().queuedBytes === 0)
    await new Promise((r) => setTimeout(r, 20))
    expect(p.fromNative.open(p.received())).toEqual([[{type: FrameType.Control, payload: '01'}], [{type: FrameType.Control, payload: '02'}]])
  })

  it('refuses frames too large for their type or a record', async () => {
    const p = await pair('client')
    expect(() => p.native.send(FrameType.Data, new Uint8Array(1501))).toThrow(/too large/)
    expect(() => p.native.send(7 as FrameType, new Uint8Array(0))).toThrow(/unknown frame type/)
    expect(() => NativeStream.open(0, 'client', randomBytes(32), randomBytes(32), 16382, {onFrame() {}, onClose() {}})).toThrow(/maxData/)
    expect(() => NativeStream.open(0, 'client', randomBytes(31), randomBytes(32), 1500, {onFrame() {}, onClose() {}})).toThrow(/32 bytes/)
    expect(() => NativeStream.open(0, 'client', randomBytes(32), randomBytes(32), 1500, {onFrame() {}, onClose() {}}, 0)).toThrow(/keyUpdateAfter/)
  })

  it('drops nothing and keeps order when the socket is slower than the sender', async () => {
    const p = await pair('client')
    p.peer.pause() // the kernel buffers fill; the rest waits in the native queue
    const n = 4000
    let sent = 0
    // 16 MB: more than the kernel's buffers and the 1 MiB queue hold.
    for (let i = 0; i < n; i++) if (p.native.send(FrameType.Control, Buffer.alloc(4000, i & 0xff))) sent++
    expect(sent).toBeGreaterThan(0)
    expect(sent).toBeLessThan(n) // past the queue limit frames are dropped, never half-sent
    p.peer.resume()
    await until('every record', () => p.native.stats().queuedBytes === 0, 10_000)
    await new Promise((r) => setTimeout(r, 50))
    const records = p.fromNative.open(p.received())
    expect(records).toHaveLength(sent)
    const firsts = records.map((r) => r[0].payload.slice(0, 2))
    expect(firsts).toEqual(Array.from({length: sent}, (_, i) => (i & 0xff).toString(16).padStart(2, '0')))
    expect(p.native.stats().sendDrops).toBe(n - sent)
    expect(p.closes).toEqual([])
  })
})
