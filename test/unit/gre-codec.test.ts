import {describe, expect, it} from 'vitest'
import {checksumValid, internetChecksum, onesComplementSum} from '../../src/core/net/checksum.js'
import {
  createGreHeader,
  GRE_MAX_HEADER_LENGTH,
  GRE_PROTO_IPV4,
  GRE_PROTO_IPV6,
  type GreFlags,
  greHeaderLength,
  parseGre,
  peekGreKey,
  writeGreHeader,
} from '../../src/core/codecs/gre/codec.js'
import {SequenceCounter, SequenceWindow} from '../../src/core/codecs/gre/sequence.js'

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex')

// Inner IPv4/UDP packet, 28 bytes: 10.8.0.2:12345 -> 121.201.64.81:53, DF, TTL 64, empty UDP
// payload. IPv4 header checksum by hand: 4500+001c+0000+4000+4011+0a08+0002+79c9+4051 = 0x18951,
// folded 0x8952, complemented 0x76ad.
const INNER4 = '4500001c 00004000 401176ad 0a080002 79c94051' + '30390035 00080000'
// Inner IPv6/UDP packet, 48 bytes: fd00::2 -> 2001:db8::1 (only the version nibble matters here).
const INNER6 =
  '60000000 00081140' + 'fd000000 00000000 00000000 00000002' + '20010db8 00000000 00000000 00000001' + '30390035 00080000'
const KEY = 0x01020304
const MTU = 1400

/** Payload at offset 64 (the core's TUN headroom), header written into the room before it. */
function encode(inner: string, f: GreFlags, seq = 0, key = KEY): Buffer {
  const payload = hex(inner)
  const buf = Buffer.alloc(64 + payload.length)
  payload.copy(buf, 64)
  const start = writeGreHeader(buf, 64, payload.length, key, f, seq)
  expect(start).toBe(64 - greHeaderLength(f))
  return buf.subarray(start)
}

/** Deterministic PRNG (mulberry32) so the fuzz cases are the same on every run. */
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

describe('RFC 1071 checksum', () => {
  it('matches the numeric example of RFC 1071 section 3', () => {
    const b = hex('0001 f203 f4f5 f6f7')
    expect(onesComplementSum(b, 0, b.length)).toBe(0xddf2)
    expect(internetChecksum(b, 0, b.length)).toBe(0x220d)
  })

  it('pads an odd last byte with zero', () => {
    // 0x0001 + 0xf200 = 0xf201 -> checksum 0x0dfe
    const b = hex('0001 f2')
    expect(onesComplementSum(b, 0, 3)).toBe(0xf201)
    expect(internetChecksum(b, 0, 3)).toBe(0x0dfe)
  })

  it('folds carries end-around', () => {
    // 0xffff + 0xffff = 0x1fffe -> 0xffff; 0x8000 * 4 = 0x20000 -> 0x0002
    expect(onesComplementSum(hex('ffff ffff'), 0, 4)).toBe(0xffff)
    expect(onesComplementSum(hex('8000 8000 8000 8000'), 0, 8)).toBe(0x0002)
    expect(internetChecksum(hex('ffff ffff'), 0, 4)).toBe(0)
  })

  it('sums only the span asked for', () => {
    const b = hex('aaaa 0001 f203 f4f5 f6f7 bbbb')
    expect(internetChecksum(b, 2, 10)).toBe(0x220d)
  })

  it('agrees with the IPv4 header checksum of the test packet', () => {
    const ip = hex(INNER4).subarray(0, 20)
    expect(checksumValid(ip, 0, 20)).toBe(true)
    ip[10] = 0
    ip[11] = 0
    expect(internetChecksum(ip, 0, 20)).toBe(0x76ad)
  })
})

describe('GRE encoding', () => {
  it('sizes the header from the flags', () => {
    expect(greHeaderLength({checksum: false, sequence: false})).toBe(8)
    expect(greHeaderLength({checksum: true, sequence: false})).toBe(12)
    expect(greHeaderLength({checksum: false, sequence: true})).toBe(12)
    expect(greHeaderLength({checksum: true, sequence: true})).toBe(16)
    expect(GRE_MAX_HEADER_LENGTH).toBe(16)
  })

  it('key only: K, version 0, IPv4', () => {
    expect(encode(INNER4, {checksum: false, sequence: false}).toString('hex')).toBe(hex('2000 0800 01020304' + INNER4).toString('hex'))
  })

  it('key and sequence', () => {
    expect(encode(INNER4, {checksum: false, sequence: true}, 5).toString('hex')).toBe(
      hex('3000 0800 01020304 00000005' + INNER4).toString('hex'),
    )
  })

  it('key and checksum (checksum computed by hand)', () => {
    // a000+0800+0000+0000+0102+0304 = 0xac06; + the valid IPv4 header (sums to 0xffff, the
    // one's complement identity) = 0xac06; + 3039+0035+0008+0000 = 0xdc7c; complement 0x2383.
    expect(encode(INNER4, {checksum: true, sequence: false}).toString('hex')).toBe(
      hex('a000 0800 2383 0000 01020304' + INNER4).toString('hex'),
    )
  })

  it('checksum, key and sequence (checksum computed by hand)', () => {
    // b000+0800+0102+0304 = 0xbc06; + IPv4 header (identity); + 0000+0005 = 0xbc0b;
    // + 3039+0035+0008 = 0xec81; complement 0x137e.
    expect(encode(INNER4, {checksum: true, sequence: true}, 5).toString('hex')).toBe(
      hex('b000 0800 137e 0000 01020304 00000005' + INNER4).toString('hex'),
    )
  })

  it('IPv6 inner packet: protocol type 0x86DD', () => {
    expect(encode(INNER6, {checksum: false, sequence: false}).toString('hex')).toBe(hex('2000 86dd 01020304' + INNER6).toString('hex'))
  })

  it('writes the full 32-bit range of key and sequence', () => {
    const pkt = encode(INNER4, {checksum: false, sequence: true}, 0xffffffff, 0xfedcba98)
    expect(pkt.subarray(0, 12).toString('hex')).toBe('30000800fedcba98ffffffff')
    // Numbers outside uint32 are taken modulo 2^32, as the counter's wrap produces.
    const wrapped = encode(INNER4, {checksum: false, sequence: true}, -1, -2)
    expect(wrapped.subarray(4, 12).toString('hex')).toBe('fffffffeffffffff')
  })

  it('writes into the headroom without touching the payload or anything around it', () => {
    const inner = hex(INNER4)
    for (const f of [
      {checksum: false, sequence: false},
      {checksum: true, sequence: true},
    ]) {
      const buf = Buffer.alloc(64 + inner.length + 16, 0xee)
      inner.copy(buf, 64)
      const start = writeGreHeader(buf, 64, inner.length, KEY, f, 9)
      expect(start).toBe(64 - greHeaderLength(f))
      expect(buf.subarray(0, start).every((b) => b === 0xee)).toBe(true)
      expect(buf.subarray(64, 64 + inner.length).equals(inner)).toBe(true)
      expect(buf.subarray(64 + inner.length).every((b) => b === 0xee)).toBe(true)
    }
  })

  it('uses exactly the headroom it needs (header at offset 0)', () => {
    const inner = hex(INNER4)
    const buf = Buffer.alloc(16 + inner.length)
    inner.copy(buf, 16)
    expect(writeGreHeader(buf, 16, inner.length, KEY, {checksum: true, sequence: true}, 1)).toBe(0)
  })

  it('refuses (returns -1, writes nothing) what it cannot encode', () => {
    const inner = hex(INNER4)
    const buf = Buffer.alloc(64 + inner.length, 0xee)
    inner.copy(buf, 64)
    const before = Buffer.from(buf)
    const f = {checksum: true, sequence: true}
    expect(writeGreHeader(buf, 15, inner.length, KEY, f, 0)).toBe(-1) // headroom 15 < 16
    expect(writeGreHeader(buf, 64, 0, KEY, f, 0)).toBe(-1) // empty payload
    expect(writeGreHeader(buf, 64, inner.length + 1, KEY, f, 0)).toBe(-1) // runs past the buffer
    buf[64] = 0x50 // neither IPv4 nor IPv6
    expect(writeGreHeader(buf, 64, inner.length, KEY, f, 0)).toBe(-1)
    buf[64] = 0x45
    expect(buf.equals(before)).toBe(true)
  })
})

describe('GRE decoding', () => {
  const flagSets: GreFlags[] = [
    {checksum: false, sequence: false},
    {checksum: false, sequence: true},
    {checksum: true, sequence: false},
    {checksum: true, sequence: true},
  ]

  it('round-trips every flag combination, IPv4 and IPv6', () => {
    const out = createGreHeader()
    for (const f of flagSets) {
      for (const [inner, proto] of [
        [INNER4, GRE_PROTO_IPV4],
        [INNER6, GRE_PROTO_IPV6],
      ] as const) {
        const pkt = encode(inner, f, 0xfffffffe, 0xdeadbeef)
        expect(parseGre(pkt, 0, pkt.length, MTU, out)).toBeNull()
        expect(out).toEqual({
          headerLength: greHeaderLength(f),
          protocolType: proto,
          key: 0xdeadbeef,
          hasKey: true,
          hasSequence: f.sequence,
          sequence: f.sequence ? 0xfffffffe : 0,
          hasChecksum: f.checksum,
        })
        expect(pkt.subarray(out.headerLength).equals(hex(inner))).toBe(true)
      }
    }
  })

  it('parses a packet in the middle of a larger buffer', () => {
    const pkt = encode(INNER4, {checksum: true, sequence: true}, 7)
    const buf = Buffer.concat([Buffer.alloc(5, 0xff), pkt, Buffer.alloc(3, 0xff)])
    const out = createGreHeader()
    expect(parseGre(buf, 5, pkt.length, MTU, out)).toBeNull()
    expect(out.sequence).toBe(7)
    expect(out.key).toBe(KEY)
  })

  it('verifies a hand-checksummed packet even when we would not send checksums', () => {
    // Built by hand, not by writeGreHeader: C and K set, checksum 0x2383 (see the encoding test).
    const pkt = hex('a000 0800 2383 0000 01020304' + INNER4)
    const out = createGreHeader()
    expect(parseGre(pkt, 0, pkt.length, MTU, out)).toBeNull()
    expect(out.hasChecksum).toBe(true)
    expect(out.headerLength).toBe(12)
  })

  it('rejects a wrong checksum as malformed', () => {
    const out = createGreHeader()
    const good = hex('a000 0800 2383 0000 01020304' + INNER4)
    const badSum = Buffer.from(good)
    badSum[5] ^= 1
    expect(parseGre(badSum, 0, badSum.length, MTU, out)).toBe('malformed')
    const badPayload = Buffer.from(good)
    badPayload[good.length - 1] ^= 0x80
    expect(parseGre(badPayload, 0, badPayload.length, MTU, out)).toBe('malformed')
    const badKey = Buffer.from(good)
    badKey[11] ^= 1 // a damaged key would otherwise look like another session
    expect(parseGre(badKey, 0, badKey.length, MTU, out)).toBe('malformed')
  })

  it('rejects anything shorter than 4 bytes as truncated', () => {
    const pkt = encode(INNER4, {checksum: false, sequence: false})
    for (let n = 0; n < 4; n++) expect(parseGre(pkt, 0, n, MTU, createGreHeader())).toBe('truncated')
  })

  it('rejects a packet shorter than the header its flags announce, or with no payload, as truncated', () => {
    const out = createGreHeader()
    expect(parseGre(hex('b000 0800 0000 0000 01020304 000000'), 0, 15, MTU, out)).toBe('truncated')
    expect(parseGre(hex('2000 0800 010203'), 0, 7, MTU, out)).toBe('truncated')
    expect(parseGre(hex('2000 0800 01020304'), 0, 8, MTU, out)).toBe('truncated') // header, no payload
    expect(parseGre(hex('3000 0800 01020304 00000001'), 0, 12, MTU, out)).toBe('truncated')
  })

  it('rejects a version other than 0 as malformed', () => {
    const out = createGreHeader()
    for (const ver of [1, 2, 7]) {
      const pkt = encode(INNER4, {checksum: false, sequence: false})
      pkt[1] = ver
      expect(parseGre(pkt, 0, pkt.length, MTU, out)).toBe('malformed')
    }
  })

  it('rejects bit 1 (routing), bit 4 (strict source route) and bit 5 as malformed', () => {
    const out = createGreHeader()
    for (const bit of [0x40, 0x08, 0x04]) {
      const pkt = encode(INNER4, {checksum: false, sequence: false})
      pkt[0] |= bit
      expect(parseGre(pkt, 0, pkt.length, MTU, out)).toBe('malformed')
    }
  })

  it('ignores bits 6-12 (RFC 2784: MUST be ignored on receipt)', () => {
    const out = createGreHeader()
    // bits 6 and 7 are in byte 0; bits 8-12 are the top five bits of byte 1.
    for (const [byte, bit] of [
      [0, 0x02],
      [0, 0x01],
      [1, 0x80],
      [1, 0x40],
      [1, 0x20],
      [1, 0x10],
      [1, 0x08],
    ] as const) {
      const pkt = encode(INNER4, {checksum: false, sequence: true}, 3)
      pkt[byte] |= bit
      expect(parseGre(pkt, 0, pkt.length, MTU, out), `byte ${byte} bit ${bit.toString(16)}`).toBeNull()
      expect(out.key).toBe(KEY)
      expect(out.sequence).toBe(3)
    }
    // All of them at once, in a checksummed packet (the checksum covers them, so recompute it).
    const inner = hex(INNER4)
    const buf = Buffer.alloc(12 + inner.length)
    inner.copy(buf, 12)
    writeGreHeader(buf, 12, inner.length, KEY, {checksum: true, sequence: false}, 0)
    buf[0] |= 0x03
    buf[1] |= 0xf8
    buf[4] = 0
    buf[5] = 0
    const sum = internetChecksum(buf, 0, buf.length)
    buf[4] = sum >> 8
    buf[5] = sum & 0xff
    expect(parseGre(buf, 0, buf.length, MTU, out)).toBeNull()
  })

  it('ignores a non-zero Reserved1 field (covered by the checksum like everything else)', () => {
    const buf = hex('a000 0800 0000 abcd 01020304' + INNER4)
    const sum = internetChecksum(buf, 0, buf.length)
    buf[4] = sum >> 8
    buf[5] = sum & 0xff
    expect(parseGre(buf, 0, buf.length, MTU, createGreHeader())).toBeNull()
  })

  it('rejects a packet without a key as unknown-session', () => {
    const out = createGreHeader()
    expect(parseGre(hex('0000 0800' + INNER4), 0, 32, MTU, out)).toBe('unknown-session')
    expect(parseGre(hex('1000 0800 00000001' + INNER4), 0, 36, MTU, out)).toBe('unknown-session')
  })

  it('rejects protocol types other than IPv4 and IPv6 as unsupported', () => {
    const out = createGreHeader()
    for (const proto of ['6558', '880b', '0000', '0806', '8847']) {
      const pkt = hex(`2000 ${proto} 01020304` + INNER4)
      expect(parseGre(pkt, 0, pkt.length, MTU, out), proto).toBe('unsupported')
    }
  })

  it('accepts a payload of exactly maxPayload and rejects one byte more as malformed', () => {
    const out = createGreHeader()
    const pkt = encode(INNER4, {checksum: false, sequence: false})
    const inner = pkt.length - 8
    expect(parseGre(pkt, 0, pkt.length, inner, out)).toBeNull()
    expect(parseGre(pkt, 0, pkt.length, inner - 1, out)).toBe('malformed')
  })

  it('treats a span outside the buffer as truncated instead of reading past it', () => {
    const out = createGreHeader()
    const pkt = encode(INNER4, {checksum: false, sequence: false})
    expect(parseGre(pkt, 0, pkt.length + 1, MTU, out)).toBe('truncated')
    expect(parseGre(pkt, 1, pkt.length, MTU, out)).toBe('truncated')
    expect(parseGre(pkt, -1, 8, MTU, out)).toBe('truncated')
    expect(parseGre(pkt, Number.NaN, 8, MTU, out)).toBe('truncated')
  })

  it('never throws on any truncation of a valid packet', () => {
    const out = createGreHeader()
    for (const f of flagSets) {
      const pkt = encode(INNER4, f, 1)
      const full = greHeaderLength(f)
      for (let n = 0; n <= pkt.length; n++) {
        let reason: ReturnType<typeof parseGre> = null
        expect(() => {
          reason = parseGre(pkt, 0, n, MTU, out)
        }).not.toThrow()
        if (n <= full) expect(reason).toBe('truncated')
        else if (n === pkt.length) expect(reason).toBeNull()
        // Cut inside the payload: without a checksum the codec cannot know (the inner IP total
        // length can); a checksum catches it unless only zero bytes were cut, which the one's
        // complement sum cannot see (this packet ends in the UDP checksum 0000).
        else if (!f.checksum) expect(reason).toBeNull()
        else expect(reason, `length ${n}`).toBe(pkt.length - n <= 2 ? null : 'malformed')
      }
    }
  })

  it('never throws on random bytes, and only ever returns a contract reason', () => {
    const reasons = new Set(['truncated', 'malformed', 'unknown-session', 'authentication', 'replay', 'unsupported', null])
    const rand = mulberry32(0x47524500)
    const buf = Buffer.alloc(96)
    const out = createGreHeader()
    const seen = new Map<string, number>()
    for (let i = 0; i < 5000; i++) {
      for (let j = 0; j < buf.length; j++) buf[j] = (rand() * 256) | 0
      // Half the time make the first two bytes plausible, so the checks past the flags run too.
      if (rand() < 0.5) {
        buf[0] = [0x20, 0x30, 0xa0, 0xb0, 0x00, 0x80][(rand() * 6) | 0] | ((rand() * 4) | 0)
        buf[1] = (rand() * 32) | 0 ? 0 : 1
        buf[2] = 0x08
        buf[3] = 0x00
        buf[20] = 0x45
      }
      const offset = (rand() * 20) | 0
      const length = (rand() * (buf.length + 8 - offset)) | 0 // sometimes past the end
      const maxPayload = (rand() * 100) | 0
      let reason: ReturnType<typeof parseGre> = null
      expect(() => {
        reason = parseGre(buf, offset, length, maxPayload, out)
        peekGreKey(buf, offset, length)
      }).not.toThrow()
      expect(reasons.has(reason)).toBe(true)
      seen.set(String(reason), (seen.get(String(reason)) ?? 0) + 1)
    }
    // The generator reaches every outcome the codec can give, including acceptance.
    for (const r of ['truncated', 'malformed', 'unknown-session', 'unsupported', 'null']) expect(seen.get(r), r).toBeGreaterThan(0)
  })
})

describe('peekGreKey', () => {
  it('reads the key where the flags put it', () => {
    expect(peekGreKey(encode(INNER4, {checksum: false, sequence: false}), 0, 36)).toBe(KEY)
    const withSum = encode(INNER4, {checksum: true, sequence: true}, 1, 0xcafef00d)
    expect(peekGreKey(withSum, 0, withSum.length)).toBe(0xcafef00d)
    const inside = Buffer.concat([Buffer.alloc(3), withSum])
    expect(peekGreKey(inside, 3, withSum.length)).toBe(0xcafef00d)
  })

  it('is undefined without a K bit or when too short for the key', () => {
    expect(peekGreKey(hex('0000 0800' + INNER4), 0, 32)).toBeUndefined()
    expect(peekGreKey(hex('2000 0800 010203'), 0, 7)).toBeUndefined()
    expect(peekGreKey(hex('2000 0800 01020304'), 0, 8)).toBe(KEY) // a bare header still names its session
    expect(peekGreKey(hex('a000 0800 0000 0000 010203'), 0, 11)).toBeUndefined()
    expect(peekGreKey(hex('2000'), 0, 2)).toBeUndefined()
    expect(peekGreKey(hex('2000 0800 01020304'), 0, 9)).toBeUndefined() // span past the buffer
  })
})

describe('sequence numbers', () => {
  it('accepts increasing numbers across the 32-bit wrap', () => {
    const w = new SequenceWindow()
    for (const s of [0xfffffffe, 0xffffffff, 0, 1]) expect(w.accept(s), String(s)).toBe(true)
    expect(w.dropped).toBe(0)
    expect(w.lastAccepted).toBe(1)
  })

  it('drops a late packet and a duplicate, and counts them', () => {
    const w = new SequenceWindow()
    expect(w.accept(6)).toBe(true)
    expect(w.accept(5)).toBe(false)
    expect(w.accept(6)).toBe(false)
    expect(w.dropped).toBe(2)
    expect(w.accept(7)).toBe(true)
    expect(w.lastAccepted).toBe(7)
  })

  it('accepts gaps (lost packets are not waited for)', () => {
    const w = new SequenceWindow()
    expect(w.accept(1)).toBe(true)
    expect(w.accept(1000)).toBe(true)
    expect(w.accept(999)).toBe(false)
  })

  it('reads a jump of more than 2^31 as older, per serial arithmetic', () => {
    const w = new SequenceWindow()
    expect(w.accept(10)).toBe(true)
    expect(w.accept((10 + 0x80000001) >>> 0)).toBe(false)
    expect(w.accept(0xffffffff)).toBe(false) // 11 behind across the wrap
    expect(w.accept((10 + 0x7fffffff) >>> 0)).toBe(true) // 2^31 - 1 ahead: newer
    expect(w.dropped).toBe(2)
  })

  it('takes a distance of exactly 2^31 as newer (RFC 2890; RFC 1982 leaves it undefined)', () => {
    const w = new SequenceWindow()
    w.accept(0)
    expect(w.accept(0x80000000)).toBe(true)
  })

  it('accepts any first number, and again after reset', () => {
    for (const first of [0, 1, 0x7fffffff, 0x80000000, 0xffffffff]) {
      const w = new SequenceWindow()
      expect(w.lastAccepted).toBeUndefined()
      expect(w.accept(first)).toBe(true)
      w.reset()
      expect(w.accept((first - 5) >>> 0)).toBe(true)
    }
  })

  it('counts from 0 or 1 and wraps', () => {
    const zero = new SequenceCounter()
    expect([zero.next(), zero.next(), zero.peek()]).toEqual([0, 1, 2])
    expect(new SequenceCounter(1).next()).toBe(1)
    const high = new SequenceCounter(0xffffffff)
    expect([high.next(), high.next(), high.next()]).toEqual([0xffffffff, 0, 1])
  })

  it('a counter feeds a window without drops across the wrap', () => {
    const c = new SequenceCounter(0xfffffff0)
    const w = new SequenceWindow()
    for (let i = 0; i < 64; i++) expect(w.accept(c.next())).toBe(true)
    expect(w.dropped).toBe(0)
  })
})
