/**
 * What a fleet keeps in etcd, and how: one key prefix per fleet, a layout version, and the
 * values as small JSON documents. Everything that reads or writes the fleet's keys goes
 * through here, so the layout lives in one place (docs/fleet.md describes it for operators).
 *
 *   <prefix>/version                  "1": the layout; an agent refuses a layout it does not know
 *   <prefix>/clients/<name>           {"address"?: "10.8.0.20", "fingerprint"?: "sha256:AB:..."}
 *   <prefix>/revoked/names/<name>     {"at": ISO time, "by"?: who}: no certificate of this name is admitted
 *   <prefix>/revoked/serials/<serial> {"at": ISO time, "name"?: its holder}: this certificate is not
 *   <prefix>/nodes/<name>             the node's registry entry (NodeRecord), under its lease
 *
 * Client names follow the config's client names; serials are lower-case hex without leading
 * zeros, as the roster compares them (pki/crl.ts serialKey).
 */
import type {RosterEntry} from '../node/roster.js'
import {serialKey} from '../pki/crl.js'
import {parseIpv4} from '../net/ipv4.js'

export const LAYOUT_VERSION = '1'

/** Where a fleet's keys live. Prefix: absolute, no trailing slash, e.g. "/agent/fleet1". */
export function fleetKeys(prefix: string) {
  checkPrefix(prefix)
  return {
    prefix,
    version: `${prefix}/version`,
    clients: `${prefix}/clients/`,
    client: (name: string) => `${prefix}/clients/${checkName(name)}`,
    revokedNames: `${prefix}/revoked/names/`,
    revokedName: (name: string) => `${prefix}/revoked/names/${checkName(name)}`,
    revokedSerials: `${prefix}/revoked/serials/`,
    revokedSerial: (serial: string) => `${prefix}/revoked/serials/${checkSerial(serial)}`,
    /** Everything the roster is made of: clients and revocations. */
    roster: [`${prefix}/clients/`, `${prefix}/revoked/`] as const,
    nodes: `${prefix}/nodes/`,
    node: (name: string) => `${prefix}/nodes/${checkName(name)}`,
  }
}
export type FleetKeys = ReturnType<typeof fleetKeys>

const PREFIX = /^(\/[A-Za-z0-9_.-]+)+$/
/** As the config's client and instance names. */
const NAME = /^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$/
const SERIAL = /^[0-9a-f]{1,40}$/

export function checkPrefix(prefix: string): string {
  if (!PREFIX.test(prefix)) throw new Error(`invalid fleet prefix ${JSON.stringify(prefix)}: expected an absolute key path such as /agent/fleet1, no trailing slash`)
  return prefix
}

export function checkName(name: string): string {
  if (!NAME.test(name)) throw new Error(`invalid name ${JSON.stringify(name)}: expected letters, digits and _ . @ - (at most 64, starting with a letter or digit)`)
  return name
}

export function checkSerial(serial: string): string {
  if (!SERIAL.test(serial)) throw new Error(`invalid serial ${JSON.stringify(serial)}: expected lower-case hex, as agent pki prints it`)
  return serial
}

/**
 * A serial as the revoked/serials/ keys spell it, from any form an operator types (colons,
 * "serial=", upper case, leading zeros): lower-case hex without leading zeros ("0" for zero).
 * serialKey() of pki/crl.ts turns it back into the roster's form.
 */
export function normalizeSerial(text: string): string {
  const hex = text.trim().replace(/^serial=/i, '').replace(/^0x/i, '').replace(/[:\s]/g, '').toLowerCase()
  if (!/^[0-9a-f]+$/.test(hex)) throw new Error(`invalid serial ${JSON.stringify(text)}: expected hexadecimal, as \`openssl x509 -noout -serial\` or agent pki prints it`)
  return checkSerial(hex.replace(/^0+/, '') || '0')
}

/** A client's value: what the roster needs beyond its name. */
export interface ClientValue {
  address?: string
  fingerprint?: string
}

export interface RevocationValue {
  at: string
  name?: string
  by?: string
}

/** What the fleet's roster holds at one revision. */
export interface FleetRoster {
  clients: Map<string, RosterEntry>
  revokedNames: Set<string>
  revokedSerials: Set<string>
}

export function emptyFleetRoster(): FleetRoster {
  return {clients: new Map(), revokedNames: new Set(), revokedSerials: new Set()}
}

/**
 * Applies one key's value (null: deleted) to `roster`; returns false for a key or value it does
 * not understand (ignored, so a newer agent's extra keys do not stop an older one).
 */
export function applyRosterKey(keys: FleetKeys, roster: FleetRoster, key: string, value: string | null): boolean {
  const tail = (p: string) => (key.startsWith(p) ? key.slice(p.length) : null)
  let name: string | null
  if ((name = tail(keys.clients)) !== null) {
    if (!NAME.test(name)) return false
    if (value === null) return roster.clients.delete(name), true
    const v = parseClient(value)
    if (v === null) return false
    roster.clients.set(name, {name, ...v})
    return true
  }
  if ((name = tail(keys.revokedNames)) !== null) {
    if (!NAME.test(name)) return false
    if (value === null) roster.revokedNames.delete(name)
    else roster.revokedNames.add(name)
    return true
  }
  if ((name = tail(keys.revokedSerials)) !== null) {
    if (!SERIAL.test(name)) return false
    // Stored lower-case without leading zeros; the roster compares serials as serialKey spells them.
    const serial = serialKey(name)
    if (value === null) roster.revokedSerials.delete(serial)
    else roster.revokedSerials.add(serial)
    return true
  }
  return false
}

/** A JSON object's fields, or null when `text` is not one. */
function jsonObject(text: string): Record<string, unknown> | null {
  let v: unknown
  try {
    v = JSON.parse(text)
  } catch {
    return null
  }
  return v === null || typeof v !== 'object' || Array.isArray(v) ? null : (v as Record<string, unknown>)
}

/** A client's JSON value, or null if it is not one (a bad address or fingerprint is not admitted silently). */
export function parseClient(text: string): ClientValue | null {
  const o = jsonObject(text)
  if (o === null) return null
  const out: ClientValue = {}
  if (o.address !== undefined) {
    if (typeof o.address !== 'string' || parseIpv4(o.address) === undefined) return null
    out.address = o.address
  }
  if (o.fingerprint !== undefined) {
    if (typeof o.fingerprint !== 'string' || !/^sha256:([0-9A-F]{2}:){31}[0-9A-F]{2}$/.test(o.fingerprint)) return null
    out.fingerprint = o.fingerprint
  }
  return out
}

/** A node's registry entry: what `agent fleet nodes` and the node's clients learn of it. */
export interface NodeRecord {
  name: string
  version: string
  /** The transport it serves, and where clients reach it: the control endpoint and the carrier's. */
  transport: string
  endpoints: {control: string; carrier?: string}
  sessions: number
  /** Bytes per second over the last heartbeat interval, both directions. */
  throughput: {rxBytesPerSecond: number; txBytesPerSecond: number}
  health: 'ok' | 'degraded'
  /** Why degraded (etcd unreachable earlier, admission failing...). */
  problems?: string[]
  startedAt: string
  heartbeatAt: string
}

/** A NodeRecord, or null if `text` is not one (the fields the registry's readers use are checked). */
export function parseNodeRecord(text: string): NodeRecord | null {
  const o = jsonObject(text)
  if (o === null) return null
  const ep = o.endpoints as Record<string, unknown> | undefined
  const tp = o.throughput as Record<string, unknown> | undefined
  if (typeof o.name !== 'string' || typeof o.transport !== 'string' || typeof o.heartbeatAt !== 'string') return null
  if (!ep || typeof ep !== 'object' || typeof ep.control !== 'string') return null
  if (typeof o.sessions !== 'number' || !tp || typeof tp.rxBytesPerSecond !== 'number' || typeof tp.txBytesPerSecond !== 'number') return null
  if (o.health !== 'ok' && o.health !== 'degraded') return null
  return o as unknown as NodeRecord
}
