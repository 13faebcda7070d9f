/**
 * The probe packet: how a client measures its path to a node it may ride (failover, ranking),
 * and how the node tells it what it measured to the client's game servers.
 *
 * One fixed size for request and reply, so a node never answers with more than it was sent
 * (no amplification for a forged source), over UDP to the node's carrier port or as the first
 * bytes of a TCP connection to its control port. Both ends hold the ticket's key (exported
 * from the TLS session the ticket was granted on), so a stranger can neither ask nor answer:
 *
 *   0      4      5     6       8            16           24                      88       104
 *   +------+------+-----+-------+------------+------------+-----------------------+--------+
 *   | AGPB | kind | ver | count |  ticket id |  counter   | 8 game entries (8 B)  |  MAC   |
 *   +------+------+-----+-------+------------+------------+-----------------------+--------+
 *
 *   game entry: rtt in microseconds (u32, 0xffffffff: none), loss in 1/10000 (u16), state (u8), 0
 *   MAC: HMAC-SHA256(key, bytes 0..88), first 16 bytes
 *
 * The counter only grows per ticket: a request replayed from elsewhere is not answered, and
 * the reply echoes it, so the client knows which request it answers.
 */
import {createHmac, timingSafeEqual} from 'node:crypto'

export const PROBE_MAGIC = 0x41475042 // "AGPB"
export const PROBE_VERSION = 1
export const PROBE_BYTES = 104
export const PROBE_TICKET_BYTES = 8
/** Game servers one probe reports, and so the most a client asks a node to measure. */
export const PROBE_MAX_GAME = 8
/** The TLS exporter label both ends give for a probe ticket's key. */
export const PROBE_KEY_LABEL = 'EXPORTER-agent-probe'

export const ProbeKind = {Request: 1, Reply: 2} as const
export type ProbeKind = (typeof ProbeKind)[keyof typeof ProbeKind]

const MAC_AT = 88
const ENTRIES_AT = 24
const NO_RTT = 0xffffffff

export type GameState = 'measuring' | 'ok' | 'unreachable'
const STATES: readonly GameState[] = ['measuring', 'ok', 'unreachable']

/** What a node measured to one game server, as a probe reply carries it. */
export interface GameEntry {
  rttMs: number | null
  loss: number
  state: GameState
}

export interface ProbePacket {
  kind: ProbeKind
  ticket: Buffer
  counter: bigint
  game: GameEntry[]
}

/** Cheap test before any crypto: could this datagram or first segment be a probe? */
export function looksLikeProbe(buf: Uint8Array, offset: number, length: number): boolean {
  return length === PROBE_BYTES && buf[offset] === 0x41 && buf[offset + 1] === 0x47 && buf[offset + 2] === 0x50 && buf[offset + 3] === 0x42
}

/** The ticket id of a packet that looksLikeProbe, as the node's map key. */
export function probeTicketOf(buf: Buffer, offset: number): string {
  return buf.toString('hex', offset + 8, offset + 8 + PROBE_TICKET_BYTES)
}

export function writeProbe(buf: Buffer, offset: number, p: ProbePacket, key: Buffer): void {
  if (p.ticket.length !== PROBE_TICKET_BYTES) throw new Error(`a probe ticket is ${PROBE_TICKET_BYTES} bytes`)
  if (p.game.length > PROBE_MAX_GAME) throw new Error(`a probe carries at most ${PROBE_MAX_GAME} game entries`)
  buf.fill(0, offset, offset + PROBE_BYTES)
  buf.writeUInt32BE(PROBE_MAGIC, offset)
  buf[offset + 4] = p.kind
  buf[offset + 5] = PROBE_VERSION
  buf[offset + 6] = p.game.length
  p.ticket.copy(buf, offset + 8)
  buf.writeBigUInt64BE(p.counter, offset + 16)
  for (const [i, g] of p.game.entries()) {
    const at = offset + ENTRIES_AT + i * 8
    const us = g.rttMs === null ? NO_RTT : Math.min(NO_RTT - 1, Math.max(0, Math.round(g.rttMs * 1000)))
    buf.writeUInt32BE(us, at)
    buf.writeUInt16BE(Math.min(10_000, Math.max(0, Math.round(g.loss * 10_000))), at + 4)
    buf[at + 6] = STATES.indexOf(g.state)
  }
  mac(key, buf, offset).copy(buf, offset + MAC_AT)
}

export function makeProbe(p: ProbePacket, key: Buffer): Buffer {
  const buf = Buffer.alloc(PROBE_BYTES)
  writeProbe(buf, 0, p, key)
  return buf
}

/**
 * A probe of `kind` whose MAC verifies with `key` and whose counter is above `lastCounter`;
 * null when it proves nothing. The caller has checked looksLikeProbe.
 */
export function readProbe(buf: Buffer, offset: number, key: Buffer, kind: ProbeKind, lastCounter: bigint): ProbePacket | null {
  if (buf[offset + 4] !== kind || buf[offset + 5] !== PROBE_VERSION) return null
  if (!timingSafeEqual(mac(key, buf, offset), buf.subarray(offset + MAC_AT, offset + PROBE_BYTES))) return null
  const counter = buf.readBigUInt64BE(offset + 16)
  if (counter <= lastCounter) return null
  const count = buf[offset + 6]
  if (count > PROBE_MAX_GAME) return null
  const game: GameEntry[] = []
  for (let i = 0; i < count; i++) {
    const at = offset + ENTRIES_AT + i * 8
    const us = buf.readUInt32BE(at)
    const state = STATES[buf[at + 6]]
    if (state === undefined) return null
    game.push({rttMs: us === NO_RTT ? null : us / 1000, loss: buf.readUInt16BE(at + 4) / 10_000, state})
  }
  return {kind, ticket: Buffer.from(buf.subarray(offset + 8, offset + 16)), counter, game}
}

function mac(key: Buffer, buf: Buffer, offset: number): Buffer {
  return createHmac('sha256', key).update(buf.subarray(offset, offset + MAC_AT)).digest().subarray(0, 16)
}

/** This end's key for a ticket granted on `exporter`'s TLS session. */
export function probeKey(exporter: {exportKeyingMaterial(length: number, label: string, context: Buffer): Buffer}): Buffer {
  return exporter.exportKeyingMaterial(32, PROBE_KEY_LABEL, Buffer.alloc(0))
}
