/**
 * From a validated config to what the agent runs with: schema defaults filled in, derived
 * values computed (node tunnel address and pool, client node name), paths made absolute.
 */
import {normalizeFingerprint} from '../pki/pem.js'
import {dirname, resolve as resolvePath} from 'node:path'
import {canonicalCidr, firstHost, formatIpv4, lastHost, parseCidr} from '../net/ipv4.js'
import {clientConfigSchema, nodeConfigSchema} from './schema.js'
import type {
  AgentConfig,
  ClientsField,
  ListedClient,
  ClientConfig,
  DefaultedClientConfig,
  DefaultedNodeConfig,
  NodeConfig,
  ResolvedClientConfig,
  ResolvedConfig,
  ResolvedNodeConfig,
  ResolvedPki,
} from './types.js'

interface SchemaNode {
  type?: string
  default?: unknown
  properties?: Record<string, SchemaNode>
  items?: SchemaNode
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value)
}

/**
 * Fills in `default`s from the schema, recursing into objects and list items, so nested
 * defaults apply under a defaulted `{}` too. The schema stays the one place defaults live.
 */
export function applyDefaults(schema: SchemaNode, value: unknown): unknown {
  const v = value === undefined && 'default' in schema ? structuredClone(schema.default) : value
  if (schema.properties && isRecord(v)) {
    const out: Record<string, unknown> = {...v}
    for (const [key, sub] of Object.entries(schema.properties)) {
      const filled = applyDefaults(sub, out[key])
      if (filled !== undefined) out[key] = filled
    }
    return out
  }
  if (schema.items && Array.isArray(v)) return v.map((item) => applyDefaults(schema.items as SchemaNode, item))
  return v
}


/** The clients a node config lists by name (without the "any" entries). */
export function listedClients(clients: ClientsField | undefined): ListedClient[] {
  if (clients === undefined || clients === 'any') return []
  return clients.filter((c): c is ListedClient => c !== 'any')
}

function resolvePki(pki: NodeConfig['pki'] | ClientConfig['pki'], dir: string): ResolvedPki {
  if (pki.bundle !== undefined) return {kind: 'bundle', bundle: resolvePath(dir, pki.bundle)}
  // parseConfig guarantees ca, cert and key when there is no bundle.
  const [ca, cert, key] = [pki.ca, pki.cert, pki.key].map((p) => resolvePath(dir, p ?? ''))
  return {kind: 'files', ca, cert, key}
}

function resolveNode(config: NodeConfig, file: string, dir: string): ResolvedNodeConfig {
  const {$schema: _schema, tunnel, pki, clients, fleet, ...rest} = applyDefaults(nodeConfigSchema, config) as DefaultedNodeConfig
  const written = parseCidr(tunnel.subnet)
  if (!written) throw new Error(`unvalidated config: bad subnet ${tunnel.subnet}`)
  const subnet = canonicalCidr(written)
  return {
    ...rest,
    file,
    dir,
    tunnel: {
      ...tunnel,
      address: tunnel.address ?? formatIpv4(firstHost(subnet)),
      pool: tunnel.pool ?? {start: formatIpv4(firstHost(subnet)), end: formatIpv4(lastHost(subnet))},
    },
    pki: {...resolvePki(pki, dir), ...(pki.crl === undefined ? {} : {crl: resolvePath(dir, pki.crl)})},
    clients: listedClients(clients).map((c) => ({
      ...c,
      ...(c.fingerprint === undefined ? {} : {fingerprint: normalizeFingerprint(c.fingerprint)}),
    })),
    admitAny: clients === 'any' || clients.includes('any'),
    ...(fleet === undefined
      ? {}
      : {
          fleet: {
            ...fleet,
            prefix: fleet.prefix ?? '/agent/fleet',
            unreachable: fleet.unreachable ?? 'start',
            ca: resolvePath(dir, fleet.ca),
            cert: resolvePath(dir, fleet.cert),
            key: resolvePath(dir, fleet.key),
            advertise: fleet.advertise ?? (rest.listen.address === '0.0.0.0' ? undefined : rest.listen.address),
          },
        }),
  }
}

function resolveClient(config: ClientConfig, file: string, dir: string): ResolvedClientConfig {
  const {$schema: _schema, node, nodes, pki, ...rest} = applyDefaults(clientConfigSchema, config) as DefaultedClientConfig
  // `node` is a list of one: the semantic check let exactly one of the two through.
  const listed = nodes ?? [{...node!, preference: 0}]
  return {
    ...rest,
    file,
    dir,
    nodes: listed.map((n) => ({host: n.host, port: n.port ?? 443, name: n.name ?? n.host, preference: n.preference ?? 0})),
    pki: resolvePki(pki, dir),
  }
}

/**
 * Applies defaults and resolves paths of a config that parseConfig accepted; `file` is where
 * it came from (relative paths in it are relative to that file's directory).
 */
export function resolveConfig(config: AgentConfig, file: string): ResolvedConfig {
  const abs = resolvePath(file)
  const dir = dirname(abs)
  return config.role === 'node' ? resolveNode(config, abs, dir) : resolveClient(config, abs, dir)
}
