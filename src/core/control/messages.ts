/**
 * The control protocol, in JSON inside Control frames. The connection is mutually
 * authenticated TLS 1.3 before any of this is said, so these messages are about what the
 * client gets, not who it is.
 *
 *   client -> node   hello    {transport, records?}
 *   node   -> client welcome  {address, prefix, gateway, mtu, keepalive, carrier, params, records?, fleet?}
 *                    refused  {reason}               (then the node closes)
 *   either way       transport {body}                (after the welcome: a transport's own message)
 */
import type {CarrierSpec, SessionParams} from '../transport/contract.js'

export const PROTOCOL_VERSION = 1

export interface Hello {
  type: 'hello'
  version: number
  transport: string
  /** The client can move a stream session to native records (native-records.ts). */
  records?: string
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

export type ControlMessage = Hello | Welcome | Refused | TransportMessage

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
      return m as unknown as Welcome
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
