/**
 * How `agent fleet ...` reaches a fleet's etcd: a config file (a node config with a `fleet:`
 * section, or a small file holding just that section's fields) and/or flags, flags winning.
 * Relative paths are relative to the file they are written in (flags: the working directory).
 */
import {readFileSync} from 'node:fs'
import {dirname, resolve} from 'node:path'
import {parse} from 'yaml'
import type {EtcdAccess} from './connect.js'
import {checkPrefix} from './layout.js'

export const DEFAULT_FLEET_PREFIX = '/agent/fleet'

export interface FleetAccess extends EtcdAccess {
  prefix: string
}

/** What the flags give: endpoints comma-separated; any may be missing. */
export interface FleetAccessOptions {
  config?: string
  endpoints?: string
  ca?: string
  cert?: string
  key?: string
  prefix?: string
}

export class FleetAccessError extends Error {}

const FIELDS = ['endpoints', 'ca', 'cert', 'key', 'prefix'] as const

/** The fleet fields of a config file: its `fleet:` section if it has one, else the document itself. */
export function readAccessFile(file: string): Partial<FleetAccess> {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (e) {
    throw new FleetAccessError(`cannot read ${file}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`)
  }
  let doc: unknown
  try {
    doc = parse(text)
  } catch (e) {
    throw new FleetAccessError(`${file}: not valid YAML: ${(e as Error).message.split('\n')[0]}`)
  }
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) throw new FleetAccessError(`${file}: expected a mapping (a node config with a fleet: section, or {endpoints, ca, cert, key, prefix})`)
  const top = doc as Record<string, unknown>
  const where = 'fleet' in top ? 'fleet.' : ''
  const section = 'fleet' in top ? top.fleet : top
  if (section === null || typeof section !== 'object' || Array.isArray(section)) throw new FleetAccessError(`${file}: fleet: must be a mapping of endpoints, ca, cert, key, prefix`)
  const s = section as Record<string, unknown>
  if (where === '' && !FIELDS.some((f) => f in s)) throw new FleetAccessError(`${file}: has no fleet: section and none of ${FIELDS.join(', ')}`)
  const dir = dirname(resolve(file))
  const out: Partial<FleetAccess> = {}
  if (s.endpoints !== undefined) {
    const list = typeof s.endpoints === 'string' ? s.endpoints.split(',') : s.endpoints
    if (!Array.isArray(list) || !list.every((e) => typeof e === 'string')) throw new FleetAccessError(`${file}: ${where}endpoints must be a list of https://host:port URLs`)
    out.endpoints = list.map((e) => e.trim()).filter(Boolean)
  }
  for (const f of ['ca', 'cert', 'key'] as const) {
    if (s[f] === undefined) continue
    if (typeof s[f] !== 'string' || s[f] === '') throw new FleetAccessError(`${file}: ${where}${f} must be a file path`)
    out[f] = resolve(dir, s[f])
  }
  if (s.prefix !== undefined) {
    if (typeof s.prefix !== 'string') throw new FleetAccessError(`${file}: ${where}prefix must be a key path such as /agent/fleet`)
    out.prefix = s.prefix
  }
  return out
}

/** The access to use, flags over file, or an error naming every missing piece and how to give it. */
export function resolveAccess(opts: FleetAccessOptions, cwd: string = process.cwd()): FleetAccess {
  const file = opts.config !== undefined ? readAccessFile(resolve(cwd, opts.config)) : {}
  const merged: Partial<FleetAccess> = {...file}
  if (opts.endpoints !== undefined) merged.endpoints = opts.endpoints.split(',').map((e) => e.trim()).filter(Boolean)
  for (const f of ['ca', 'cert', 'key'] as const) if (opts[f] !== undefined) merged[f] = resolve(cwd, opts[f])
  if (opts.prefix !== undefined) merged.prefix = opts.prefix
  const missing: string[] = []
  if (!merged.endpoints?.length) missing.push('endpoints (--endpoints)')
  for (const f of ['ca', 'cert', 'key'] as const) if (!merged[f]) missing.push(`${f} (--${f})`)
  if (missing.length) {
    throw new FleetAccessError(`how to reach the fleet's etcd is incomplete: missing ${missing.join(', ')}; give them as flags or in --config FILE (a node config's fleet: section or a file with endpoints, ca, cert, key, prefix)`)
  }
  for (const e of merged.endpoints!) if (!/^https:\/\/[^/\s]+:\d{1,5}$/.test(e)) throw new FleetAccessError(`invalid etcd endpoint ${JSON.stringify(e)}: expected https://host:port`)
  const prefix = merged.prefix ?? DEFAULT_FLEET_PREFIX
  try {
    checkPrefix(prefix)
  } catch (e) {
    throw new FleetAccessError((e as Error).message)
  }
  return {endpoints: merged.endpoints!, ca: merged.ca!, cert: merged.cert!, key: merged.key!, prefix}
}
