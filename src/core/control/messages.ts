/**
 * The control protocol, in JSON inside Control frames. The connection is mutually
 * authenticated TLS 1.3 before any of this is said, so these messages are about what the
 * client gets, not who it is.
 *
 *   client -> node   hello    {transport, records?, routes?, probe?}
 *   node   -> client welcome  {address, prefix, gateway, mtu, keepalive, carrier, params, records?, fleet?, probe?}
 *                    probing  {grant}                (to a probe-only hello; then the node closes)
 *                    refused  {reason}               (then the node closes)
 *   either way       transport {body}                (after the welcome: a transport's own message)
 *   client -> node   probe    {n}                    (after the welcome: a round trip to time)
 *   node   -> client probed   {n, game}              (its answer, with the game servers' RTT)
 */
import type {CarrierSpec, SessionParams} from '../transport/contract.js'
import type {ProbeGrant} from '../probe/probe-tickets.js'
import {PROBE_MAX_GAME} from '../probe/probe-packet.js'

export const PROTOCOL_VERSION = 1

export interface Hello {
  type: 'hello'
  version: number
  transport: string
  /** The client can move a stream session to native records (native-records.ts). */
  records?: string
  /** The client's routes, for the node to measure the game servers among them (failover). */
  routes?: string[]
  /** Only a probe ticket is wanted (a node the client weighs), no session. */
  probe?: boolean
}

export interface Welcome {
  type: 'welcome'
  version: number
  transport: string
  /** The client's tunnel address. */
  address: string
  prefix: number
  /** The node's tunnel address. */
  gateway: string
  mtu: number
  /** Seconds between keepalives the node expects. */
  keepalive: number
  /** How the data travels: in this connection (stream) or to the node's udp port / IP protocol. */
  carrier: CarrierSpec
  params: SessionParams
  /** The node agrees to native records: nothing more comes through Node's TLS. */
  records?: string
  /** A fleet's node: the other nodes that serve this transport now, where a client may go instead. */
  fleet?: FleetPeer[]
  /** A ticket for probes to this node (probe-tickets.ts). */
  probe?: ProbeGrant
}

/** The answer to a probe-only hello. */
export interface Probing {
  type: 'probing'
  grant: ProbeGrant
}

/** A round trip over the session's own connection (stream carriers), and its answer. */
export interface Probe {
  type: 'probe'
  n: number
}

export interface GameReport {
  dest: string
  rttMs: number | null
  loss: number
  state: 'measuring' | 'ok' | 'unreachable'
}

export interface Probed {
  type: 'probed'
  n: number
  game: GameReport[]
}

/** Another node of the fleet, as a client needs it to connect there. */
export interface FleetPeer {
  name: string
  host: string
  port: number
}

export interface Refused {
  type: 'refused'
  reason: string
}

/** A transport's own message between the two ends of a session (a rekey...). */
export interface TransportMessage {
  type: 'transport'
  body: SessionParams
}

export type ControlMessage = Hello | Welcome | Refused | TransportMessage | Probing | Probe | Probed

export function encodeMessage(m: ControlMessage): Buffer {
  return Buffer.from(JSON.stringify(m), 'utf8')
}

/** Parse and shape-check a message; throws with what is wrong. */
export function decodeMessage(buf: Buffer, offset: number, length: number): ControlMessage {
  let v: unknown
  try {
    v = JSON.parse(buf.toString('utf8', offset, offset + length))
  } catch {
    throw new Error('control message is not valid JSON')
  }
  if (typeof v !== 'object' || v === null) throw new Error('control message is not an object')
  const m = v as Record<string, unknown>
  switch (m.type) {
    case 'hello':
      need(m, 'version', 'number')
      need(m, 'transport', 'string')
      optional(m, 'records', 'string')
      if (m.routes !== undefined) checkRoutes(m.routes)
      if (m.probe !== undefined && m.probe !== true) throw new Error('hello.probe must be true when given')
      return m as unknown as Hello
    case 'welcome':
      for (const k of ['version', 'prefix', 'mtu', 'keepalive'] as const) need(m, k, 'number')
      for (const k of ['transport', 'address', 'gateway'] as const) need(m, k, 'string')
      if (typeof m.params !== 'object' || m.params === null) throw new Error('welcome.params must be an object')
      if (typeof m.carrier !== 'object' || m.carrier === null || !['stream', 'udp', 'ip'].includes((m.carrier as {kind: string}).kind)) {
        throw new Error('welcome.carrier must be {kind: stream|udp|ip}')
      }
      optional(m, 'records', 'string')
      if (m.fleet !== undefined) checkFleet(m.fleet)
      if (m.probe !== undefined) checkGrant(m.probe, 'welcome.probe')
      return m as unknown as Welcome
    case 'probing':
      checkGrant(m.grant, 'probing.grant')
      return m as unknown as Probing
    case 'probe':
      if (!Number.isSafeInteger(m.n)) throw new Error('probe.n must be an integer')
      return m as unknown as Probe
    case 'probed':
      if (!Number.isSafeInteger(m.n)) throw new Error('probed.n must be an integer')
      checkGame(m.game)
      return m as unknown as Probed
    case 'refused':
      need(m, 'reason', 'string')
      return m as unknown as Refused
    case 'transport': {
      const body = m.body as Record<string, unknown> | null
      if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new Error('transport.body must be an object')
      for (const [k, v] of Object.entries(body)) {
        if (!['string', 'number', 'boolean'].includes(typeof v)) throw new Error(`transport.body.${k} must be a string, number or boolean`)
      }
      return m as unknown as TransportMessage
    }
    default:
      throw new Error(`unknown control message type ${JSON.stringify(m.type)}`)
  }
}

function need(m: Record<string, unknown>, key: string, type: 'string' | 'number'): void {
  if (typeof m[key] !== type) throw new Error(`${String(m.type)}.${key} must be a ${type}`)
}

function optional(m: Record<string, unknown>, key: string, type: 'string' | 'number'): void {
  if (m[key] !== undefined) need(m, key, type)
}

/** At most this many other nodes in a welcome: a client needs a few to fail over to, not the fleet. */
export const MAX_FLEET_PEERS = 64

function checkFleet(v: unknown): void {
  if (!Array.isArray(v) || v.length > MAX_FLEET_PEERS) throw new Error(`welcome.fleet must be a list of at most ${MAX_FLEET_PEERS} nodes`)
  for (const [i, p] of v.entries()) {
    const o = p as Record<string, unknown>
    if (typeof o !== 'object' || o === null || typeof o.name !== 'string' || typeof o.host !== 'string' || !Number.isInteger(o.port) || (o.port as number) < 1 || (o.port as number) > 65535) {
      throw new Error(`welcome.fleet[${i}] must be {name, host, port}`)
    }
  }
}

/** A hello's routes: what the node may measure; bounded so a hello stays small. */
export const MAX_HELLO_ROUTES = 64

function checkRoutes(v: unknown): void {
  if (!Array.isArray(v) || v.length > MAX_HELLO_ROUTES || !v.every((r) => typeof r === 'string' && r.length <= 18)) {
    throw new Error(`hello.routes must be a list of at most ${MAX_HELLO_ROUTES} IPv4 networks`)
  }
}

const isHex16 = (v: unknown) => typeof v === 'string' && /^[0-9a-f]{16}$/.test(v)
const isPort = (v: unknown) => Number.isInteger(v) && (v as number) >= 1 && (v as number) <= 65535

function checkGrant(v: unknown, what: string): void {
  const g = v as Record<string, unknown>
  if (typeof g !== 'object' || g === null || !isHex16(g.ticket) || typeof g.expires !== 'number' || !(g.expires > 0)) {
    throw new Error(`${what} must be {ticket, expires, udp?, game, refused}`)
  }
  if (g.udp !== undefined && !isPort(g.udp)) throw new Error(`${what}.udp must be a port`)
  if (!Array.isArray(g.game) || g.game.length > PROBE_MAX_GAME || !g.game.every((d) => typeof d === 'string')) {
    throw new Error(`${what}.game must be a list of at most ${PROBE_MAX_GAME} addresses`)
  }
  if (!Array.isArray(g.refused) || g.refused.length > MAX_HELLO_ROUTES) throw new Error(`${what}.refused must be a list`)
  for (const r of g.refused as Record<string, unknown>[]) {
    if (typeof r !== 'object' || r === null || typeof r.dest !== 'string' || typeof r.reason !== 'string') throw new Error(`${what}.refused entries must be {dest, reason}`)
  }
}

function checkGame(v: unknown): void {
  if (!Array.isArray(v) || v.length > PROBE_MAX_GAME) throw new Error(`probed.game must be a list of at most ${PROBE_MAX_GAME}`)
  for (const g of v as Record<string, unknown>[]) {
    const ok =
      typeof g === 'object' && g !== null && typeof g.dest === 'string' && (g.rttMs === null || typeof g.rttMs === 'number') && typeof g.loss === 'number' && ['measuring', 'ok', 'unreachable'].includes(g.state as string)
    if (!ok) throw new Error('probed.game entries must be {dest, rttMs, loss, state}')
  }
}
