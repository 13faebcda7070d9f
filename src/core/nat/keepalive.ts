/**
 * Authenticated keepalives for datagram carriers (gre, ipip, ipsec-over-gre over UDP or IP).
 *
 * A keepalive is an ordinary inner IPv4 packet from the client's tunnel address to the node's,
 * of IP protocol 253 (RFC 3692, for experiments), so every transport carries it unchanged:
 * the core needs no transport-specific keepalive, and the transport needs no core-specific
 * framing. Its payload proves the sender holds this session's key:
 *
 *   0      4      5          8                 16                        32
 *   +------+------+----------+-----------------+--------------------------+
 *   | AGKA | kind | reserved |  counter (BE)   |  HMAC-SHA256(key, 0..16) |
 *   +------+------+----------+-----------------+        first 16 bytes    +
 *
 * The key is exported from the control channel's TLS session (RFC 8446 7.5), so only the two
 * ends of that session can make one. The counter only grows: a captured keepalive replayed
 * from elsewhere is refused. The node moves a session to a new public endpoint only on a
 * keepalive that verifies, which is what makes NAT rebinding safe for transports whose data
 * packets prove nothing (IPIP has no key; GRE's key travels in clear).
 */
import {createHmac, timingSafeEqual} from 'node:crypto'
import {internetChecksum} from '../net/checksum.js'

export const KEEPALIVE_PROTOCOL = 253
export const KEEPALIVE_MAGIC = 0x41474b41 // "AGKA"
export const KEEPALIVE_PAYLOAD = 32
export const KEEPALIVE_PACKET = 20 + KEEPALIVE_PAYLOAD
/** The labels both ends give the TLS exporter for the keepalive keys, one per direction. */
export const KEEPALIVE_KEY_LABELS = {toNode: 'EXPORTER-agent-keepalive-c2s', toClient: 'EXPORTER-agent-keepalive-s2c'} as const

export const KeepaliveKind = {Request: 1, Reply: 2} as const
export type KeepaliveKind = (typeof KeepaliveKind)[keyof typeof KeepaliveKind]

/** Write a keepalive IPv4 packet of `kind` at buf[offset..offset+52). */
export function writeKeepalive(buf: Buffer, offset: number, src: number, dst: number, kind: KeepaliveKind, counter: bigint, key: Buffer): void {
  buf.fill(0, offset, offset + KEEPALIVE_PACKET)
  buf[offset] = 0x45
  buf.writeUInt16BE(KEEPALIVE_PACKET, offset + 2)
  buf[offset + 6] = 0x40 // DF
  buf[offset + 8] = 64
  buf[offset + 9] = KEEPALIVE_PROTOCOL
  buf.writeUInt32BE(src, offset + 12)
  buf.writeUInt32BE(dst, offset + 16)
  buf.writeUInt16BE(internetChecksum(buf, offset, offset + 20), offset + 10)
  const p = offset + 20
  buf.writeUInt32BE(KEEPALIVE_MAGIC, p)
  buf[p + 4] = kind
  buf.writeBigUInt64BE(counter, p + 8)
  createHmac('sha256', key).update(buf.subarray(p, p + 16)).digest().copy(buf, p + 16, 0, 16)
}

/** A whole keepalive in a fresh buffer with `headroom` bytes free before it (control plane). */
export function makeKeepalive(headroom: number, tailroom: number, src: number, dst: number, kind: KeepaliveKind, counter: bigint, key: Buffer): Buffer {
  const buf = Buffer.alloc(headroom + KEEPALIVE_PACKET + tailroom)
  writeKeepalive(buf, headroom, src, dst, kind, counter, key)
  return buf
}

/** Cheap test on the data path: is this inner IPv4 packet a keepalive addressed to `dst`? */
export function isKeepalive(buf: Uint8Array, offset: number, length: number, dst: number): boolean {
  return (
    length === KEEPALIVE_PACKET &&
    buf[offset + 9] === KEEPALIVE_PROTOCOL &&
    ((buf[offset + 16] << 24) | (buf[offset + 17] << 16) | (buf[offset + 18] << 8) | buf[offset + 19]) >>> 0 === dst
  )
}

export interface VerifiedKeepalive {
  kind: KeepaliveKind
  counter: bigint
}

/**
 * Check a keepalive's magic and MAC, and that its counter is above `lastCounter`.
 * Returns what it says, or null when it proves nothing.
 */
export function verifyKeepalive(buf: Buffer, offset: number, key: Buffer, lastCounter: bigint): VerifiedKeepalive | null {
  const p = offset + 20
  if (buf.readUInt32BE(p) !== KEEPALIVE_MAGIC) return null
  const kind = buf[p + 4]
  if (kind !== KeepaliveKind.Request && kind !== KeepaliveKind.Reply) return null
  const mac = createHmac('sha256', key).update(buf.subarray(p, p + 16)).digest().subarray(0, 16)
  if (!timingSafeEqual(mac, buf.subarray(p + 16, p + 32))) return null
  const counter = buf.readBigUInt64BE(p + 8)
  if (counter <= lastCounter) return null
  return {kind: kind as KeepaliveKind, counter}
}


/** This end's keepalive keys from the control connection's TLS exporter. */
export function keepaliveKeys(
  exporter: {exportKeyingMaterial(length: number, label: string, context: Buffer): Buffer},
  role: 'node' | 'client',
): {receive: Buffer; send: Buffer} {
  const toNode = exporter.exportKeyingMaterial(32, KEEPALIVE_KEY_LABELS.toNode, Buffer.alloc(0))
  const toClient = exporter.exportKeyingMaterial(32, KEEPALIVE_KEY_LABELS.toClient, Buffer.alloc(0))
  return role === 'node' ? {receive: toNode, send: toClient} : {receive: toClient, send: toNode}
}
