/**
 * ESP in tunnel mode (RFC 4303) with AES-GCM (RFC 4106), in user space: the pure building
 * blocks of the `ipsec-over-gre` transport. One inner IP packet becomes one outer IPv4 + ESP
 * packet (which the transport then carries in GRE):
 *
 *    0                   1                   2                   3
 *    0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+  -
 *   |  4  |  5  |   TOS 0       |          Total Length             |  ^
 *   |         Identification 0      |0|1|0|  Fragment Offset 0      |  | outer IPv4,
 *   |    TTL 64     | Protocol 50   |        Header Checksum        |  | 20 bytes
 *   |                 Source (the caller's outerSrc)                |  |
 *   |              Destination (the caller's outerDst)              |  v
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+  -      -
 *   |               Security Parameters Index (SPI)                 |  ^      ^ AAD:
 *   |              Sequence Number (low 32 bits)                    |  | ESP  v SPI|seq (8), or
 *   |        IV (8): the 64-bit sequence number, big-endian         |  | header  SPI|seq hi|seq lo
 *   |                                                               |  v 16      with ESN (12)
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+  -      -
 *   |   inner IPv4 or IPv6 packet ...                               |  ^ encrypted
 *   |   ... | padding 1, 2, 3 (0-3 bytes) | pad len | next header   |  v (4-aligned)
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *   |   ICV (16 bytes: the GCM tag)                                 |
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *
 * GCM nonce = salt (4, from the key material) | IV (8). The explicit IV is the 64-bit sequence
 * number (RFC 4106 section 3.1 allows a counter), which never repeats under one key because the
 * sealer refuses to wrap its counter. docs/esp-wire.md states every choice and check.
 *
 * The data path allocates nothing of its own: the header is written into the headroom before
 * the inner packet, the trailer and ICV into the tailroom after it, and the nonce and AAD into
 * scratch buffers owned by the SA. node:crypto does allocate per call (a Cipher object, and the
 * Buffers update() and getAuthTag() return, copied back in place): that is the cost of doing
 * AES-GCM through the public API, and what a native batched path would remove.
 *
 * Plugins import only types from the core; node:crypto is a built-in module.
 */
import {createCipheriv, createDecipheriv} from 'node:crypto'
import type {Drop, Span} from '../../../src/core/transport/contract.js'
import type {ReplayWindow} from './replay.js'

export const IPPROTO_ESP = 50
export const ESP_NEXT_HEADER_IPV4 = 4
export const ESP_NEXT_HEADER_IPV6 = 41

export const OUTER_IPV4_LENGTH = 20
export const ESP_SPI_SEQ_LENGTH = 8
export const ESP_IV_LENGTH = 8
/** SPI + sequence number + IV. */
export const ESP_HEADER_LENGTH = ESP_SPI_SEQ_LENGTH + ESP_IV_LENGTH
export const ESP_ICV_LENGTH = 16
/** Key material per RFC 4106 section 8.1: the AES key followed by a 4-byte salt. */
export const ESP_SALT_LENGTH = 4
export const ESP_KEY_MATERIAL_LENGTH = 32 + ESP_SALT_LENGTH

/** Bytes written before the inner packet: outer IPv4 (20) + SPI (4) + sequence (4) + IV (8). */
export const ESP_HEADROOM = OUTER_IPV4_LENGTH + ESP_HEADER_LENGTH // 36
/** Most bytes written after it: padding (<= 3) + pad length + next header + ICV (16). */
export const ESP_MAX_TAILROOM = 3 + 2 + ESP_ICV_LENGTH // 21
/** Most bytes one inner packet grows by (for the MTU): 57, before GRE and the carrier. */
export const ESP_MAX_OVERHEAD = ESP_HEADROOM + ESP_MAX_TAILROOM
/** Smallest ciphertext: the 2-byte trailer padded to 4 bytes. */
const MIN_CIPHERTEXT = 4

/** Padding RFC 4303 2.4 needs after an inner packet of `length` bytes: 0..3. */
export function espPadLength(length: number): number {
  return (4 - ((length + 2) & 3)) & 3
}

export interface EspSaOptions {
  /** The SPI this SA's packets carry (the receiver's choice, a uint32). */
  spi: number
  /**
   * Key material (RFC 4106 8.1): 32-byte AES-256 key + 4-byte salt, 36 bytes. 20 (AES-128) and
   * 28 (AES-192) bytes are accepted too, for the draft-mcgrew-gcm-test-01 cross-checks; the
   * transport uses 36. Copied: the caller may wipe its buffer.
   */
  key: Buffer
  /** Extended (64-bit) sequence numbers, RFC 4303 2.2.1 and Appendix A. Default false. */
  esn?: boolean
}

/**
 * One direction of one security association: SPI, key, salt and whether ESN is on. The sealer
 * of one end and the opener of the other share the same parameters; each end has one SA per
 * direction, with different SPIs and keys.
 */
export class EspSa {
  readonly spi: number
  readonly esn: boolean
  /** 'aes-256-gcm' (or -128/-192 for the test vectors). */
  readonly algorithm: 'aes-128-gcm' | 'aes-192-gcm' | 'aes-256-gcm'
  private readonly key: Buffer
  /** The key material as given (key, then salt), for the core's fast path; wiped by destroy(). */
  readonly keyMaterial: Buffer
  /** salt | IV; the salt is written once, the IV per packet. */
  private readonly nonce = Buffer.alloc(ESP_SALT_LENGTH + ESP_IV_LENGTH)
  private readonly aad: Buffer
  private destroyed = false
  private hasSealer = false

  constructor(opts: EspSaOptions) {
    const {spi, key} = opts
    if (!Number.isInteger(spi) || spi < 0 || spi > 0xffffffff) throw new RangeError(`SPI must be a uint32, not ${spi}`)
    if (!Buffer.isBuffer(key) || (key.length !== 20 && key.length !== 28 && key.length !== 36)) {
      throw new RangeError('ESP key material must be 36 bytes (32-byte AES-256 key + 4-byte salt; 20 or 28 for AES-128/192)')
    }
    this.spi = spi
    this.esn = opts.esn === true
    const keyLength = key.length - ESP_SALT_LENGTH
    this.algorithm = keyLength === 32 ? 'aes-256-gcm' : keyLength === 24 ? 'aes-192-gcm' : 'aes-128-gcm'
    this.key = Buffer.alloc(keyLength)
    key.copy(this.key, 0, 0, keyLength)
    this.keyMaterial = Buffer.from(key)
    key.copy(this.nonce, 0, keyLength, key.length)
    this.aad = Buffer.alloc(this.esn ? 12 : 8)
    writeU32(this.aad, 0, spi)
  }

  /** True once destroy() ran: sealers refuse, openers drop everything as 'unknown-session'. */
  get isDestroyed(): boolean {
    return this.destroyed
  }

  /**
   * Called by EspSealer's constructor: an SA has at most one sealer, since two counters under
   * one key would both use IV 1, 2, 3... and reuse GCM nonces (which breaks GCM outright).
   */
  claimSealer(): void {
    if (this.hasSealer) throw new Error(`ESP SA ${this.spi.toString(16)} already has a sealer: a second would reuse GCM nonces`)
    this.hasSealer = true
  }

  /** Zeroes the key and salt; the SA is unusable afterwards (Session.close). */
  destroy(): void {
    this.destroyed = true
    this.key.fill(0)
    this.keyMaterial.fill(0)
    this.nonce.fill(0)
  }

  /**
   * Encrypts buf[pt, pt+ptLength) in place and writes the ICV after it. The IV is read from the
   * 8 bytes just before pt (the ESP header's IV field), the AAD built from the SPI and hi:lo.
   * The caller has checked the span and the SA is not destroyed.
   */
  sealInPlace(seqHi: number, seqLo: number, buf: Buffer, pt: number, ptLength: number): void {
    this.setNonceAndAad(seqHi, seqLo, buf, pt - ESP_IV_LENGTH)
    const cipher = createCipheriv(this.algorithm, this.key, this.nonce, {authTagLength: ESP_ICV_LENGTH})
    cipher.setAAD(this.aad)
    const ct = cipher.update(buf.subarray(pt, pt + ptLength))
    cipher.final() // GCM is a stream mode: nothing is held back, final() returns no bytes
    ct.copy(buf, pt)
    cipher.getAuthTag().copy(buf, pt + ptLength)
  }

  /**
   * Verifies and decrypts the ciphertext buf[ct, ct+ctLength) followed by its 16-byte ICV; the
   * IV is the 8 bytes before ct. Returns the plaintext (a Buffer node:crypto allocated; buf is
   * untouched) or null if the ICV does not verify. Never throws for any bytes in the span.
   */
  openToBuffer(seqHi: number, seqLo: number, buf: Buffer, ct: number, ctLength: number): Buffer | null {
    this.setNonceAndAad(seqHi, seqLo, buf, ct - ESP_IV_LENGTH)
    try {
      const decipher = createDecipheriv(this.algorithm, this.key, this.nonce, {authTagLength: ESP_ICV_LENGTH})
      decipher.setAAD(this.aad)
      decipher.setAuthTag(buf.subarray(ct + ctLength, ct + ctLength + ESP_ICV_LENGTH))
      const pt = decipher.update(buf.subarray(ct, ct + ctLength))
      decipher.final() // throws if the tag does not verify
      return pt
    } catch {
      return null
    }
  }

  private setNonceAndAad(seqHi: number, seqLo: number, buf: Buffer, iv: number): void {
    const n = this.nonce
    for (let i = 0; i < ESP_IV_LENGTH; i++) n[ESP_SALT_LENGTH + i] = buf[iv + i]
    // RFC 4106 section 5: SPI | seq (32-bit), or SPI | seq high | seq low (ESN).
    if (this.esn) {
      writeU32(this.aad, 4, seqHi)
      writeU32(this.aad, 8, seqLo)
    } else {
      writeU32(this.aad, 4, seqLo)
    }
  }
}

/**
 * The sending side of one SA: numbers packets 1, 2, 3... (RFC 4303 3.3.3), writes outer IPv4,
 * ESP header, padding and trailer around the inner packet and seals it in place.
 */
export class EspSealer {
  /**
   * The last sequence number used, [high half, low half]: one array, so the core's native fast
   * path seals from the same counter (FastCodec esp-gcm-in-gre) and no number is used twice.
   */
  readonly counter = new Uint32Array(2)
  private readonly maxHi: number
  /** One's complement sum of the outer header's constant words (all but length and checksum). */
  private readonly headerSum: number
  /** The outer IPv4 source and destination. */
  readonly src: number
  readonly dst: number

  /**
   * outerSrc/outerDst: the tunnel endpoints' IPv4 addresses as uint32 (10.0.0.1 = 0x0a000001).
   * opts.lastSequence: the number of the last packet already sent under this SA (default 0, so
   * the first packet is 1); for tests and for resuming, never to reuse numbers under one key.
   */
  constructor(
    readonly sa: EspSa,
    outerSrc: number,
    outerDst: number,
    opts: {lastSequence?: bigint} = {},
  ) {
    for (const a of [outerSrc, outerDst]) {
      if (!Number.isInteger(a) || a < 0 || a > 0xffffffff) throw new RangeError(`outer address must be a uint32, not ${a}`)
    }
    this.src = outerSrc
    this.dst = outerDst
    this.maxHi = sa.esn ? 0xffffffff : 0
    const last = opts.lastSequence ?? 0n
    if (last < 0n || last > (sa.esn ? 0xffffffffffffffffn : 0xffffffffn)) throw new RangeError(`lastSequence out of range: ${last}`)
    sa.claimSealer()
    this.counter[0] = Number(last >> 32n)
    this.counter[1] = Number(last & 0xffffffffn)
    this.headerSum =
      0x4500 + 0x0000 /* id */ + 0x4000 /* DF */ + ((64 << 8) | IPPROTO_ESP) + (outerSrc >>> 16) + (outerSrc & 0xffff) + (outerDst >>> 16) + (outerDst & 0xffff)
  }

  /** The sequence number of the last packet sealed (0 before the first). Not for the hot path. */
  get sequence(): bigint {
    return (BigInt(this.counter[0]) << 32n) | BigInt(this.counter[1])
  }

  /** True when the counter is at its last value: seal() refuses until the SA is replaced. */
  get exhausted(): boolean {
    return this.counter[1] === 0xffffffff && this.counter[0] === this.maxHi
  }

  /**
   * Encapsulates the inner packet buf[innerOffset, innerOffset+innerLength) in place: outer IPv4
   * and ESP header into the ESP_HEADROOM bytes before it, padding, trailer and ICV into up to
   * ESP_MAX_TAILROOM bytes after it; `out` is set to the outer packet. Returns false, writing
   * nothing and using no sequence number, if: the SA is destroyed; the counter would wrap (the
   * caller must rekey before: RFC 4303 3.3.3); the room before or after is short; the packet is
   * empty or neither IPv4 nor IPv6 (by its version nibble); or the outer packet would exceed 65535.
   */
  seal(buf: Buffer, innerOffset: number, innerLength: number, out: Span): boolean {
    const sa = this.sa
    if (sa.isDestroyed || this.exhausted) return false
    const start = innerOffset - ESP_HEADROOM
    const pad = espPadLength(innerLength)
    const ptLength = innerLength + pad + 2
    const end = innerOffset + ptLength + ESP_ICV_LENGTH
    const total = end - start
    if (!(Number.isInteger(innerOffset) && Number.isInteger(innerLength))) return false
    if (!(start >= 0 && innerLength > 0 && end <= buf.length && total <= 0xffff)) return false
    const version = buf[innerOffset] >> 4
    const nextHeader = version === 4 ? ESP_NEXT_HEADER_IPV4 : version === 6 ? ESP_NEXT_HEADER_IPV6 : 0
    if (nextHeader === 0) return false

    // Next sequence number: the only state change, after every check.
    let hi = this.counter[0]
    let lo = (this.counter[1] + 1) >>> 0
    if (lo === 0) hi++
    this.counter[0] = hi
    this.counter[1] = lo

    // Trailer (RFC 4303 2.4-2.6): padding 1, 2, 3..., its length, the next header.
    let p = innerOffset + innerLength
    for (let i = 1; i <= pad; i++) buf[p++] = i
    buf[p] = pad
    buf[p + 1] = nextHeader

    // Outer IPv4: version 4, IHL 5, TOS 0, total, id 0, DF, TTL 64, protocol 50, checksum.
    buf[start] = 0x45
    buf[start + 1] = 0
    buf[start + 2] = total >>> 8
    buf[start + 3] = total
    buf[start + 4] = 0
    buf[start + 5] = 0
    buf[start + 6] = 0x40
    buf[start + 7] = 0
    buf[start + 8] = 64
    buf[start + 9] = IPPROTO_ESP
    let sum = this.headerSum + total
    sum = (sum & 0xffff) + (sum >>> 16)
    sum = (sum & 0xffff) + (sum >>> 16)
    const checksum = ~sum & 0xffff
    buf[start + 10] = checksum >>> 8
    buf[start + 11] = checksum
    writeU32(buf, start + 12, this.src)
    writeU32(buf, start + 16, this.dst)

    // ESP header: SPI, low 32 bits of the sequence number, IV = the whole 64-bit number.
    const esp = start + OUTER_IPV4_LENGTH
    writeU32(buf, esp, sa.spi)
    writeU32(buf, esp + 4, lo)
    writeU32(buf, esp + 8, hi)
    writeU32(buf, esp + 12, lo)

    sa.sealInPlace(hi, lo, buf, innerOffset, ptLength)
    out.offset = start
    out.length = total
    return true
  }
}

/**
 * The receiving side of one SA. open() checks, in this order (the first failure decides):
 *  1. the span is outside buf, or shorter than an outer IPv4 header           -> 'truncated'
 *  2. IPv4 version not 4, or header length not 20 (we never send options)      -> 'malformed'
 *  3. IPv4 total length longer than the span                                   -> 'truncated'
 *     shorter than the span (trailing bytes)                                   -> 'malformed'
 *  4. IPv4 header checksum wrong                                               -> 'malformed'
 *  5. a fragment (MF set or offset not 0: we do not reassemble)                -> 'unsupported'
 *  6. protocol not 50 (ESP)                                                    -> 'unsupported'
 *  7. ESP shorter than header + 4 bytes of ciphertext + ICV                    -> 'truncated'
 *  8. ciphertext not a multiple of 4 bytes (RFC 4303 2.4)                      -> 'malformed'
 *  9. SPI not this SA's (or the SA destroyed)                                  -> 'unknown-session'
 * 10. sequence number a duplicate or below the window (before any crypto)      -> 'replay'
 * 11. ICV does not verify                                                      -> 'authentication'
 *     -- the window is updated here: the packet is authentic --
 * 12. pad length + 2 longer than the plaintext, or no inner packet left        -> 'malformed'
 * 13. padding bytes not 1, 2, 3...                                             -> 'malformed'
 * 14. next header not 4 (IPv4) or 41 (IPv6)                                    -> 'unsupported'
 * 15. inner packet's version nibble not the one next header names             -> 'malformed'
 * On success (null) the inner packet is decrypted in place where the ciphertext was and `out`
 * spans it. On any failure buf is left as it was. Never throws.
 */
export class EspOpener {
  constructor(
    readonly sa: EspSa,
    readonly replay: ReplayWindow,
  ) {}

  open(buf: Buffer, offset: number, length: number, out: Span): Drop | null {
    if (!(Number.isInteger(offset) && Number.isInteger(length) && offset >= 0 && length >= 0 && offset + length <= buf.length)) return 'truncated'
    if (length < OUTER_IPV4_LENGTH) return 'truncated'
    if (buf[offset] !== 0x45) return 'malformed'
    const total = (buf[offset + 2] << 8) | buf[offset + 3]
    if (total > length) return 'truncated'
    if (total < length) return 'malformed'
    if (!ipv4HeaderChecksumValid(buf, offset)) return 'malformed'
    if ((buf[offset + 6] & 0x3f) !== 0 || buf[offset + 7] !== 0) return 'unsupported'
    if (buf[offset + 9] !== IPPROTO_ESP) return 'unsupported'

    const esp = offset + OUTER_IPV4_LENGTH
    const ctLength = length - OUTER_IPV4_LENGTH - ESP_HEADER_LENGTH - ESP_ICV_LENGTH
    if (ctLength < MIN_CIPHERTEXT) return 'truncated'
    if ((ctLength & 3) !== 0) return 'malformed'
    const sa = this.sa
    if (readU32(buf, esp) !== sa.spi || sa.isDestroyed) return 'unknown-session'

    const lo = readU32(buf, esp + 4)
    const replay = this.replay
    let hi = 0
    if (sa.esn) {
      hi = replay.inferHigh(lo)
      // Before the first or past the last possible number: older than anything in the window.
      if (hi < 0 || hi > 0xffffffff) return replay.refuseTooOld()
    }
    if (!replay.checkHL(hi, lo)) return 'replay'

    const ct = esp + ESP_HEADER_LENGTH
    const pt = sa.openToBuffer(hi, lo, buf, ct, ctLength)
    if (pt === null) return 'authentication'
    replay.updateHL(hi, lo)

    const nextHeader = pt[ctLength - 1]
    const pad = pt[ctLength - 2]
    const innerLength = ctLength - 2 - pad
    if (innerLength <= 0) return 'malformed'
    for (let i = 1; i <= pad; i++) if (pt[innerLength + i - 1] !== i) return 'malformed'
    const version = pt[0] >> 4
    if (nextHeader === ESP_NEXT_HEADER_IPV4) {
      if (version !== 4) return 'malformed'
    } else if (nextHeader === ESP_NEXT_HEADER_IPV6) {
      if (version !== 6) return 'malformed'
    } else {
      return 'unsupported'
    }
    pt.copy(buf, ct, 0, innerLength)
    out.offset = ct
    out.length = innerLength
    return null
  }
}

/**
 * Low level, for test vectors and hand-made packets: writes the ESP header (SPI, low half of
 * hi:lo, the given 8-byte IV) at buf[espOffset] and seals the plaintext already at
 * buf[espOffset+16, +plaintextLength) exactly as it is (no padding added, no checks on it),
 * ICV after it. Returns the ESP packet's length, or -1 if it does not fit or the SA is destroyed.
 */
export function sealEspPayload(sa: EspSa, seqHi: number, seqLo: number, iv: Buffer, buf: Buffer, espOffset: number, plaintextLength: number): number {
  const length = ESP_HEADER_LENGTH + plaintextLength + ESP_ICV_LENGTH
  if (sa.isDestroyed || iv.length !== ESP_IV_LENGTH || espOffset < 0 || plaintextLength < 0 || espOffset + length > buf.length) return -1
  writeU32(buf, espOffset, sa.spi)
  writeU32(buf, espOffset + 4, seqLo)
  iv.copy(buf, espOffset + 8)
  sa.sealInPlace(seqHi >>> 0, seqLo >>> 0, buf, espOffset + ESP_HEADER_LENGTH, plaintextLength)
  return length
}

/**
 * Low level counterpart: verifies the ESP packet buf[espOffset, +espLength) (SPI, sequence, IV,
 * ciphertext, ICV) with the given high half of the sequence number (ignored without ESN) and
 * decrypts it in place. Returns the plaintext's length (at espOffset+16), trailer included and
 * unchecked, or -1 if the ICV does not verify, the span is bad or the SA is destroyed.
 * No SPI, replay or trailer checks: that is EspOpener's job.
 */
export function openEspPayload(sa: EspSa, seqHi: number, buf: Buffer, espOffset: number, espLength: number): number {
  const ctLength = espLength - ESP_HEADER_LENGTH - ESP_ICV_LENGTH
  if (sa.isDestroyed || espOffset < 0 || ctLength < 0 || espOffset + espLength > buf.length) return -1
  const pt = sa.openToBuffer(seqHi >>> 0, readU32(buf, espOffset + 4), buf, espOffset + ESP_HEADER_LENGTH, ctLength)
  if (pt === null) return -1
  pt.copy(buf, espOffset + ESP_HEADER_LENGTH)
  return ctLength
}

/** Dotted IPv4 text to the uint32 EspSealer takes (control plane, not per packet). */
export function ipv4ToUint32(address: string): number {
  const parts = address.split('.')
  if (parts.length !== 4) throw new RangeError(`not an IPv4 address: ${address}`)
  let v = 0
  for (const part of parts) {
    if (!/^\d{1,3}$/.test(part) || Number(part) > 255) throw new RangeError(`not an IPv4 address: ${address}`)
    v = v * 256 + Number(part)
  }
  return v
}

function ipv4HeaderChecksumValid(buf: Buffer, p: number): boolean {
  let sum = 0
  for (let i = 0; i < OUTER_IPV4_LENGTH; i += 2) sum += (buf[p + i] << 8) | buf[p + i + 1]
  sum = (sum & 0xffff) + (sum >>> 16)
  sum = (sum & 0xffff) + (sum >>> 16)
  return sum === 0xffff
}

function readU32(buf: Buffer, p: number): number {
  return ((buf[p] << 24) | (buf[p + 1] << 16) | (buf[p + 2] << 8) | buf[p + 3]) >>> 0
}

// Uint8Array stores each value modulo 256, so no masking is needed.
function writeU32(buf: Buffer, p: number, v: number): void {
  buf[p] = v >>> 24
  buf[p + 1] = v >>> 16
  buf[p + 2] = v >>> 8
  buf[p + 3] = v
}
