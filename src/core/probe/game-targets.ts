/**
 * Which destinations a node may measure for its clients: only where it would forward their
 * traffic, so that a client cannot turn the node's game prober into a scanner of what its
 * firewall keeps clients from (egress.deny), of the node itself, or of the tunnel's clients.
 */
import {cidrContains, ipv4ToNumber, parseCidr} from '../net/ipv4.js'

export interface GameTargetRules {
  /** egress.deny: networks no client may reach through the node. */
  deny: readonly string[]
  /** The tunnel subnet: the node's clients, not game servers. */
  subnet: string
  /** The node's own addresses (0.0.0.0 ignored). */
  nodeAddresses: readonly string[]
}

const ALWAYS: readonly [string, string][] = [
  ['0.0.0.0/8', 'not a destination'],
  ['127.0.0.0/8', 'loopback'],
  ['224.0.0.0/3', 'not unicast'],
]

/** Why `dest` (a dotted quad) is not measured, or null when it may be. */
export function gameTargetRefusal(dest: string, rules: GameTargetRules): string | null {
  const ip = ipv4ToNumber(dest)
  for (const [net, why] of ALWAYS) if (cidrContains(parseCidr(net)!, ip)) return why
  for (const d of rules.deny) {
    const cidr = parseCidr(d)
    if (cidr !== undefined && cidrContains(cidr, ip)) return `denied by egress.deny (${d})`
  }
  const subnet = parseCidr(rules.subnet)
  if (subnet !== undefined && cidrContains(subnet, ip)) return 'inside the tunnel subnet'
  if (rules.nodeAddresses.includes(dest)) return "the node's own address"
  return null
}
