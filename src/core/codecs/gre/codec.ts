/**
 * The GRE header (RFC 2784, with the Key and Sequence Number extensions of RFC 2890), as this
 * transport writes and reads it. The same header travels bare as IP protocol 47 or inside UDP
 * (GRE-in-UDP, RFC 8086); the carrier is the core's business, not the codec's.
 *
 *    0                   1                   2                   3
 *    0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *   |C|R|K|S|s|r r r|  reserved0  | Ver |         Protocol Type         |
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *   |      Checksum (if C)          |       Reserved1 (if C)            |
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *   |                          Key (if K)                               |
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *   |                    Sequence Number (if S)                         |
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *
 * Everything here is on the per-packet path: no allocation, no exceptions, bytes read and written
 * by index (Buffer's readUInt32BE and friends throw on a bad offset; indexing does not).
 * docs/gre-wire.md states what we emit and what we accept.
 */
import type {Drop} from '../../transport/contract.js'
import {checksumValid, internetChecksum} from '../../net/checksum.js'

export const GRE_PROTO_IPV4 = 0x0800
export const GRE_PROTO_IPV6 = 0x86dd

/** The longest header we write: base, checksum, key and sequence. The session's headroom. */
export const GRE_MAX_HEADER_LENGTH = 16

// First byte: C, R (routing, RFC 1701), K, S, s (strict source route, RFC 1701), then the 3 bits
// that were RFC 1701's recursion control. Second byte: 5 reserved bits, then the version.
const FLAG_CHECKSUM = 0x80
const FLAG_KEY = 0x20
const FLAG_SEQUENCE = 0x10
/**
 * Bits 1, 4 and 5. RFC 2784 section 2.3: a receiver MUST discard a packet in which any of
 * bits 1-5 is non-zero (unless it implements RFC 1701); RFC 2890 has since given bits 2 and 3
 * the meanings K and S. Bits 6-12 "MUST be ignored on receipt", so they are not in this mask.
 */
const MUST_BE_ZERO_BYTE0 = 0x4c
const VERSION_MASK_BYTE1 = 0x07

/** Which optional fields a session sends. The key is always sent: it identifies the session. */
export interface GreFlags {
  checksum: boolean
  sequence: boolean
}

/** Header length we write for these flags: 4 base + 4 key, + 4 checksum, + 4 sequence. */
export function greHeaderLength(f: GreFlags): number {
  return 8 + (f.checksum ? 4 : 0) + (f.sequence ? 4 : 0)
}

/**
 * Write the header into buf just before the payload at payloadOffset (the caller left at least
 * greHeaderLength(f) bytes of headroom), then, if f.checksum, the checksum over header and
 * payload. The payload is only read. The protocol type comes from the inner packet's version
 * nibble. Returns the header's start offset, or -1 (nothing written) if there is not enough
 * headroom, the payload is empty or runs past the buffer, or it is neither IPv4 nor IPv6: the
 * session's encap then drops the packet.
 */
export function writeGreHeader(
  buf: Buffer,
  payloadOffset: number,
  payloadLength: number,
  key: number,
  f: GreFlags,
  seq: number,
): number {
  const start = payloadOffset - greHeaderLength(f)
  const end = payloadOffset + payloadLength
  if (!(start >= 0 && payloadLength > 0 && end <= buf.length)) return -1
  const ipVersion = buf[payloadOffset] >> 4
  const protocolType = ipVersion === 4 ? GRE_PROTO_IPV4 : ipVersion === 6 ? GRE_PROTO_IPV6 : 0
  if (protocolType === 0) return -1

  buf[start] = FLAG_KEY | (f.checksum ? FLAG_CHECKSUM : 0) | (f.sequence ? FLAG_SEQUENCE : 0)
  buf[start + 1] = 0 // reserved0 zero, version 0
  buf[start + 2] = protocolType >> 8
  buf[start + 3] = protocolType & 0xff
  let p = start + 4
  if (f.checksum) {
    // Checksum and Reserved1 are zero while the sum is taken.
    buf[p] = 0
    buf[p + 1] = 0
    buf[p + 2] = 0
    buf[p + 3] = 0
    p += 4
  }
  writeU32(buf, p, key)
  p += 4
  if (f.sequence) writeU32(buf, p, seq)
  if (f.checksum) {
    const sum = internetChecksum(buf, start, end)
    buf[start + 4] = sum >> 8
    buf[start + 5] = sum & 0xff
  }
  return start
}

/** What parseGre found; meaningful only when it returned null. Allocate once, reuse per packet. */
export interface GreHeader {
  headerLength: number
  protocolType: number
  key: number
  hasKey: boolean
  hasSequence: boolean
  sequence: number
  hasChecksum: boolean
}

/** A zeroed GreHeader to pass to parseGre (one per session, not per packet). */
export function createGreHeader(): GreHeader {
  return {headerLength: 0, protocolType: 0, key: 0, hasKey: false, hasSequence: false, sequence: 0, hasChecksum: false}
}

/**
 * Parse and validate the GRE packet buf[offset, offset+length); maxPayload is the tunnel MTU.
 * Fills `out` and returns null if the packet is acceptable (the inner packet is then
 * buf[offset+out.headerLength, offset+length)), or the reason to drop it. Never throws.
 *
 * Checks, in this order (the first failing one decides the reason):
 *  1. shorter than 4 bytes, or the span is outside buf           -> 'truncated'
 *  2. version != 0, or bit 1, 4 or 5 set (bits 6-12 are ignored)   -> 'malformed'
 *  3. shorter than the header its flags announce                   -> 'truncated'
 *  4. empty payload                                                -> 'truncated'
 *  5. payload longer than maxPayload                               -> 'malformed'
 *  6. checksum present and wrong                                   -> 'malformed'
 *  7. no key                                                       -> 'unknown-session'
 *  8. protocol type neither 0x0800 nor 0x86DD                      -> 'unsupported'
 * The size checks come before the checksum so the checksum's work is bounded by the MTU; the
 * checksum comes before the key and protocol checks so a packet damaged in transit counts as
 * malformed whatever field the damage hit. A present checksum is verified whether or not this
 * end sends checksums. The key is returned, not matched: the session compares it with its own.
 */
export function parseGre(buf: Buffer, offset: number, length: number, maxPayload: number, out: GreHeader): Drop | null {
  if (!(offset >= 0 && length >= 4 && offset + length <= buf.length)) return 'truncated'
  const b0 = buf[offset]
  if ((b0 & MUST_BE_ZERO_BYTE0) !== 0 || (buf[offset + 1] & VERSION_MASK_BYTE1) !== 0) return 'malformed'
  const hasChecksum = (b0 & FLAG_CHECKSUM) !== 0
  const hasKey = (b0 & FLAG_KEY) !== 0
  const hasSequence = (b0 & FLAG_SEQUENCE) !== 0
  const headerLength = 4 + (hasChecksum ? 4 : 0) + (hasKey ? 4 : 0) + (hasSequence ? 4 : 0)
  if (length < headerLength) return 'truncated'
  const payloadLength = length - headerLength
  if (payloadLength === 0) return 'truncated'
  if (payloadLength > maxPayload) return 'malformed'
  if (hasChecksum && !checksumValid(buf, offset, offset + length)) return 'malformed'
  if (!hasKey) return 'unknown-session'
  const protocolType = (buf[offset + 2] << 8) | buf[offset + 3]
  if (protocolType !== GRE_PROTO_IPV4 && protocolType !== GRE_PROTO_IPV6) return 'unsupported'

  const keyAt = offset + (hasChecksum ? 8 : 4)
  out.headerLength = headerLength
  out.protocolType = protocolType
  out.hasChecksum = hasChecksum
  out.hasKey = true
  out.key = readU32(buf, keyAt)
  out.hasSequence = hasSequence
  out.sequence = hasSequence ? readU32(buf, keyAt + 4) : 0
  return null
}

/**
 * The key of the GRE packet buf[offset, offset+length), without validating the rest: the core
 * uses it to find the session before decapsulating. Undefined if the K bit is clear or the packet
 * is too short to hold the key where the flags put it. Never throws.
 */
export function peekGreKey(buf: Buffer, offset: number, length: number): number | undefined {
  if (!(offset >= 0 && length >= 4 && offset + length <= buf.length)) return undefined
  const b0 = buf[offset]
  if ((b0 & FLAG_KEY) === 0) return undefined
  const keyAt = offset + ((b0 & FLAG_CHECKSUM) !== 0 ? 8 : 4)
  if (keyAt + 4 > offset + length) return undefined
  return readU32(buf, keyAt)
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
