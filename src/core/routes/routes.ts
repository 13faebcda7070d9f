/**
 * The routes that send chosen destinations into the tunnel, and the host route that keeps the
 * tunnel's own encapsulated traffic out of it. iproute2, main table; control plane, so every
 * step reads the table first and says clearly what it refuses to do.
 *
 * Every route we add carries `proto 167` (ROUTE_PROTO): `ip route` shows it, deletion filters on
 * it (so we never delete a same-prefix route someone else added), and after a crash we can tell
 * our leftover endpoint route from an operator's.
 */
import {cidrContains, formatCidr, isNetworkAddress, networkAddress, parseCidr, parseIpv4, type Ipv4Cidr} from '../net/ipv4.js'
import {assertInterfaceName} from '../sys/ifname.js'
import {run, type Runner} from '../sys/run.js'

/** rtnetlink protocol number marking our routes; not among iproute2's reserved ones (rt_protos). */
export const ROUTE_PROTO = 167
const KERNEL_PROTO = '2'

/** A route we added, with what it takes to delete exactly it. */
export interface AddedRoute {
  /** a.b.c.d/n */
  dst: string
  dev: string
  /** Gateway, for the endpoint route. */
  via?: string
  onlink?: boolean
}

export interface RouteOptions {
  /** How to run `ip`; tests pass netnsRunner(ns). */
  runner?: Runner
}

/** One entry of `ip -N -j route ...` (numeric protocol). */
interface IpRoute {
  type?: string
  dst: string
  gateway?: string
  via?: {family?: string; host?: string}
  dev?: string
  protocol?: string
  metric?: number
  flags?: string[]
}

/** "a.b.c.d" (a host) or "a.b.c.d/n" with no host bits set. */
export function parseRoutePrefix(text: string): Ipv4Cidr {
  const cidr = text.includes('/') ? parseCidr(text) : ((a) => (a === undefined ? undefined : {address: a, prefix: 32}))(parseIpv4(text))
  if (!cidr) throw new Error(`invalid route destination ${JSON.stringify(text)}: expected a.b.c.d or a.b.c.d/n`)
  if (!isNetworkAddress(cidr)) {
    throw new Error(`route destination ${text} has host bits set; did you mean ${formatCidr({address: networkAddress(cidr), prefix: cidr.prefix})}?`)
  }
  return cidr
}

async function showExact(runner: Runner, dst: string): Promise<IpRoute[]> {
  const {stdout} = await runner('ip', ['-N', '-j', 'route', 'show', 'exact', dst])
  return stdout.trim() === '' ? [] : (JSON.parse(stdout) as IpRoute[])
}

function describe(r: IpRoute): string {
  const gw = r.gateway ?? r.via?.host
  return [r.type && r.type !== 'unicast' ? r.type : '', gw ? `via ${gw}` : '', r.dev ? `dev ${r.dev}` : '', r.protocol ? `proto ${r.protocol}` : '', r.metric !== undefined ? `metric ${r.metric}` : '']
    .filter(Boolean)
    .join(' ')
}

/**
 * Routes each prefix into `dev` with `ip route replace`. Replace, not add: after a crash the
 * same route may still be there (a persistent device, or a restart faster than the kernel's
 * cleanup) and re-adding must succeed. But replace would also silently take over a route the
 * host already has for that prefix (a LAN, a VPN's route), so first we look: a route for the same
 * prefix on another device (any metric) is an error, not something to steal. One on `dev` is
 * ours from an earlier run and is taken over; the kernel's connected route of `dev` is left
 * alone. All or nothing: if one route fails, those added so far are removed.
 */
export async function addRoutes(dev: string, cidrs: readonly string[], opts: RouteOptions = {}): Promise<AddedRoute[]> {
  const runner = opts.runner ?? run
  assertInterfaceName(dev)
  const prefixes = [...new Set(cidrs.map((c) => formatCidr(parseRoutePrefix(c))))]

  const plan: string[] = []
  const conflicts: string[] = []
  for (const dst of prefixes) {
    const existing = await showExact(runner, dst)
    const foreign = existing.filter((r) => r.dev !== dev)
    if (foreign.length > 0) {
      const hint = dst === '0.0.0.0/0' ? ' (to send everything through the tunnel use 0.0.0.0/1 and 128.0.0.0/1)' : ''
      conflicts.push(`${dst} is already routed ${foreign.map(describe).join(', ')}${hint}`)
    } else if (!existing.some((r) => r.protocol === KERNEL_PROTO)) {
      plan.push(dst)
    }
  }
  if (conflicts.length > 0) {
    throw new Error(`refusing to take over existing routes for ${dev}: ${conflicts.join('; ')}; remove them or drop these prefixes from the config`)
  }

  const added: AddedRoute[] = []
  try {
    for (const dst of plan) {
      await runner('ip', ['route', 'replace', dst, 'dev', dev, 'proto', String(ROUTE_PROTO)])
      added.push({dst, dev})
    }
  } catch (err) {
    await removeRoutes(added, opts).catch(() => undefined)
    throw err
  }
  return added
}

/**
 * When a tunnel prefix covers the node's own address, the encapsulated packets to the node would
 * be routed into the tunnel itself. Pin the node's address to the path it has now, with a /32
 * via the gateway and device `ip route get` reports; call this BEFORE addRoutes, while that
 * answer is still the real one. Returns the route to remove on down, or null when not needed.
 */
export async function keepEndpointOutside(
  nodeIp: string,
  cidrs: readonly string[],
  opts: RouteOptions & {tunInterface?: string} = {},
): Promise<AddedRoute | null> {
  const runner = opts.runner ?? run
  const ip = parseIpv4(nodeIp)
  if (ip === undefined) throw new Error(`invalid node address ${JSON.stringify(nodeIp)}`)
  const covering = cidrs.map(parseRoutePrefix).filter((c) => cidrContains(c, ip))
  if (covering.length === 0) return null
  if (covering.some((c) => c.prefix === 32)) {
    throw new Error(`cannot route the node's own address ${nodeIp} through the tunnel to it: remove ${nodeIp}/32 from the routes`)
  }
  const dst = `${nodeIp}/32`

  const existing = await showExact(runner, dst)
  const stale = existing.filter((r) => r.protocol === String(ROUTE_PROTO)).map((r) => toAdded(dst, r))
  // Someone else's host route already decides the path, and a /32 beats the tunnel prefixes.
  if (existing.length > stale.length) {
    await removeRoutes(stale, {runner})
    return null
  }

  // Our pin from a run that died: its gateway may be out of date, so drop it and ask again; if
  // asking fails, put it back rather than leave the endpoint unpinned.
  await removeRoutes(stale, {runner})
  let found: IpRoute
  try {
    found = await currentRoute(runner, nodeIp, opts.tunInterface)
  } catch (err) {
    for (const r of stale) await runner('ip', ['route', 'add', ...routeArgs(r), 'proto', String(ROUTE_PROTO)], {allowFail: true})
    throw err
  }

  const route = toAdded(dst, found)
  await runner('ip', ['route', 'add', ...routeArgs(route), 'proto', String(ROUTE_PROTO)])
  return route
}

/** The route `ip route get` reports for the node: a real unicast path, not into the tunnel. */
async function currentRoute(runner: Runner, nodeIp: string, tunInterface: string | undefined): Promise<IpRoute> {
  let found: IpRoute | undefined
  try {
    const {stdout} = await runner('ip', ['-N', '-j', 'route', 'get', nodeIp])
    found = (JSON.parse(stdout) as IpRoute[])[0]
  } catch (err) {
    throw new Error(`cannot find the current route to the node ${nodeIp}: ${(err as Error).message}`, {cause: err})
  }
  if (!found?.dev) throw new Error(`no route to the node ${nodeIp}`)
  if (found.type && found.type !== 'unicast') throw new Error(`the node address ${nodeIp} is ${found.type} on this host (dev ${found.dev}); is this the node itself?`)
  if (tunInterface !== undefined && found.dev === tunInterface) {
    throw new Error(`the route to the node ${nodeIp} already goes into ${found.dev}: keepEndpointOutside must run before the tunnel routes are added`)
  }
  return found
}

function toAdded(dst: string, r: IpRoute): AddedRoute {
  const via = r.gateway ?? r.via?.host
  return {dst, dev: r.dev!, ...(via ? {via} : {}), ...(r.flags?.includes('onlink') ? {onlink: true} : {})}
}

// An IPv4 route via an IPv6 next hop (RFC 5549) needs the family spelled out.
const viaArgs = (r: AddedRoute) => (r.via ? (r.via.includes(':') ? ['via', 'inet6', r.via] : ['via', r.via]) : [])

function routeArgs(r: AddedRoute): string[] {
  return [r.dst, ...viaArgs(r), 'dev', r.dev, ...(r.onlink ? ['onlink'] : [])]
}

/**
 * Deletes exactly the given routes (matched on prefix, gateway, device and our protocol), in
 * reverse order. Already gone is fine: a TUN's routes vanish with the device. Other failures are
 * reported together after trying every route.
 */
export async function removeRoutes(routes: readonly AddedRoute[], opts: RouteOptions = {}): Promise<void> {
  const runner = opts.runner ?? run
  const failures: string[] = []
  for (const r of [...routes].reverse()) {
    const args = ['route', 'del', r.dst, ...viaArgs(r), 'dev', r.dev, 'proto', String(ROUTE_PROTO)]
    const res = await runner('ip', args, {allowFail: true})
    if (res.code === 0 || /No such process|Cannot find device/.test(res.stderr)) continue
    failures.push(`${r.dst} dev ${r.dev}: ${res.stderr.trim() || `exit ${res.code}`}`)
  }
  if (failures.length > 0) throw new Error(`could not remove routes: ${failures.join('; ')}`)
}
