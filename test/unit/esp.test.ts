import {createCipheriv, createDecipheriv, randomBytes} from 'node:crypto'
import {describe, expect, it} from 'vitest'
import {
  ESP_HEADROOM,
  ESP_ICV_LENGTH,
  ESP_MAX_OVERHEAD,
  ESP_MAX_TAILROOM,
  EspOpener,
  EspSa,
  EspSealer,
  espPadLength,
  ipv4ToUint32,
  openEspPayload,
  sealEspPayload,
} from '../../plugins/ipsec-over-gre/src/esp.js'
import {ReplayWindow} from '../../plugins/ipsec-over-gre/src/replay.js'
import {GCM_ESP_VECTORS, type EspVector} from '../fixtures/esp/gcm-vectors.js'
import {DROP_REASONS, type Drop, type Span} from '../../src/core/transport/contract.js'
import {TUN_HEADROOM, TUN_TAILROOM} from '../../src/core/tun/index.js'

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex')
const span = (): Span => ({offset: 0, length: 0})

const KEY = hex('000102030405060708090a0b0c0d0e0f 101112131415161718191a1b1c1d1e1f a0a1a2a3') // 32 + salt
const SPI = 0xc0ffee01
const SRC = ipv4ToUint32('192.0.2.1')
const DST = ipv4ToUint32('198.51.100.7')
const ROOM = 64 // what the core leaves before and after each packet
/** The longest GRE header (RFC 2784/2890: base, checksum, key, sequence), which goes in front of ESP. */
const GRE_MAX_HEADER_LENGTH = 16

/** Deterministic PRNG (mulberry32) so the random cases are the same on every run. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** An inner packet of `length` bytes: IPv4 (0x45...) or IPv6 (0x60...), the rest a pattern. */
function innerPacket(version: 4 | 6, length: number): Buffer {
  const p = Buffer.alloc(length)
  for (let i = 0; i < length; i++) p[i] = (i * 7 + 3) & 0xff
  p[0] = version === 4 ? 0x45 : 0x60
  return p
}

/** The inner packet in a ring-like slot: ROOM bytes before, ROOM after, filled with 0xee. */
function slot(inner: Buffer): Buffer {
  const buf = Buffer.alloc(ROOM + inner.length + ROOM, 0xee)
  inner.copy(buf, ROOM)
  return buf
}

/** Seals `inner` and returns the outer packet alone (a copy). */
function sealed(sealer: EspSealer, inner: Buffer): Buffer {
  const buf = slot(inner)
  const out = span()
  expect(sealer.seal(buf, ROOM, inner.length, out)).toBe(true)
  return Buffer.from(buf.subarray(out.offset, out.offset + out.length))
}

function ipv4ChecksumOk(b: Buffer, p = 0): boolean {
  let sum = 0
  for (let i = 0; i < 20; i += 2) sum += (b[p + i] << 8) | b[p + i + 1]
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16)
  return sum === 0xffff
}

/** An outer IPv4 header for protocol 50 written by the test itself (not by the sealer). */
function writeOuterHeader(b: Buffer, total: number): void {
  hex('45000000 00004000 40320000').copy(b, 0)
  b.writeUInt16BE(total, 2)
  b.writeUInt32BE(SRC, 12)
  b.writeUInt32BE(DST, 16)
  let sum = 0
  for (let i = 0; i < 20; i += 2) sum += b.readUInt16BE(i)
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16)
  b.writeUInt16BE(~sum & 0xffff, 10)
}

/** A hand-made plaintext (payload, padding, trailer: anything) sealed as seq and wrapped in IPv4. */
function handMade(sa: EspSa, seq: bigint, plaintext: Buffer, iv = Buffer.alloc(8, 0x42)): Buffer {
  const b = Buffer.alloc(20 + 16 + plaintext.length + 16)
  plaintext.copy(b, 36)
  expect(sealEspPayload(sa, Number(seq >> 32n), Number(seq & 0xffffffffn), iv, b, 20, plaintext.length)).toBe(16 + plaintext.length + 16)
  writeOuterHeader(b, b.length)
  return b
}

/**
 * The oracle: decrypts an ESP packet with node:crypto directly, nonce and AAD put together here
 * from RFC 4106 (not by esp.ts). Returns the plaintext with its trailer.
 */
function oracleOpen(keyMaterial: Buffer, esn: boolean, seq: bigint, esp: Buffer): Buffer {
  const key = keyMaterial.subarray(0, keyMaterial.length - 4)
  const nonce = Buffer.concat([keyMaterial.subarray(keyMaterial.length - 4), esp.subarray(8, 16)])
  const aad = Buffer.alloc(esn ? 12 : 8)
  esp.copy(aad, 0, 0, 4)
  if (esn) aad.writeBigUInt64BE(seq, 4)
  else aad.writeUInt32BE(Number(seq), 4)
  const d = createDecipheriv(`aes-${key.length * 8}-gcm` as 'aes-256-gcm', key, nonce, {authTagLength: 16})
  d.setAAD(aad)
  d.setAuthTag(esp.subarray(esp.length - 16))
  return Buffer.concat([d.update(esp.subarray(16, esp.length - 16)), d.final()])
}

function vectorSa(v: EspVector): {sa: EspSa; esn: boolean; seq: bigint; hi: number; lo: number; keyMaterial: Buffer} {
  const keyMaterial = Buffer.concat([hex(v.key), hex(v.salt)])
  const esn = v.seq.length === 16
  const seq = BigInt('0x' + v.seq)
  const sa = new EspSa({spi: parseInt(v.spi, 16), key: keyMaterial, esn})
  return {sa, esn, seq, hi: Number(seq >> 32n), lo: Number(seq & 0xffffffffn), keyMaterial}
}

describe('ESP layout', () => {
  it('needs 36 bytes before and at most 21 after, which the core leaves even with GRE in front', () => {
    expect(ESP_HEADROOM).toBe(36)
    expect(ESP_MAX_TAILROOM).toBe(21)
    expect(ESP_MAX_OVERHEAD).toBe(57)
    expect(ESP_HEADROOM + GRE_MAX_HEADER_LENGTH).toBeLessThanOrEqual(TUN_HEADROOM)
    expect(ESP_MAX_TAILROOM).toBeLessThanOrEqual(TUN_TAILROOM)
  })

  it('pads payload + 2 to a multiple of 4', () => {
    expect([1, 2, 3, 4, 5, 6, 7, 8, 1400].map(espPadLength)).toEqual([1, 0, 3, 2, 1, 0, 3, 2, 2])
  })

  it('parses dotted IPv4 addresses', () => {
    expect(ipv4ToUint32('192.0.2.1')).toBe(0xc0000201)
    expect(ipv4ToUint32('255.255.255.255')).toBe(0xffffffff)
    for (const bad of ['1.2.3', '1.2.3.256', 'a.b.c.d', '1.2.3.4.5']) expect(() => ipv4ToUint32(bad)).toThrow(RangeError)
  })

  it('checks the SA and sealer parameters when they are made (not per packet)', () => {
    expect(() => new EspSa({spi: SPI, key: Buffer.alloc(32)})).toThrow(RangeError)
    expect(() => new EspSa({spi: -1, key: KEY})).toThrow(RangeError)
    expect(() => new EspSa({spi: 2 ** 32, key: KEY})).toThrow(RangeError)
    expect(new EspSa({spi: SPI, key: KEY}).algorithm).toBe('aes-256-gcm')
    const sa = new EspSa({spi: SPI, key: KEY})
    expect(() => new EspSealer(sa, -1, DST)).toThrow(RangeError)
    expect(() => new EspSealer(sa, SRC, DST, {lastSequence: 2n ** 32n})).toThrow(RangeError)
    // One sealer per SA: a second counter under the same key would reuse GCM nonces.
    new EspSealer(sa, SRC, DST)
    expect(() => new EspSealer(sa, SRC, DST)).toThrow(/reuse GCM nonces/)
  })

  it('copies the key: wiping the caller buffer changes nothing', () => {
    const key = Buffer.from(KEY)
    const sa = new EspSa({spi: SPI, key})
    key.fill(0)
    const pkt = sealed(new EspSealer(sa, SRC, DST), innerPacket(4, 40))
    expect(oracleOpen(KEY, false, 1n, pkt.subarray(20)).subarray(0, 40).equals(innerPacket(4, 40))).toBe(true)
  })
})

describe('draft-mcgrew-gcm-test-01 AES-GCM ESP test cases', () => {
  it('has every AES-256 case of the draft (3, 9, 11, 14)', () => {
    expect(GCM_ESP_VECTORS.filter((v) => v.keyBits === 256).map((v) => v.name.split(' (')[0])).toEqual(['case 3', 'case 9', 'case 11', 'case 14'])
    expect(GCM_ESP_VECTORS).toHaveLength(14)
  })

  for (const v of GCM_ESP_VECTORS) {
    describe(v.name, () => {
      it('is self-consistent: key size, AAD = SPI | sequence, packet = SPI | low sequence | IV | ...', () => {
        const {esn} = vectorSa(v)
        expect(hex(v.key).length * 8).toBe(v.keyBits)
        expect(hex(v.aad).equals(hex(v.spi + v.seq))).toBe(true)
        const pkt = hex(v.packet)
        expect(pkt.subarray(0, 4).equals(hex(v.spi))).toBe(true)
        expect(pkt.subarray(4, 8).equals(hex(v.seq).subarray(esn ? 4 : 0))).toBe(true)
        expect(pkt.subarray(8, 16).equals(hex(v.iv))).toBe(true)
        expect(pkt.length).toBe(16 + hex(v.plaintext).length + 16)
        // The draft's ciphertext and ICV are what AES-GCM gives for its key, salt|IV and AAD.
        const keyMaterial = Buffer.concat([hex(v.key), hex(v.salt)])
        const c = createCipheriv(`aes-${v.keyBits}-gcm` as 'aes-256-gcm', hex(v.key), Buffer.concat([hex(v.salt), hex(v.iv)]), {authTagLength: 16})
        c.setAAD(hex(v.aad))
        const ct = Buffer.concat([c.update(hex(v.plaintext)), c.final(), c.getAuthTag()])
        expect(ct.toString('hex')).toBe(pkt.subarray(16).toString('hex'))
        expect(oracleOpen(keyMaterial, esn, BigInt('0x' + v.seq), pkt).equals(hex(v.plaintext))).toBe(true)
      })

      it('sealing the plaintext gives the ESP packet byte for byte', () => {
        const {sa, hi, lo} = vectorSa(v)
        const pt = hex(v.plaintext)
        const buf = Buffer.alloc(8 + 16 + pt.length + 16 + 8, 0xee)
        pt.copy(buf, 8 + 16)
        expect(sealEspPayload(sa, hi, lo, hex(v.iv), buf, 8, pt.length)).toBe(hex(v.packet).length)
        expect(buf.subarray(8, buf.length - 8).toString('hex')).toBe(hex(v.packet).toString('hex'))
        expect(buf.subarray(0, 8).every((b) => b === 0xee) && buf.subarray(buf.length - 8).every((b) => b === 0xee)).toBe(true)
      })

      it('opening the packet gives the plaintext back; a wrong high half or one flipped bit fails', () => {
        const {sa, esn, hi} = vectorSa(v)
        const pkt = hex(v.packet)
        const buf = Buffer.from(pkt)
        expect(openEspPayload(sa, hi, buf, 0, buf.length)).toBe(hex(v.plaintext).length)
        expect(buf.subarray(16, 16 + hex(v.plaintext).length).equals(hex(v.plaintext))).toBe(true)
        if (esn) expect(openEspPayload(sa, (hi + 1) >>> 0, Buffer.from(pkt), 0, pkt.length)).toBe(-1)
        const bad = Buffer.from(pkt)
        bad[bad.length - 1] ^= 1
        expect(openEspPayload(sa, hi, bad, 0, bad.length)).toBe(-1)
        expect(bad.subarray(0, bad.length - 1).equals(pkt.subarray(0, pkt.length - 1))).toBe(true) // untouched
      })

      it('EspOpener authenticates it (SPI, replay window, ESN high half inferred) and then refuses its trailer', () => {
        const {sa, esn, seq} = vectorSa(v)
        const pkt = hex(v.packet)
        const b = Buffer.alloc(20 + pkt.length)
        pkt.copy(b, 20)
        writeOuterHeader(b, b.length)
        const window = new ReplayWindow()
        // Put the window just below the vector's number, so the ESN high half is inferable.
        if (seq > 1n) window.update(seq - 1n)
        const opener = new EspOpener(sa, window)
        // Every one of the draft's plaintexts ends with next header 1; case 12 has no payload at all.
        const expected: Drop = hex(v.plaintext).length === 4 ? 'malformed' : 'unsupported'
        expect(opener.open(Buffer.from(b), 0, b.length, span())).toBe(expected)
        expect(window.top).toBe(seq) // authenticated, so the window moved
        expect(opener.open(Buffer.from(b), 0, b.length, span())).toBe('replay')
        const forged = Buffer.from(b)
        forged[forged.length - 5] ^= 0x10
        const fresh = new ReplayWindow()
        if (seq > 1n) fresh.update(seq - 1n)
        expect(new EspOpener(sa, fresh).open(forged, 0, forged.length, span())).toBe('authentication')
        expect(fresh.top).toBe(seq > 1n ? seq - 1n : 0n)
        if (!esn) return
        // With ESN the high half is never sent: a window an epoch away infers it wrong, and the ICV fails.
        const far = new ReplayWindow()
        far.update(seq + 2n ** 32n - 1n <= 2n ** 64n - 1n ? seq + 2n ** 32n - 1n : seq - 2n ** 32n - 1n)
        expect(new EspOpener(sa, far).open(Buffer.from(b), 0, b.length, span())).toBe('authentication')
      })
    })
  }
})

describe('EspSealer and EspOpener: round trip', () => {
  for (const esn of [false, true]) {
    it(`IPv4 and IPv6 inner packets of every padding length, ESN ${esn ? 'on' : 'off'}`, () => {
      const sa = new EspSa({spi: SPI, key: KEY, esn})
      const sealer = new EspSealer(sa, SRC, DST)
      const window = new ReplayWindow()
      const opener = new EspOpener(sa, window)
      let seq = 0n
      const cases: Array<[4 | 6, number]> = []
      for (let n = 20; n < 28; n++) cases.push([4, n])
      for (let n = 40; n < 44; n++) cases.push([6, n])
      cases.push([4, 1400], [6, 1400], [4, 1], [4, 2])
      const pads = new Set<number>()
      for (const [version, n] of cases) {
        const inner = innerPacket(version, n)
        const buf = slot(inner)
        const out = span()
        expect(sealer.seal(buf, ROOM, n, out)).toBe(true)
        seq++
        expect(sealer.sequence).toBe(seq)
        const pad = espPadLength(n)
        pads.add(pad)
        // Exactly the room before and after was used; nothing else was touched.
        expect(out.offset).toBe(ROOM - ESP_HEADROOM)
        expect(out.length).toBe(ESP_HEADROOM + n + pad + 2 + ESP_ICV_LENGTH)
        expect((n + pad + 2) % 4).toBe(0)
        expect(buf.subarray(0, out.offset).every((b) => b === 0xee)).toBe(true)
        expect(buf.subarray(out.offset + out.length).every((b) => b === 0xee)).toBe(true)
        const pkt = Buffer.from(buf.subarray(out.offset, out.offset + out.length))

        // Outer IPv4: 45, TOS 0, total, id 0, DF, TTL 64, protocol 50, valid checksum, endpoints.
        expect(pkt[0]).toBe(0x45)
        expect(pkt[1]).toBe(0)
        expect(pkt.readUInt16BE(2)).toBe(pkt.length)
        expect(pkt.readUInt16BE(4)).toBe(0)
        expect(pkt.readUInt16BE(6)).toBe(0x4000)
        expect(pkt[8]).toBe(64)
        expect(pkt[9]).toBe(50)
        expect(ipv4ChecksumOk(pkt)).toBe(true)
        expect(pkt.readUInt32BE(12)).toBe(SRC)
        expect(pkt.readUInt32BE(16)).toBe(DST)
        // ESP header: SPI, low 32 bits of the sequence number, IV = the 64-bit number.
        expect(pkt.readUInt32BE(20)).toBe(SPI)
        expect(pkt.readUInt32BE(24)).toBe(Number(seq & 0xffffffffn))
        expect(pkt.readBigUInt64BE(28)).toBe(seq)
        // The independent oracle decrypts it: inner | 1, 2, 3... | pad length | next header.
        const pt = oracleOpen(KEY, esn, seq, pkt.subarray(20))
        const trailer = Buffer.from([...Array.from({length: pad}, (_, i) => i + 1), pad, version === 4 ? 4 : 41])
        expect(pt.equals(Buffer.concat([inner, trailer]))).toBe(true)

        // And the opener gives the inner packet back, in place.
        const rx = Buffer.concat([Buffer.alloc(7, 0xdd), pkt, Buffer.alloc(5, 0xdd)])
        const got = span()
        expect(opener.open(rx, 7, pkt.length, got)).toBeNull()
        expect(got.offset).toBe(7 + ESP_HEADROOM)
        expect(got.length).toBe(n)
        expect(rx.subarray(got.offset, got.offset + got.length).equals(inner)).toBe(true)
        expect(rx.subarray(0, 7).every((b) => b === 0xdd) && rx.subarray(7 + pkt.length).every((b) => b === 0xdd)).toBe(true)
      }
      expect([...pads].sort()).toEqual([0, 1, 2, 3])
      expect(window.top).toBe(seq)
    })
  }

  it('with exactly 36 bytes before and the needed bytes after (no more)', () => {
    for (const n of [20, 21, 22, 23]) {
      const inner = innerPacket(4, n)
      const buf = Buffer.alloc(ESP_HEADROOM + n + espPadLength(n) + 2 + ESP_ICV_LENGTH)
      inner.copy(buf, ESP_HEADROOM)
      const out = span()
      expect(new EspSealer(new EspSa({spi: SPI, key: KEY}), SRC, DST).seal(buf, ESP_HEADROOM, n, out)).toBe(true)
      expect(out).toEqual({offset: 0, length: buf.length})
    }
  })

  it('refuses what it cannot seal, writing nothing and using no sequence number', () => {
    const sa = new EspSa({spi: SPI, key: KEY})
    const sealer = new EspSealer(sa, SRC, DST)
    const inner = innerPacket(4, 23) // needs 3 bytes of padding: 21 bytes after
    expect(espPadLength(23)).toBe(3)
    const buf = slot(inner)
    const before = Buffer.from(buf)
    const out = span()
    expect(sealer.seal(buf, ESP_HEADROOM - 1, 23, out)).toBe(false) // headroom 35
    expect(sealer.seal(buf.subarray(0, ROOM + 23 + 20), ROOM, 23, out)).toBe(false) // tailroom 20
    expect(sealer.seal(buf, ROOM, 0, out)).toBe(false) // empty
    expect(sealer.seal(buf, ROOM + 0.5, 23, out)).toBe(false) // not an index
    expect(sealer.seal(buf, ROOM, Number.NaN, out)).toBe(false)
    expect(sealer.seal(buf, ROOM, buf.length, out)).toBe(false) // runs past the buffer
    const big = Buffer.alloc(ROOM + 65536 + ROOM)
    big[ROOM] = 0x45
    // The outer packet is 36 + (inner + pad + 2) + 16 bytes, a multiple of 4: at most 65532.
    expect(sealer.seal(big, ROOM, 65479, out)).toBe(false) // 36 + 65479 + 3 + 2 + 16 = 65536
    buf[ROOM] = 0x55 // version 5
    expect(sealer.seal(buf, ROOM, 23, out)).toBe(false)
    buf[ROOM] = 0x45
    expect(buf.equals(before)).toBe(true)
    expect(sealer.sequence).toBe(0n)
    expect(sealer.seal(big, ROOM, 65478, out)).toBe(true)
    expect(out.length).toBe(65532)
    expect(sealer.sequence).toBe(1n)
  })

  it('accepts reordered packets inside the window once each, and counts replays', () => {
    const sa = new EspSa({spi: SPI, key: KEY, esn: true})
    const sealer = new EspSealer(sa, SRC, DST)
    const pkts = Array.from({length: 200}, (_, i) => sealed(sealer, innerPacket(4, 20 + (i % 9))))
    const order = pkts.map((_, i) => i)
    const rnd = mulberry32(11)
    for (let i = order.length - 1; i > 0; i--) {
      const j = Math.floor(rnd() * (i + 1))
      ;[order[i], order[j]] = [order[j], order[i]]
    }
    const window = new ReplayWindow(1024)
    const opener = new EspOpener(sa, window)
    for (const i of order) expect(opener.open(Buffer.from(pkts[i]), 0, pkts[i].length, span())).toBeNull()
    for (const i of order) expect(opener.open(Buffer.from(pkts[i]), 0, pkts[i].length, span())).toBe('replay')
    expect(window.dropped).toBe(200)
  })

  it('drops a packet below the window as a replay, before any crypto', () => {
    const sa = new EspSa({spi: SPI, key: KEY})
    const sealer = new EspSealer(sa, SRC, DST)
    const first = sealed(sealer, innerPacket(4, 20))
    const late = sealed(sealer, innerPacket(4, 20))
    for (let i = 0; i < 1100; i++) sealed(sealer, innerPacket(4, 20))
    const last = sealed(sealer, innerPacket(4, 20)) // seq 1103
    const window = new ReplayWindow(1024)
    const opener = new EspOpener(sa, window)
    expect(opener.open(Buffer.from(last), 0, last.length, span())).toBeNull()
    expect(opener.open(Buffer.from(first), 0, first.length, span())).toBe('replay')
    // Corrupt the ICV too: still 'replay', so the window refused it before decrypting.
    late[late.length - 1] ^= 1
    expect(opener.open(late, 0, late.length, span())).toBe('replay')
    expect(window.tooOld).toBe(2)
  })

  it('ESN: crosses 2^32 (high half in the IV and AAD, not in the header), in order and reordered', () => {
    const sa = new EspSa({spi: SPI, key: KEY, esn: true})
    const start = 2n ** 32n - 100n
    const sealer = new EspSealer(sa, SRC, DST, {lastSequence: start})
    const pkts = Array.from({length: 200}, () => sealed(sealer, innerPacket(4, 33)))
    expect(sealer.sequence).toBe(start + 200n)
    const wrapped = pkts[99] // seq 2^32: low half 0 on the wire, IV 00000001 00000000
    expect(wrapped.readUInt32BE(24)).toBe(0)
    expect(wrapped.readBigUInt64BE(28)).toBe(2n ** 32n)
    expect(oracleOpen(KEY, true, 2n ** 32n, wrapped.subarray(20)).subarray(0, 33).equals(innerPacket(4, 33))).toBe(true)

    const window = new ReplayWindow()
    window.update(start) // as if everything before had arrived
    const opener = new EspOpener(sa, window)
    // Packets just after the wrap first, then the ones just before it (window spans the wrap).
    const order = [...Array.from({length: 50}, (_, i) => 100 + i), ...Array.from({length: 100}, (_, i) => i), ...Array.from({length: 50}, (_, i) => 150 + i)]
    for (const i of order) expect(opener.open(Buffer.from(pkts[i]), 0, pkts[i].length, span())).toBeNull()
    expect(window.top).toBe(start + 200n)
    for (const i of [0, 99, 100, 199]) expect(opener.open(Buffer.from(pkts[i]), 0, pkts[i].length, span())).toBe('replay')
  })

  it('ESN off: the AAD is SPI | 32-bit sequence, so an ESN opener cannot open it', () => {
    const sealer = new EspSealer(new EspSa({spi: SPI, key: KEY}), SRC, DST)
    const pkt = sealed(sealer, innerPacket(6, 48))
    expect(oracleOpen(KEY, false, 1n, pkt.subarray(20)).subarray(0, 48).equals(innerPacket(6, 48))).toBe(true)
    const opener = new EspOpener(new EspSa({spi: SPI, key: KEY, esn: true}), new ReplayWindow())
    expect(opener.open(pkt, 0, pkt.length, span())).toBe('authentication')
  })
})

describe('EspSealer: sequence number exhaustion (RFC 4303 3.3.3: never cycle)', () => {
  it('32-bit: seals 2^32 - 1, then refuses', () => {
    const sealer = new EspSealer(new EspSa({spi: SPI, key: KEY}), SRC, DST, {lastSequence: 0xfffffffen})
    expect(sealer.exhausted).toBe(false)
    const pkt = sealed(sealer, innerPacket(4, 20))
    expect(pkt.readUInt32BE(24)).toBe(0xffffffff)
    expect(sealer.exhausted).toBe(true)
    const buf = slot(innerPacket(4, 20))
    const before = Buffer.from(buf)
    expect(sealer.seal(buf, ROOM, 20, span())).toBe(false)
    expect(buf.equals(before)).toBe(true)
    expect(sealer.sequence).toBe(0xffffffffn)
  })

  it('ESN: seals 2^64 - 1, then refuses', () => {
    const sealer = new EspSealer(new EspSa({spi: SPI, key: KEY, esn: true}), SRC, DST, {lastSequence: 2n ** 64n - 2n})
    const pkt = sealed(sealer, innerPacket(4, 20))
    expect(pkt.readBigUInt64BE(28)).toBe(2n ** 64n - 1n)
    expect(sealer.seal(slot(innerPacket(4, 20)), ROOM, 20, span())).toBe(false)
    expect(sealer.sequence).toBe(2n ** 64n - 1n)
    // The other side opens that last packet.
    const window = new ReplayWindow()
    window.update(2n ** 64n - 2n)
    expect(new EspOpener(sealer.sa, window).open(pkt, 0, pkt.length, span())).toBeNull()
  })

  it('ESN: 2^32 - 1 is not the end', () => {
    const sealer = new EspSealer(new EspSa({spi: SPI, key: KEY, esn: true}), SRC, DST, {lastSequence: 0xfffffffen})
    sealed(sealer, innerPacket(4, 20))
    expect(sealer.exhausted).toBe(false)
    sealed(sealer, innerPacket(4, 20))
    expect(sealer.sequence).toBe(2n ** 32n)
  })
})

describe('EspOpener: what it refuses', () => {
  const sa = new EspSa({spi: SPI, key: KEY})
  const fresh = () => new EspOpener(sa, new ReplayWindow())

  it('every single-bit flip of the outer header, SPI, sequence number, IV, ciphertext and ICV', () => {
    for (const esn of [false, true]) {
      const s = new EspSa({spi: SPI, key: KEY, esn})
      const pkt = sealed(new EspSealer(s, SRC, DST), innerPacket(4, 20)) // 20 + 16 + 24 + 16 = 76 bytes
      expect(pkt.length).toBe(76)
      expect(new EspOpener(s, new ReplayWindow()).open(Buffer.from(pkt), 0, pkt.length, span())).toBeNull()
      const seen = new Map<string, Set<Drop>>()
      for (let bit = 0; bit < pkt.length * 8; bit++) {
        const b = Buffer.from(pkt)
        b[bit >> 3] ^= 0x80 >> (bit & 7)
        const copy = Buffer.from(b)
        const result = new EspOpener(s, new ReplayWindow()).open(b, 0, b.length, span())
        if (result === null) throw new Error(`bit ${bit} flipped (ESN ${esn}) was accepted`)
        expect(b.equals(copy)).toBe(true) // a refused packet is left as it was
        const byte = bit >> 3
        const field = byte < 20 ? 'outer' : byte < 24 ? 'spi' : byte < 28 ? 'seq' : byte < 36 ? 'iv' : byte < 60 ? 'ciphertext' : 'icv'
        if (!seen.has(field)) seen.set(field, new Set())
        seen.get(field)!.add(result)
      }
      expect([...seen.get('outer')!].every((r) => r === 'malformed' || r === 'truncated' || r === 'unsupported')).toBe(true)
      expect([...seen.get('spi')!]).toEqual(['unknown-session'])
      // seq 1 with bit 31 cleared is 0, never valid: a replay; every other flip fails the ICV
      // (or, with ESN, lands in the "previous epoch" of a fresh window: also a replay).
      expect([...seen.get('seq')!].sort()).toEqual(['authentication', 'replay'])
      for (const f of ['iv', 'ciphertext', 'icv']) expect([...seen.get(f)!]).toEqual(['authentication'])
    }
  })

  it('a wrong SPI is an unknown session', () => {
    const pkt = sealed(new EspSealer(new EspSa({spi: SPI + 1, key: KEY}), SRC, DST), innerPacket(4, 20))
    expect(fresh().open(pkt, 0, pkt.length, span())).toBe('unknown-session')
  })

  it('the same packet twice is a replay', () => {
    const pkt = sealed(new EspSealer(new EspSa({spi: SPI, key: KEY}), SRC, DST), innerPacket(4, 20))
    const window = new ReplayWindow()
    const opener = new EspOpener(sa, window)
    expect(opener.open(Buffer.from(pkt), 0, pkt.length, span())).toBeNull()
    expect(opener.open(Buffer.from(pkt), 0, pkt.length, span())).toBe('replay')
    expect(window.dropped).toBe(1)
  })

  it('a forged packet does not move the window (update only after the ICV)', () => {
    const sealer = new EspSealer(new EspSa({spi: SPI, key: KEY}), SRC, DST, {lastSequence: 5000n})
    const pkt = sealed(sealer, innerPacket(4, 20))
    pkt[pkt.length - 1] ^= 1
    const window = new ReplayWindow()
    const opener = new EspOpener(sa, window)
    expect(opener.open(pkt, 0, pkt.length, span())).toBe('authentication')
    expect(window.top).toBe(0n)
    pkt[pkt.length - 1] ^= 1
    expect(opener.open(pkt, 0, pkt.length, span())).toBeNull()
    expect(window.top).toBe(5001n)
  })

  it('padding bytes not 1, 2, 3... are malformed', () => {
    const inner = innerPacket(4, 23) // 23 + 3 + 2 = 28: three bytes of padding
    for (const padding of ['010204', '010303', '000000', '020103', '030201', '0102ff']) {
      const pt = Buffer.concat([inner, hex(padding), Buffer.from([3, 4])]) // pad length 3, next header 4
      const window = new ReplayWindow()
      const opener = new EspOpener(sa, window)
      const pkt = handMade(sa, 7n, pt)
      expect(opener.open(Buffer.from(pkt), 0, pkt.length, span())).toBe('malformed')
      expect(window.top).toBe(7n) // it was authentic: the window moved
      expect(opener.open(Buffer.from(pkt), 0, pkt.length, span())).toBe('replay')
    }
    // The same packet with the right padding opens: the helper itself is sound.
    const ok = handMade(sa, 7n, Buffer.concat([inner, hex('010203 03 04')]))
    const out = span()
    expect(fresh().open(ok, 0, ok.length, out)).toBeNull()
    expect(ok.subarray(out.offset, out.offset + out.length).equals(inner)).toBe(true)
  })

  it('a pad length longer than the payload, or leaving no payload, is malformed', () => {
    const cases = [
      hex('45 00 ff 04'), // pad length 255 in a 4-byte plaintext
      hex('45 01 03 04'), // pad length 3: 3 + 2 > 4
      hex('01 02 02 04'), // pad length 2: padding 01 02 but nothing before it
      hex('45000000 00000000 0102 0a 04'), // 12 bytes, pad length 10 > 8 left
    ]
    for (const pt of cases) {
      const pkt = handMade(sa, 3n, pt)
      expect(fresh().open(pkt, 0, pkt.length, span())).toBe('malformed')
    }
  })

  it('a next header other than 4 and 41 is unsupported; one that does not match the inner version is malformed', () => {
    const inner4 = innerPacket(4, 22)
    const inner6 = innerPacket(6, 42)
    for (const nh of [0, 1, 6, 17, 47, 50, 59, 255]) {
      const pkt = handMade(sa, 9n, Buffer.concat([inner4, Buffer.from([0, nh])]))
      expect(fresh().open(pkt, 0, pkt.length, span())).toBe('unsupported')
    }
    const v4as6 = handMade(sa, 9n, Buffer.concat([inner4, Buffer.from([0, 41])]))
    expect(fresh().open(v4as6, 0, v4as6.length, span())).toBe('malformed')
    const v6as4 = handMade(sa, 9n, Buffer.concat([inner6, Buffer.from([0, 4])]))
    expect(fresh().open(v6as4, 0, v6as4.length, span())).toBe('malformed')
    const v6 = handMade(sa, 9n, Buffer.concat([inner6, Buffer.from([0, 41])]))
    expect(fresh().open(v6, 0, v6.length, span())).toBeNull()
  })

  it('outer header: version, options, length, checksum, fragments, protocol', () => {
    const good = sealed(new EspSealer(new EspSa({spi: SPI, key: KEY}), SRC, DST), innerPacket(4, 20))
    const edit = (f: (b: Buffer) => void, fixChecksum = true): Buffer => {
      const b = Buffer.from(good)
      f(b)
      if (fixChecksum) {
        b.writeUInt16BE(0, 10)
        let sum = 0
        for (let i = 0; i < 20; i += 2) sum += b.readUInt16BE(i)
        while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16)
        b.writeUInt16BE(~sum & 0xffff, 10)
      }
      return b
    }
    const open = (b: Buffer, length = b.length) => fresh().open(b, 0, length, span())
    expect(open(edit((b) => (b[0] = 0x65)))).toBe('malformed') // IPv6 version nibble
    expect(open(edit((b) => (b[0] = 0x46)))).toBe('malformed') // options
    expect(open(edit((b) => b.writeUInt16BE(good.length + 1, 2)))).toBe('truncated')
    expect(open(edit((b) => b.writeUInt16BE(good.length - 1, 2)))).toBe('malformed')
    expect(open(edit((b) => (b[10] ^= 0xff), false))).toBe('malformed') // checksum
    expect(open(edit((b) => (b[6] = 0x20)))).toBe('unsupported') // MF
    expect(open(edit((b) => (b[7] = 0x01)))).toBe('unsupported') // fragment offset
    expect(open(edit((b) => (b[9] = 47)))).toBe('unsupported') // GRE, not ESP
    expect(open(edit((b) => (b[6] = 0x00)))).toBeNull() // DF clear is fine
    expect(open(edit((b) => (b[8] = 1)))).toBeNull() // TTL is not checked (nor authenticated)
    expect(open(edit((b) => b.writeUInt32BE(0x01020304, 12)))).toBeNull() // nor are the addresses
  })

  it('ESP too short or not 4-byte aligned', () => {
    const ciphertextOf = (n: number): Buffer => {
      const b = Buffer.alloc(20 + 16 + n + 16)
      writeOuterHeader(b, b.length)
      b.writeUInt32BE(SPI, 20)
      b.writeUInt32BE(1, 24)
      return b
    }
    for (const n of [0, 1, 2, 3]) expect(fresh().open(ciphertextOf(n), 0, 52 + n, span())).toBe('truncated')
    for (const n of [5, 6, 7, 9]) expect(fresh().open(ciphertextOf(n), 0, 52 + n, span())).toBe('malformed')
    expect(fresh().open(ciphertextOf(8), 0, 60, span())).toBe('authentication')
  })

  it('after destroy() nothing seals or opens, and the key is gone', () => {
    const s = new EspSa({spi: SPI, key: KEY})
    const sealer = new EspSealer(s, SRC, DST)
    const pkt = sealed(sealer, innerPacket(4, 20))
    s.destroy()
    expect(s.isDestroyed).toBe(true)
    expect(sealer.seal(slot(innerPacket(4, 20)), ROOM, 20, span())).toBe(false)
    expect(sealer.sequence).toBe(1n)
    expect(new EspOpener(s, new ReplayWindow()).open(pkt, 0, pkt.length, span())).toBe('unknown-session')
    expect(sealEspPayload(s, 0, 1, Buffer.alloc(8), Buffer.alloc(64), 0, 8)).toBe(-1)
    expect(openEspPayload(s, 0, Buffer.from(pkt), 20, pkt.length - 20)).toBe(-1)
  })
})

describe('EspOpener: never throws', () => {
  const sa = new EspSa({spi: SPI, key: KEY, esn: true})
  const good = sealed(new EspSealer(sa, SRC, DST), innerPacket(4, 60))
  const reasons = new Set<Drop | null>([...DROP_REASONS, null])

  it('every truncation, as received and with the outer length fixed up to reach the ESP checks', () => {
    for (let n = 0; n < good.length; n++) {
      const b = Buffer.concat([Buffer.alloc(3, 0xaa), good.subarray(0, n)])
      expect(new EspOpener(sa, new ReplayWindow()).open(b, 3, n, span())).toBe('truncated')
      if (n < 20) continue
      b.writeUInt16BE(n, 3 + 2)
      b.writeUInt16BE(0, 3 + 10)
      let sum = 0
      for (let i = 0; i < 20; i += 2) sum += b.readUInt16BE(3 + i)
      while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16)
      b.writeUInt16BE(~sum & 0xffff, 3 + 10)
      const r = new EspOpener(sa, new ReplayWindow()).open(b, 3, n, span())
      expect(['truncated', 'malformed', 'authentication']).toContain(r)
    }
  })

  it('spans outside the buffer are truncated', () => {
    const o = new EspOpener(sa, new ReplayWindow())
    for (const [off, len] of [
      [-1, 10],
      [0, good.length + 1],
      [good.length, 1],
      [1.5, 20],
      [Number.NaN, 20],
      [0, -5],
      [0, Number.POSITIVE_INFINITY],
    ]) {
      expect(o.open(good, off, len, span())).toBe('truncated')
    }
  })

  it('a few thousand random buffers, some with a plausible outer header and the right SPI', () => {
    const rnd = mulberry32(2024)
    const o = new EspOpener(sa, new ReplayWindow())
    for (let i = 0; i < 4000; i++) {
      const len = Math.floor(rnd() * 200)
      const b = randomBytes(len + 8)
      const off = Math.floor(rnd() * 8)
      if (i % 2 === 0 && len >= 20) {
        b[off] = 0x45
        b.writeUInt16BE(len, off + 2)
        b[off + 6] = 0x40
        b[off + 7] = 0
        b[off + 9] = 50
        b.writeUInt16BE(0, off + 10)
        let sum = 0
        for (let k = 0; k < 20; k += 2) sum += b.readUInt16BE(off + k)
        while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16)
        b.writeUInt16BE(~sum & 0xffff, off + 10)
        if (len >= 24 && i % 4 === 0) b.writeUInt32BE(SPI, off + 20)
      }
      let r: Drop | null = null
      expect(() => {
        r = o.open(b, off, len, span())
      }).not.toThrow()
      expect(reasons.has(r)).toBe(true)
      expect(r).not.toBeNull()
    }
  })
})

// Throughput of the node:crypto path for 1400-byte inner packets (and 64-byte ones, to show the
// fixed cost per call). Not a test: run it with
//   ESP_BENCH=1 npx vitest run test/unit/esp.test.ts -t throughput
describe.runIf(process.env.ESP_BENCH)('throughput', () => {
  for (const L of [1400, 64]) {
    it(`seal and open, ${L}-byte inner packets, AES-256-GCM, ESN`, () => {
      const N = 200_000
      const sa = new EspSa({spi: SPI, key: KEY, esn: true})
      const sealer = new EspSealer(sa, SRC, DST)
      const slots = 1024
      const size = ROOM + L + ROOM
      const ring = Buffer.alloc(slots * size)
      const out = span()
      const sealedPkts: Buffer[] = []
      // Warm up, and keep a ring of sealed packets for the open side.
      for (let i = 0; i < slots; i++) {
        const b = Buffer.alloc(size)
        b[ROOM] = 0x45
        sealer.seal(b, ROOM, L, out)
        sealedPkts.push(Buffer.from(b.subarray(out.offset, out.offset + out.length)))
      }
      let t = process.hrtime.bigint()
      for (let i = 0; i < N; i++) {
        const at = (i % slots) * size + ROOM
        ring[at] = 0x45
        sealer.seal(ring, at, L, out)
      }
      const sealSeconds = Number(process.hrtime.bigint() - t) / 1e9
      // Open: the same `slots` packets again and again, each round with a new window.
      const work = Buffer.alloc(sealedPkts[0].length)
      const rounds = Math.ceil(N / slots)
      let opened = 0
      t = process.hrtime.bigint()
      for (let r = 0; r < rounds; r++) {
        const opener = new EspOpener(sa, new ReplayWindow())
        for (const p of sealedPkts) {
          p.copy(work)
          if (opener.open(work, 0, p.length, out) === null) opened++
        }
      }
      const openSeconds = Number(process.hrtime.bigint() - t) / 1e9
      const fmt = (n: number, s: number) => `${Math.round(n / s / 1000)}k packets/s (${((n * L * 8) / s / 1e9).toFixed(2)} Gbit/s of inner packets)`
      console.log(`${L} bytes: seal ${fmt(N, sealSeconds)}; open ${fmt(opened, openSeconds)}`)
      expect(opened).toBe(rounds * slots)
    })
  }
})
