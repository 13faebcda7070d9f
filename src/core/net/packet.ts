/**
 * Reading inner IP headers on the data path: just enough to route a packet to its peer and to
 * check the source a client is allowed to use. Pure functions over (buf, offset, length), no
 * allocation, no throwing: a bad packet is a return value the caller counts.
 */

/** Why an inner packet is unusable, or null when it is a well-formed IPv4 packet. */
export type PacketError = 'short' | 'version' | 'header-length' | 'total-length'

export const IPV4_MIN_HEADER = 20


/**
 * Check an IPv4 header: version 4, header length at least 20 bytes and within the packet,
 * total length equal to what we were handed (a TUN read or a decapsulated payload is exactly
 * one packet; a mismatch means truncation or padding we cannot trust).
 */
export function checkIpv4(buf: Uint8Array, offset: number, length: number): PacketError | null {
  if (length < IPV4_MIN_HEADER) return 'short'
  const b0 = buf[offset]
  if (b0 >> 4 !== 4) return 'version'
  const ihl = (b0 & 0x0f) * 4
  if (ihl < IPV4_MIN_HEADER || ihl > length) return 'header-length'
  const total = (buf[offset + 2] << 8) | buf[offset + 3]
  if (total !== length) return 'total-length'
  return null
}

/** IPv4 source address as an unsigned 32-bit number. The caller has checked the header. */
export function ipv4Source(buf: Uint8Array, offset: number): number {
  return ((buf[offset + 12] << 24) | (buf[offset + 13] << 16) | (buf[offset + 14] << 8) | buf[offset + 15]) >>> 0
}

export function ipv4Destination(buf: Uint8Array, offset: number): number {
  return ((buf[offset + 16] << 24) | (buf[offset + 17] << 16) | (buf[offset + 18] << 8) | buf[offset + 19]) >>> 0
}
