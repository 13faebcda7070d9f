/**
 * IP-in-IP (RFC 2003) payloads. With the `ip` carrier the outer IPv4 header (protocol 4) is
 * written by the kernel (fresh TTL) and stripped by it on receipt; with the `udp` carrier the
 * inner packet is the whole UDP payload, as Linux `fou` does for `ipproto 4`. Either way what
 * the transport handles is the inner packet itself, untouched: encapsulation adds nothing, and
 * decapsulation only checks that the payload is one whole inner packet.
 */
import type {Drop} from '../../../src/core/transport/contract.js'

export const IPPROTO_IPIP = 4

/**
 * Check that buf[offset, offset+length) is exactly one inner IPv4 packet. IPv6 inner packets
 * (protocol 41) are refused: this tunnel carries IPv4.
 */
export function checkInner(buf: Uint8Array, offset: number, length: number, maxPayload: number): Drop | null {
  if (length < 1) return 'truncated'
  const version = buf[offset] >> 4
  if (version === 6) return 'unsupported'
  if (version !== 4) return 'malformed'
  if (length < 20) return 'truncated'
  if (length > maxPayload) return 'malformed'
  const ihl = (buf[offset] & 0x0f) * 4
  if (ihl < 20 || ihl > length) return 'malformed'
  const total = (buf[offset + 2] << 8) | buf[offset + 3]
  if (total > length) return 'truncated'
  if (total !== length) return 'malformed'
  return null
}
