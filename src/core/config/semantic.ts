/**
 * Checks the schema cannot express: relations between fields (addresses inside the subnet,
 * unique names and addresses, pki completeness). Runs only on schema-valid configs, so it may
 * trust types and string syntax.
 */
import {
  broadcastAddress,
  canonicalCidr,
  cidrContains,
  firstHost,
  formatCidr,
  formatIpv4,
  type Ipv4Cidr,
  isIpv4,
  isNetworkAddress,
  networkAddress,
  parseCidr,
  parseIpv4,
} from '../net/ipv4.js'
import {clientConfigSchema} from './schema.js'
import {listenProblem} from '../metrics/settings.js'
import type {FieldPath} from './source.js'
import type {ClientConfig, NodeConfig} from './types.js'

export interface SemanticIssue {
  path: FieldPath
  message: string
  /** Point at the key rather than its value (the value is a whole block). */
  atKey?: boolean
}

export const SUBNET_MIN_PREFIX = 8
export const SUBNET_MAX_PREFIX = 30

/** Parses a CIDR the schema already accepted. */
function cidrOf(text: string): Ipv4Cidr {
  const cidr = parseCidr(text)
  if (!cidr) throw new Error(`schema let through a bad CIDR: ${text}`)
  return cidr
}

function addressOf(text: string): number {
  const address = parseIpv4(text)
  if (address === undefined) throw new Error(`schema let through a bad IPv4 address: ${text}`)
  return address
}

function notNetworkMessage(text: string, cidr: Ipv4Cidr): string {
  return `${JSON.stringify(text)} is not a network address (did you mean ${formatCidr(canonicalCidr(cidr))}?)`
}

/** Why `address` cannot be a host of `subnet`, or undefined when it can. */
function hostProblem(address: number, subnet: Ipv4Cidr): string | undefined {
  const net = formatCidr(subnet)
  if (!cidrContains(subnet, address)) return `${formatIpv4(address)} is outside the subnet ${net}`
  if (address === networkAddress(subnet)) return `${formatIpv4(address)} is the network address of ${net}, not a host`
  if (address === broadcastAddress(subnet)) return `${formatIpv4(address)} is the broadcast address of ${net}, not a host`
  return undefined
}

function pkiIssues(pki: NodeConfig['pki']): SemanticIssue[] {
  const parts = (['ca', 'cert', 'key'] as const).filter((k) => pki[k] !== undefined)
  if (pki.bundle !== undefined && parts.length > 0) {
    return [{path: ['pki', parts[0]], atKey: true, message: 'cannot be combined with bundle: give either bundle, or ca, cert and key'}]
  }
  if (pki.bundle === undefined && parts.length < 3) {
    if (parts.length === 0) return [{path: ['pki'], atKey: true, message: 'must give either bundle, or ca, cert and key'}]
    const missing = (['ca', 'cert', 'key'] as const).filter((k) => pki[k] === undefined)
    const message = `is missing ${missing.join(' and ')}: ca, cert and key go together (or give bundle alone)`
    return [{path: ['pki'], atKey: true, message}]
  }
  return []
}

function nodeIssues(config: NodeConfig): SemanticIssue[] {
  const issues: SemanticIssue[] = []
  const add = (path: FieldPath, message: string, atKey = false) => issues.push({path, message, atKey})

  const limits = config.listen?.limits
  if (limits?.perSource !== undefined && limits.perSource > (limits.pending ?? 2048)) {
    add(['listen', 'limits', 'perSource'], `${limits.perSource} must not exceed pending (${limits.pending ?? 2048}): one source could fill the port`)
  }

  const {tunnel} = config
  const written = cidrOf(tunnel.subnet)
  if (written.prefix < SUBNET_MIN_PREFIX || written.prefix > SUBNET_MAX_PREFIX) {
    add(['tunnel', 'subnet'], `prefix /${written.prefix} is out of range: use /${SUBNET_MIN_PREFIX} to /${SUBNET_MAX_PREFIX}`)
  } else if (!isNetworkAddress(written)) {
    add(['tunnel', 'subnet'], notNetworkMessage(tunnel.subnet, written))
  }
  // Without a usable subnet every address check below would only repeat the same problem.
  if (written.prefix < SUBNET_MIN_PREFIX || written.prefix > SUBNET_MAX_PREFIX) return [...issues, ...pkiIssues(config.pki)]
  const subnet = canonicalCidr(written)

  let nodeAddress = firstHost(subnet)
  if (tunnel.address !== undefined) {
    nodeAddress = addressOf(tunnel.address)
    const problem = hostProblem(nodeAddress, subnet)
    if (problem) add(['tunnel', 'address'], problem)
  }

  if (tunnel.pool) {
    const start = addressOf(tunnel.pool.start)
    const end = addressOf(tunnel.pool.end)
    const startProblem = hostProblem(start, subnet)
    const endProblem = hostProblem(end, subnet)
    if (startProblem) add(['tunnel', 'pool', 'start'], startProblem)
    if (endProblem) add(['tunnel', 'pool', 'end'], endProblem)
    if (start > end) add(['tunnel', 'pool'], `start ${tunnel.pool.start} is after end ${tunnel.pool.end}`, true)
  }

  const names = new Map<string, number>()
  const addresses = new Map<number, number>()
  const listed = config.clients === undefined || config.clients === 'any' ? [] : config.clients
  for (const [i, client] of listed.entries()) {
    if (client === 'any') continue
    const first = names.get(client.name)
    if (first !== undefined) add(['clients', i, 'name'], `duplicate client name ${JSON.stringify(client.name)} (also clients[${first}])`)
    else names.set(client.name, i)

    if (client.address === undefined) continue
    const address = addressOf(client.address)
    const problem = hostProblem(address, subnet)
    const taken = addresses.get(address)
    if (problem) add(['clients', i, 'address'], problem)
    else if (address === nodeAddress) add(['clients', i, 'address'], `${client.address} is the node's own tunnel address`)
    else if (taken !== undefined) {
      const owner = (listed[taken] as {name: string}).name
      add(['clients', i, 'address'], `${client.address} is already the address of clients[${taken}] (${owner})`)
    }
    if (taken === undefined) addresses.set(address, i)
  }

  for (const [i, network] of (config.egress.deny ?? []).entries()) {
    const cidr = cidrOf(network)
    if (!isNetworkAddress(cidr)) add(['egress', 'deny', i], notNetworkMessage(network, cidr))
  }

  return [...issues, ...pkiIssues(config.pki)]
}

function clientIssues(config: ClientConfig): SemanticIssue[] {
  const issues: SemanticIssue[] = []

  if (config.node === undefined && config.nodes === undefined) issues.push({path: ['node'], message: 'is required: give `node` (one node) or `nodes` (several)'})
  if (config.node !== undefined && config.nodes !== undefined) issues.push({path: ['nodes'], message: 'give `node` or `nodes`, not both'})
  const nodes: [(string | number)[], {host: string; port?: number}][] =
    config.nodes !== undefined ? config.nodes.map((n, i) => [['nodes', i], n]) : config.node !== undefined ? [[['node'], config.node]] : []
  const seenNodes = new Map<string, number>()
  for (const [path, n] of nodes) {
    // The host pattern accepts any DNS name, and "300.1.1.1" is one; nobody means that.
    if (/^[0-9.]+$/.test(n.host) && !isIpv4(n.host.replace(/\.$/, ''))) {
      issues.push({path: [...path, 'host'], message: `${JSON.stringify(n.host)} is not a valid IPv4 address`})
    }
    const at = `${n.host.toLowerCase()}:${n.port ?? 443}`
    const first = seenNodes.get(at)
    if (first !== undefined) issues.push({path, message: `${at} duplicates nodes[${first}]`})
    else seenNodes.set(at, path[1] as number)
  }

  const seen = new Map<string, number>()
  for (const [i, route] of config.routes.entries()) {
    const cidr = cidrOf(route)
    if (!isNetworkAddress(cidr)) issues.push({path: ['routes', i], message: notNetworkMessage(route, cidr)})
    const canonical = formatCidr(canonicalCidr(cidr))
    const first = seen.get(canonical)
    if (first !== undefined) issues.push({path: ['routes', i], message: `${route} duplicates routes[${first}]`})
    else seen.set(canonical, i)
  }

  const defaults = clientConfigSchema.properties.reconnect.properties
  const min = config.reconnect?.minSeconds ?? defaults.minSeconds.default
  const max = config.reconnect?.maxSeconds ?? defaults.maxSeconds.default
  if (min > max) {
    const path = config.reconnect?.minSeconds !== undefined ? ['reconnect', 'minSeconds'] : ['reconnect', 'maxSeconds']
    issues.push({path, message: `minSeconds (${min}) must not exceed maxSeconds (${max})`})
  }

  return [...issues, ...pkiIssues(config.pki)]
}

/** metrics.listen: the schema checks its shape, not the port's range. */
function metricsIssues(config: NodeConfig | ClientConfig): SemanticIssue[] {
  const listen = config.metrics?.listen
  const problem = listen === undefined ? undefined : listenProblem(listen)
  return problem === undefined ? [] : [{path: ['metrics', 'listen'], message: problem}]
}

export function semanticIssues(config: NodeConfig | ClientConfig): SemanticIssue[] {
  return [...(config.role === 'node' ? nodeIssues(config) : clientIssues(config)), ...metricsIssues(config)]
}
