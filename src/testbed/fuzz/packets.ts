/**
 * Inner IPv4 packets for the fuzzer, and the ways it breaks them. Most packets start well
 * formed (so they pass the fast path's first checks and reach the TUN write and the TCP
 * coalescing) and then get a structured mutation (IHL, total length, fragments, TCP data offset
 * and options, flags, checksums...), or raw byte damage. Nothing here allocates per packet:
 * everything is written into the caller's buffer.
 */
import {internetChecksum, onesComplementSum} from '../../core/net/checksum.js'
import type {Rng} from './rng.js'

const TCP = 6
const UDP = 17
const ICMP = 1
const INTERESTING_8 = [0, 1, 0x7f, 0x80, 0xff, 0x40, 0x45, 0x0f, 0x10]
const INTERESTING_16 = [0, 1, 0x7fff, 0x8000, 0xffff, 0xfffe, 19, 20, 21, 40, 60, 64, 1280, 1400, 1500, 9000]

export interface InnerSpec {
  /** Our tunnel address (the fast path takes only packets from it). */
  src: number
  /** Where the packets go (the target behind the node). */
  dst: number
  /** The largest inner packet the tunnel carries. */
  mtu: number
}

/** A TCP flow whose segments follow each other, so the node's coalescer can merge them. */
export class TcpFlow {
  seq: number
  readonly sport: number
  readonly dport: number
  /** What a run keeps the same from segment to segment (as the coalescer requires). */
  readonly ack: number
  readonly window: number
  readonly ts: number
  readonly optLen: number
  constructor(rng: Rng) {
    this.seq = rng.u32()
    this.ack = rng.u32()
    this.window = rng.int(65536)
    this.ts = rng.u32()
    this.optLen = rng.chance(0.8) ? 12 : 0
    this.sport = 1024 + rng.int(60000)
    this.dport = rng.pick([80, 443, 5201, 9, 7, 1 + rng.int(65535)])
  }
}

/** IPv4 header (no options) at buf[off]; returns the header length. */
function ipHeader(buf: Buffer, off: number, total: number, proto: number, spec: InnerSpec, rng: Rng, ihlWords = 5): number {
  buf[off] = 0x40 | ihlWords
  buf[off + 1] = 0
  buf.writeUInt16BE(total, off + 2)
  buf.writeUInt16BE(rng.u32() & 0xffff, off + 4)
  buf.writeUInt16BE(0x4000, off + 6) // DF
  buf[off + 8] = 64
  buf[off + 9] = proto
  buf.writeUInt16BE(0, off + 10)
  buf.writeUInt32BE(spec.src, off + 12)
  buf.writeUInt32BE(spec.dst, off + 16)
  return ihlWords * 4
}

export function fixIpChecksum(buf: Buffer, off: number): void {
  const ihl = (buf[off] & 15) * 4
  buf.writeUInt16BE(0, off + 10)
  buf.writeUInt16BE(internetChecksum(buf, off, off + ihl), off + 10)
}

/** TCP or UDP checksum over the pseudo-header, for a packet whose IPv4 header says where it is. */
export function fixL4Checksum(buf: Buffer, off: number, len: number): void {
  const ihl = (buf[off] & 15) * 4
  const proto = buf[off + 9]
  const at = proto === TCP ? 16 : proto === UDP ? 6 : -1
  if (at < 0 || ihl + at + 2 > len) return
  const l4 = off + ihl
  const l4len = len - ihl
  buf.writeUInt16BE(0, l4 + at)
  let pseudo = onesComplementSum(buf, off + 12, off + 20)
  pseudo += proto + l4len
  const sum = onesComplementSum(buf, l4, l4 + l4len, pseudo)
  const c = ~sum & 0xffff
  buf.writeUInt16BE(proto === UDP && c === 0 ? 0xffff : c, l4 + at)
}

/** TCP options: well-formed ones mostly (MSS, SACK-permitted, timestamps, window scale, NOPs). */
function tcpOptions(buf: Buffer, off: number, room: number, rng: Rng): number {
  let n = 0
  while (n + 4 <= room && rng.chance(0.6)) {
    switch (rng.int(5)) {
      case 0:
        buf[off + n] = 2; buf[off + n + 1] = 4; buf.writeUInt16BE(rng.pick([536, 1360, 1460, 65535]), off + n + 2); n += 4
        break
      case 1:
        buf[off + n] = 1; buf[off + n + 1] = 1; buf[off + n + 2] = 4; buf[off + n + 3] = 2; n += 4
        break
      case 2:
        if (n + 12 > room) return n
        buf[off + n] = 1; buf[off + n + 1] = 1; buf[off + n + 2] = 8; buf[off + n + 3] = 10
        buf.writeUInt32BE(rng.u32(), off + n + 4); buf.writeUInt32BE(rng.u32(), off + n + 8); n += 12
        break
      case 3:
        buf[off + n] = 1; buf[off + n + 1] = 3; buf[off + n + 2] = 3; buf[off + n + 3] = rng.int(15); n += 4
        break
      default:
        // Anything: a kind and a length that may lie.
        buf[off + n] = rng.int(256); buf[off + n + 1] = rng.pick([0, 1, 2, 3, 4, 40, 255]); buf[off + n + 2] = rng.int(256); buf[off + n + 3] = rng.int(256); n += 4
    }
  }
  return n
}

/**
 * A well-formed inner packet at buf[off]: TCP (of `flow` when given, continuing its sequence),
 * UDP, ICMP echo or another protocol. Returns its length (at most spec.mtu, and `room`).
 */
export function makeInner(buf: Buffer, off: number, room: number, spec: InnerSpec, rng: Rng, flow?: TcpFlow, payload?: number): number {
  const max = Math.min(spec.mtu, room)
  const kind = flow !== undefined ? 0 : rng.int(10)
  if (kind < 5) {
    const f = flow ?? new TcpFlow(rng)
    const optLen = flow !== undefined ? flow.optLen : rng.pick([0, 0, 4, 12, 20, 40])
    const thl = 20 + optLen
    const plen = Math.max(0, Math.min(payload ?? pickLength(rng, max - 20 - thl), max - 20 - thl))
    const total = 20 + thl + plen
    ipHeader(buf, off, total, TCP, spec, rng)
    const t = off + 20
    buf.writeUInt16BE(f.sport, t)
    buf.writeUInt16BE(f.dport, t + 2)
    buf.writeUInt32BE(f.seq >>> 0, t + 4)
    buf.writeUInt32BE(flow !== undefined ? f.ack : rng.u32(), t + 8)
    buf[t + 12] = (thl / 4) << 4
    buf[t + 13] = flow !== undefined ? (rng.chance(0.97) ? 0x10 : 0x18) : rng.pick([0x02, 0x10, 0x18, 0x11, 0x04, 0x12, rng.int(256)])
    buf.writeUInt16BE(flow !== undefined ? f.window : rng.int(65536), t + 14)
    buf.writeUInt32BE(0, t + 16)
    if (optLen > 0) {
      buf.fill(1, t + 20, t + thl) // NOPs, overwritten by what tcpOptions writes
      if (flow !== undefined) {
        buf[t + 20] = 1; buf[t + 21] = 1; buf[t + 22] = 8; buf[t + 23] = 10
        buf.writeUInt32BE(f.ts, t + 24); buf.writeUInt32BE(0, t + 28)
      } else tcpOptions(buf, t + 20, optLen, rng)
    }
    rng.fill(buf, t + thl, t + thl + plen)
    f.seq = (f.seq + plen) >>> 0
    fixIpChecksum(buf, off)
    fixL4Checksum(buf, off, total)
    return total
  }
  if (kind < 8) {
    const plen = pickLength(rng, max - 28)
    const total = 28 + plen
    ipHeader(buf, off, total, UDP, spec, rng)
    buf.writeUInt16BE(1024 + rng.int(60000), off + 20)
    buf.writeUInt16BE(rng.pick([53, 9, 7, 5201, 1 + rng.int(65535)]), off + 22)
    buf.writeUInt16BE(8 + plen, off + 24)
    rng.fill(buf, off + 28, off + total)
    fixIpChecksum(buf, off)
    fixL4Checksum(buf, off, total)
    return total
  }
  const proto = kind === 8 ? ICMP : rng.pick([47, 50, 4, 132, 253, rng.int(256)])
  const plen = pickLength(rng, max - 20)
  const total = 20 + plen
  ipHeader(buf, off, total, proto, spec, rng)
  rng.fill(buf, off + 20, off + total)
  if (proto === ICMP && plen >= 8) {
    buf[off + 20] = rng.chance(0.8) ? 8 : rng.int(256)
    buf[off + 21] = 0
    buf.writeUInt16BE(0, off + 22)
    buf.writeUInt16BE(internetChecksum(buf, off + 20, off + total), off + 22)
  }
  fixIpChecksum(buf, off)
  return total
}

/** Small, MTU-sized and everything between, with the edges weighted. */
function pickLength(rng: Rng, max: number): number {
  if (max <= 0) return 0
  switch (rng.int(4)) {
    case 0: return rng.int(Math.min(max, 64) + 1)
    case 1: return max - rng.int(Math.min(max, 8) + 1)
    default: return rng.int(max + 1)
  }
}

/**
 * A structured mutation of the IPv4 packet at buf[off, off+len): the fields the fast path, the
 * coalescer and the kernel read. Returns the new length (at most `room`). Checksums are fixed
 * afterwards half the time, so damage gets past the checksum checks as well as into them.
 */
export function mutateInner(buf: Buffer, off: number, len: number, room: number, rng: Rng): number {
  const ihl = (buf[off] & 15) * 4
  const l4 = off + ihl
  const proto = buf[off + 9]
  const rounds = 1 + rng.int(3)
  for (let r = 0; r < rounds; r++) {
    switch (rng.int(16)) {
      case 0: buf[off] = (buf[off] & 0xf0) | rng.int(16); break // IHL
      case 1: buf[off] = (rng.int(16) << 4) | (buf[off] & 15); break // version
      case 2: buf.writeUInt16BE(rng.chance(0.5) ? rng.pick(INTERESTING_16) : (len + rng.int(64) - 32) & 0xffff, off + 2); break // total length
      case 3: buf.writeUInt16BE(rng.pick([0x2000, 0x2001, 0x0001, 0x1fff, 0x3fff, 0x4000 | rng.int(0x2000), rng.u32() & 0xffff]), off + 6); break // MF, offset
      case 4: buf[off + 8] = rng.pick([0, 1, 255]); break // TTL
      case 5: buf[off + 9] = rng.pick([TCP, UDP, ICMP, 0, 253, rng.int(256)]); break // protocol
      case 6: buf.writeUInt32BE(rng.chance(0.5) ? rng.u32() : buf.readUInt32BE(off + 16), off + 12); break // source
      case 7: // TCP data offset
        if (proto === TCP && ihl + 13 <= len) buf[l4 + 12] = (rng.int(16) << 4) | (buf[l4 + 12] & 15)
        break
      case 8: // TCP flags
        if (proto === TCP && ihl + 14 <= len) buf[l4 + 13] = rng.pick([0, 0xff, 0x10, 0x18, 0x11, 0x14, 0x12, 0x38, rng.int(256)])
        break
      case 9: // TCP options: garbage inside the header
        if (proto === TCP && ihl + 20 <= len) {
          const thl = (buf[l4 + 12] >> 4) * 4
          for (let i = 20; i < thl && ihl + i < len; i++) if (rng.chance(0.3)) buf[l4 + i] = rng.pick(INTERESTING_8)
        }
        break
      case 10: // UDP length
        if (proto === UDP && ihl + 6 <= len) buf.writeUInt16BE(rng.pick(INTERESTING_16), l4 + 4)
        break
      case 11: { // truncate (the header may keep its length)
        len = rng.int(len + 1)
        break
      }
      case 12: { // grow with random bytes
        const add = Math.min(room - len, 1 + rng.int(64))
        rng.fill(buf, off + len, off + len + add)
        len += add
        break
      }
      case 13: // IP options: IHL above 5 with what the header then covers
        if (len >= 24) {
          const words = 6 + rng.int(10)
          buf[off] = 0x40 | words
          for (let i = 20; i < Math.min(words * 4, len); i++) buf[off + i] = rng.pick([0, 1, 7, 68, 131, 137, rng.int(256)])
        }
        break
      case 14: // a random byte anywhere
        if (len > 0) buf[off + rng.int(len)] = rng.int(256)
        break
      default: // TCP sequence and urgent pointer
        if (proto === TCP && ihl + 20 <= len) {
          buf.writeUInt32BE(rng.u32(), l4 + 4)
          buf.writeUInt16BE(rng.int(65536), l4 + 18)
        }
    }
  }
  if (rng.chance(0.5) && len >= 20 && (buf[off] & 15) >= 5 && (buf[off] & 15) * 4 <= len) {
    if (rng.chance(0.7)) fixL4Checksum(buf, off, len)
    fixIpChecksum(buf, off)
  }
  return len
}

/**
 * Raw damage to any bytes (a carrier payload after encapsulation): bit flips, interesting
 * values at the front (headers live there), truncation, extension. Returns the new length.
 */
export function mutateBytes(buf: Buffer, off: number, len: number, room: number, rng: Rng): number {
  const rounds = 1 + rng.int(4)
  for (let r = 0; r < rounds; r++) {
    switch (rng.int(8)) {
      case 0: if (len > 0) { const i = off + rng.int(len); buf[i] ^= 1 << rng.int(8) } break
      case 1: if (len > 0) buf[off + rng.int(Math.min(len, 32))] = rng.pick(INTERESTING_8); break
      case 2: if (len >= 2) buf.writeUInt16BE(rng.pick(INTERESTING_16), off + (rng.int(Math.min(len, 32) - 1) & ~1)); break
      case 3: len = rng.int(len + 1); break
      case 4: len = Math.min(len, rng.pick([0, 1, 2, 4, 7, 8, 12, 15, 16, 20, 24, 28, 31, 32, 36, 40, 48])); break
      case 5: { const add = Math.min(room - len, 1 + rng.int(32)); rng.fill(buf, off + len, off + len + add); len += add; break }
      case 6: if (len >= 4) buf.writeUInt32BE(rng.u32(), off + (rng.int(Math.min(len, 32) - 3) & ~3)); break
      default: if (len > 0) { const i = rng.int(len); const n = Math.min(len - i, 1 + rng.int(16)); rng.fill(buf, off + i, off + i + n) }
    }
  }
  return len
}
