/**
 * Which tunnel address each authorized client gets. Decided once, at start, from the config:
 * static addresses first, then pool addresses in the order clients are listed. So a client
 * gets the same address across reconnects and node restarts, whoever connects first, and the
 * FORWARD rules can name it before it ever connects.
 */
import {formatIpv4, ipv4ToNumber} from '../net/ipv4.js'

export interface AddressPlanInput {
  nodeAddress: number
  pool: {start: number; end: number}
  clients: readonly {name: string; address?: string}[]
}

export function planAddresses(input: AddressPlanInput): Map<string, string> {
  const plan = new Map<string, string>()
  const taken = new Set<number>([input.nodeAddress])
  for (const c of input.clients) {
    if (c.address === undefined) continue
    taken.add(ipv4ToNumber(c.address))
    plan.set(c.name, c.address)
  }
  let next = input.pool.start
  for (const c of input.clients) {
    if (c.address !== undefined) continue
    while (next <= input.pool.end && taken.has(next)) next++
    if (next > input.pool.end) {
      const size = input.pool.end - input.pool.start + 1
      throw new Error(
        `tunnel.pool ${formatIpv4(input.pool.start)}-${formatIpv4(input.pool.end)} (${size} addresses) ` +
          `cannot hold every client in "clients": give some a static address or widen the pool`,
      )
    }
    taken.add(next)
    plan.set(c.name, formatIpv4(next))
    next++
  }
  return plan
}
