/**
 * What a client accepts of the address a node's welcome gives it. The node is authenticated,
 * but a hostile or misconfigured one must not be able to pull more of this host's traffic into
 * the tunnel than the client's own `routes:`.
 *
 * The client never routes the welcome's subnet: its address goes on the TUN with
 * `noprefixroute` (so the kernel adds no route for address/prefix, which a /1 or a /8 would have
 * turned into a route for half the Internet), and the only route it adds besides `routes:` is
 * the node's own tunnel address (the gateway, a /32). Clients cannot reach each other through
 * the node anyway (the node drops tunnel-to-tunnel traffic), so nothing else of the subnet is
 * needed.
 *
 * On top of that, a welcome is refused, before anything is applied, unless:
 *   - the prefix is /8 to /30, the range a node's `tunnel.subnet` may have (so every welcome of
 *     a correctly configured node passes);
 *   - the address and the gateway are two different hosts of address/prefix;
 *   - that subnet does not contain the node's own public address (the tunnel would carry itself);
 *   - that subnet does not overlap a route this host has through another interface (a LAN,
 *     docker, another VPN), other than routes shorter than /8 (a default route, or the
 *     0.0.0.0/1 + 128.0.0.0/1 pair of full-tunnel VPNs, which any subnet lies in). The tunnel
 *     address and the gateway would otherwise take addresses of that network away from it.
 */
import {SUBNET_MAX_PREFIX, SUBNET_MIN_PREFIX} from '../config/semantic.js'
import {cidrContains, formatCidr, isHostOf, networkAddress, parseCidr, parseIpv4, type Ipv4Cidr} from '../net/ipv4.js'
import {run, type Runner} from '../sys/run.js'

/** The parts of a welcome this is about. */
export interface WelcomeAddress {
  address: string
  prefix: number
  gateway: string
}

/** A route of this host, as `ip -j route` shows it. */
export interface HostRoute {
  /** "default", "a.b.c.d" or "a.b.c.d/n" */
  dst: string
  dev?: string
  gateway?: string
  type?: string
}

export interface WelcomeContext {
  /** The node's public address, the carrier's destination. */
  nodeIp: string
  /** The client's TUN: its routes are the tunnel's own. */
  tunInterface: string
  /** The main routing table now. */
  routes: readonly HostRoute[]
}

/** Throws, saying what is wrong and naming the prefix, if the welcome's address must not be applied. */
export function checkWelcomeAddress(w: WelcomeAddress, ctx: WelcomeContext): void {
  const asked = `${w.address}/${w.prefix}`
  const refuse = (why: string): never => {
    throw new Error(`refusing the node's tunnel address ${asked}: ${why}`)
  }
  if (!Number.isInteger(w.prefix) || w.prefix < SUBNET_MIN_PREFIX || w.prefix > SUBNET_MAX_PREFIX) {
    refuse(`prefix /${w.prefix} is out of range (a node's tunnel subnet is /${SUBNET_MIN_PREFIX} to /${SUBNET_MAX_PREFIX})`)
  }
  const address = parseIpv4(w.address)
  const gateway = parseIpv4(w.gateway)
  if (address === undefined) refuse(`${JSON.stringify(w.address)} is not an IPv4 address`)
  if (gateway === undefined) refuse(`the gateway ${JSON.stringify(w.gateway)} is not an IPv4 address`)
  const subnet: Ipv4Cidr = {address: networkAddress({address: address!, prefix: w.prefix}), prefix: w.prefix}
  const net = formatCidr(subnet)
  if (!isHostOf(subnet, address!)) refuse(`${w.address} is not a host of ${net}`)
  if (!isHostOf(subnet, gateway!)) refuse(`the gateway ${w.gateway} is not a host of ${net}`)
  if (address === gateway) refuse(`the gateway ${w.gateway} is the client's own address`)
  const nodeIp = parseIpv4(ctx.nodeIp)
  if (nodeIp !== undefined && cidrContains(subnet, nodeIp)) refuse(`${net} contains the node's own address ${ctx.nodeIp}: the tunnel would carry itself`)
  for (const r of ctx.routes) {
    if (r.dev === ctx.tunInterface) continue
    const dst = routeDst(r.dst)
    if (dst === undefined || dst.prefix < SUBNET_MIN_PREFIX) continue
    if (overlaps(subnet, dst)) refuse(`${net} overlaps this host's route ${describe(r, dst)}; the tunnel would take addresses from it`)
  }
}

/** The main routing table, IPv4. */
export async function hostRoutes(runner: Runner = run): Promise<HostRoute[]> {
  const {stdout} = await runner('ip', ['-j', '-4', 'route', 'show', 'table', 'main'])
  return stdout.trim() === '' ? [] : (JSON.parse(stdout) as HostRoute[])
}

function routeDst(text: string): Ipv4Cidr | undefined {
  if (text === 'default') return {address: 0, prefix: 0}
  const cidr = text.includes('/') ? parseCidr(text) : ((a) => (a === undefined ? undefined : {address: a, prefix: 32}))(parseIpv4(text))
  return cidr === undefined ? undefined : {address: networkAddress(cidr), prefix: cidr.prefix}
}

function overlaps(a: Ipv4Cidr, b: Ipv4Cidr): boolean {
  return cidrContains(a, b.address) || cidrContains(b, a.address)
}

function describe(r: HostRoute, dst: Ipv4Cidr): string {
  const how = [r.type !== undefined && r.type !== 'unicast' ? r.type : '', r.gateway !== undefined ? `via ${r.gateway}` : '', r.dev !== undefined ? `dev ${r.dev}` : '']
  return [formatCidr(dst), ...how].filter(Boolean).join(' ')
}
