/**
 * Pure rule generation for a node instance: what the chains should contain, and the
 * iptables-restore payloads (for `iptables-restore --noflush -w`) that get there from the state
 * shown by iptables-save.
 *
 * Why payloads and not one iptables call per rule: restore commits each table in one
 * transaction, so a chain is never seen half-written, and in --noflush mode declaring
 * ":CHAIN - [0:0]" creates the chain or flushes it, which makes "render everything again" the
 * simplest idempotent reconcile.
 *
 * The chains do not change when clients come and go: admitted clients are the members of the
 * instance's ipset (hash:ip, named by setName(), managed in admission-set.ts and iptables.ts),
 * which two rules match. Per-packet cost and the chains' size are the same for 1 client or
 * 65,536, and admitting or withdrawing a client is one set element, not a chain re-render.
 *
 * Filter policy (chain AGENT-<instance>-FWD, entered from FORWARD at position 1):
 *   -s <subnet> ! -i tun       DROP   a tunnel source arriving on any other interface is spoofed
 *                                     (it would be forwarded, and NATed, as if from a client)
 *   -i tun -o tun              DROP   clients cannot reach each other through the node
 *   -d <denied> -i tun         DROP   networks no client may reach (egress.deny: link-local, such
 *                                     as a cloud metadata service, by default)
 *   -i tun -o <egress> src in <set>  ACCEPT  an admitted client's own traffic, out of the egress
 *                                     interface only (not into docker0, a LAN or another VPN)
 *   -o tun dst in <set> RELATED,ESTABLISHED ACCEPT  replies to an admitted client, nothing new
 *   -i tun                     DROP   anything else from the tunnel (unknown or revoked source)
 *   -o tun                     DROP   anything else into the tunnel (no inbound connections)
 * The reply rule matches the set too, not just "-o tun ESTABLISHED": deleting a client's
 * element stops both directions at once. Withdrawing a client also deletes its conntrack
 * entries (iptables.ts), so none of its flows survive to be picked up by the next client given
 * the same address.
 *
 * Input policy (chain AGENT-<instance>-IN, entered from INPUT at position 1): new connections
 * to the control port from one source address are limited in the kernel (CONTROL_SYN_* below),
 * so a host that opens and reopens connections as fast as it can costs the node a hash lookup
 * per SYN past the limit, not a connection in JavaScript. From the tunnel, the node itself
 * answers pings (echo-request) and replies to what it started, and nothing else: tunnel
 * clients must not reach the node's own services (sshd...) through the tunnel. Packets from
 * other interfaces return to INPUT untouched.
 *
 * The source check trusts the core to decapsulate a peer's packets only when their source is
 * that peer's tunnel address: the firewall sees one TUN for all clients and cannot tell who sent
 * a packet, only what it claims.
 */
import {formatIpv4, isNetworkAddress, networkAddress, parseCidr, parseIpv4, cidrContains, formatCidr} from '../net/ipv4.js'
import {assertInterfaceName} from '../sys/ifname.js'
import {SET_MAXELEM} from './admission-set.js'
import {assertInstanceName, chainsFor, instanceOfChain, setName, type ChainRole, type OwnedChain, type Table} from './names.js'
import {parseIptablesSave, rulesJumpingTo, type SavedRuleset} from './save.js'

export interface FirewallSpec {
  /** Config name of this node instance; names our chains. */
  instance: string
  /** The node's TUN device, where every client's decapsulated packets appear. */
  tunInterface: string
  /** The tunnel subnet clients get addresses from, e.g. 10.8.0.0/24. */
  subnet: string
  /** Where forwarded traffic leaves the node. */
  egressInterface: string
  /** MASQUERADE (follows the egress address), or SNAT to a fixed IPv4 address. */
  snat: 'masquerade' | string
  /** Tunnel addresses of the clients allowed through: the members of the instance's set. */
  admitted: readonly string[]
  /** Networks (CIDR) no client may reach through the node, whatever else allows it. */
  deny?: readonly string[]
  /** The control port (TCP): new connections to it are rate-limited per source address. */
  controlPort?: number
  /** New control connections a second per source address (default CONTROL_SYN_PER_SECOND); bursts of twice as many. */
  controlPerSecond?: number
}

/**
 * New control connections (SYNs) per source address: past the rate and its burst they are
 * dropped in the kernel, and the sender's TCP retries a second later. Far above what players
 * need even behind one carrier-grade NAT (the scale benchmark's 10,000 players from one
 * address reconnect at about 360 a second); a flood from one address costs the node at most
 * this many connections a second.
 */
export const CONTROL_SYN_PER_SECOND = 500

/** A spec checked and put in canonical form (admitted: unique, numerically sorted). */
export interface NormalizedSpec extends FirewallSpec {
  admitted: string[]
  deny: string[]
  controlPerSecond: number
}

export function normalizeSpec(spec: FirewallSpec): NormalizedSpec {
  assertInstanceName(spec.instance)
  assertInterfaceName(spec.tunInterface, 'tun interface')
  assertInterfaceName(spec.egressInterface, 'egress interface')
  if (spec.tunInterface === spec.egressInterface) throw new Error(`tun and egress interface are both ${spec.tunInterface}`)
  const cidr = parseCidr(spec.subnet)
  if (!cidr) throw new Error(`invalid tunnel subnet ${JSON.stringify(spec.subnet)}: expected a.b.c.d/n`)
  if (!isNetworkAddress(cidr)) {
    throw new Error(`tunnel subnet ${spec.subnet} has host bits set; did you mean ${formatCidr({address: networkAddress(cidr), prefix: cidr.prefix})}?`)
  }
  if (spec.snat !== 'masquerade' && parseIpv4(spec.snat) === undefined) {
    throw new Error(`invalid snat ${JSON.stringify(spec.snat)}: expected "masquerade" or an IPv4 address`)
  }
  const deny = (spec.deny ?? []).map((d) => {
    const n = parseCidr(d)
    if (!n) throw new Error(`invalid denied network ${JSON.stringify(d)}: expected a.b.c.d/n`)
    if (!isNetworkAddress(n)) throw new Error(`denied network ${d} has host bits set; did you mean ${formatCidr({address: networkAddress(n), prefix: n.prefix})}?`)
    return formatCidr(n)
  })
  if (spec.controlPort !== undefined && !(Number.isInteger(spec.controlPort) && spec.controlPort > 0 && spec.controlPort < 65536)) {
    throw new Error(`invalid control port ${JSON.stringify(spec.controlPort)}: expected 1 to 65535`)
  }
  const controlPerSecond = spec.controlPerSecond ?? CONTROL_SYN_PER_SECOND
  if (!(Number.isInteger(controlPerSecond) && controlPerSecond > 0)) throw new Error(`invalid control connection rate ${JSON.stringify(spec.controlPerSecond)}: expected a positive integer`)
  return {...spec, subnet: formatCidr(cidr), admitted: normalizeAdmitted(spec.admitted, spec.subnet), deny: [...new Set(deny)], controlPerSecond}
}

export function normalizeAdmitted(addresses: readonly string[], subnet: string): string[] {
  const cidr = parseCidr(subnet)
  if (!cidr) throw new Error(`invalid tunnel subnet ${JSON.stringify(subnet)}`)
  const seen = new Set<number>()
  for (const a of addresses) {
    const n = parseIpv4(a)
    if (n === undefined) throw new Error(`invalid client address ${JSON.stringify(a)}: expected an IPv4 address`)
    // Clients get addresses from the subnet; anything else is a caller bug, not a rule to add.
    if (!cidrContains(cidr, n)) throw new Error(`client address ${a} is outside the tunnel subnet ${subnet}`)
    seen.add(n)
  }
  // ipset would refuse the add past maxelem ("Hash is full") after applying part of the list.
  if (seen.size > SET_MAXELEM) throw new Error(`${seen.size} client addresses exceed the admission set's limit of ${SET_MAXELEM}`)
  return [...seen].sort((x, y) => x - y).map(formatIpv4)
}

/**
 * The rules of one of our chains, as "-A <chain> ..." lines written exactly the way iptables-save
 * prints them back (option order, "-m tcp" added by iptables), so desired and actual compare as text.
 */
export function chainRules(spec: FirewallSpec, role: ChainRole): string[] {
  const s = normalizeSpec(spec)
  const chain = chainsFor(s.instance).find((c) => c.role === role)!.name
  const tun = s.tunInterface
  const set = setName(s.instance)
  const A = `-A ${chain}`
  switch (role) {
    case 'fwd':
      return [
        `${A} -s ${s.subnet} ! -i ${tun} -j DROP`,
        `${A} -i ${tun} -o ${tun} -j DROP`,
        ...s.deny.map((d) => `${A} -d ${d} -i ${tun} -j DROP`),
        `${A} -i ${tun} -o ${s.egressInterface} -m set --match-set ${set} src -j ACCEPT`,
        `${A} -o ${tun} -m set --match-set ${set} dst -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`,
        `${A} -i ${tun} -j DROP`,
        `${A} -o ${tun} -j DROP`,
      ]
    case 'in':
      return [
        ...(s.controlPort === undefined
          ? []
          : [
              `${A} -p tcp -m tcp --dport ${s.controlPort} --tcp-flags FIN,SYN,RST,ACK SYN -m hashlimit --hashlimit-above ${s.controlPerSecond}/sec ` +
                `--hashlimit-burst ${2 * s.controlPerSecond} --hashlimit-mode srcip --hashlimit-name ${setName(s.instance)}-syn -j DROP`,
            ]),
        `${A} -i ${tun} -p icmp -m icmp --icmp-type 8 -j ACCEPT`,
        `${A} -i ${tun} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`,
        `${A} -i ${tun} -j DROP`,
      ]
    case 'nat':
      return [`${A} -s ${s.subnet} -o ${s.egressInterface} -j ${s.snat === 'masquerade' ? 'MASQUERADE' : `SNAT --to-source ${s.snat}`}`]
    case 'mss':
      // Clamp SYNs both ways: the client's SYN to the egress path, the server's SYN-ACK to the
      // tunnel's MTU, so TCP never depends on PMTU discovery through the tunnel.
      return [
        `${A} -i ${tun} -p tcp -m tcp --tcp-flags SYN,RST SYN -j TCPMSS --clamp-mss-to-pmtu`,
        `${A} -o ${tun} -p tcp -m tcp --tcp-flags SYN,RST SYN -j TCPMSS --clamp-mss-to-pmtu`,
      ]
  }
}

/** The jump rule we want, as iptables-save prints it. */
export function canonicalJump(chain: OwnedChain): string {
  return `-A ${chain.hook} -j ${chain.name}`
}

/** A rule that jumps (or goes) to one of our chains, and where it sits. */
export interface JumpRef {
  /** The rule as iptables-save printed it. */
  rule: string
  /** The chain it is in (FORWARD, POSTROUTING... or anything someone added it to). */
  chain: string
  /** 1-based position in that chain. */
  position: number
}

export interface OwnedChainState extends OwnedChain {
  exists: boolean
  /** Its rules, as iptables-save printed them. */
  rules: string[]
  /** Every rule in the table that jumps to it. */
  jumps: JumpRef[]
}

export interface OwnedState {
  instance: string
  /** Anything of ours exists (a chain; jumps cannot exist without their chain). */
  found: boolean
  chains: Record<ChainRole, OwnedChainState>
}

/** Which of an instance's chains and jumps exist in an iptables-save dump. */
export function parseOwnedState(iptablesSave: string | SavedRuleset, instance: string): OwnedState {
  const ruleset = typeof iptablesSave === 'string' ? parseIptablesSave(iptablesSave) : iptablesSave
  const chains = {} as Record<ChainRole, OwnedChainState>
  for (const c of chainsFor(instance)) {
    const saved = ruleset.get(c.table)?.chains.get(c.name)
    chains[c.role] = {...c, exists: saved !== undefined, rules: saved ? [...saved.rules] : [], jumps: findJumps(ruleset, c)}
  }
  return {instance, found: Object.values(chains).some((c) => c.exists), chains}
}

function findJumps(ruleset: SavedRuleset, c: OwnedChain): JumpRef[] {
  const table = ruleset.get(c.table)
  if (!table) return []
  const jumping = new Set(rulesJumpingTo(ruleset, c.table, c.name))
  const out: JumpRef[] = []
  for (const chain of table.chains.values()) {
    chain.rules.forEach((rule, i) => {
      if (jumping.has(rule)) out.push({rule, chain: chain.name, position: i + 1})
    })
  }
  return out
}

/** Every instance with at least one chain in the dump, sorted. */
export function ownedInstances(iptablesSave: string): string[] {
  const found = new Set<string>()
  for (const table of parseIptablesSave(iptablesSave).values()) {
    for (const chain of table.chains.keys()) {
      const instance = instanceOfChain(chain)
      if (instance !== undefined) found.add(instance)
    }
  }
  return [...found].sort()
}

/** The state "nothing of this instance exists", target of a removal. */
export function absentState(instance: string): OwnedState {
  const chains = {} as Record<ChainRole, OwnedChainState>
  for (const c of chainsFor(instance)) chains[c.role] = {...c, exists: false, rules: [], jumps: []}
  return {instance, found: false, chains}
}

const deleteOf = (rule: string) => `-D${rule.slice(2)}`

/**
 * Full reconcile: every chain declared (created or flushed) and refilled, the jump from the
 * built-in chain inserted at position 1 if missing; stray or duplicate jumps are deleted and a
 * single jump inserted in their place. One payload, three tables, one COMMIT each (the filter
 * table's two chains change together).
 */
export function renderApply(spec: FirewallSpec, iptablesSave: string): string {
  const s = normalizeSpec(spec)
  const current = parseOwnedState(iptablesSave, s.instance)
  const out: string[] = []
  for (const [table, chains] of byTable(Object.values(current.chains))) {
    out.push(`*${table}`)
    for (const c of chains) {
      out.push(`:${c.name} - [0:0]`)
      const jumps = c.jumps.map((j) => j.rule)
      if (!(jumps.length === 1 && jumps[0] === canonicalJump(c))) {
        out.push(...jumps.map(deleteOf), `-I ${c.hook} 1 -j ${c.name}`)
      }
      out.push(...chainRules(s, c.role))
    }
    out.push('COMMIT')
  }
  return out.join('\n') + '\n'
}

/** Chains grouped by table, tables in the order of their first chain. */
function byTable<C extends {table: Table}>(chains: readonly C[]): Map<Table, C[]> {
  const out = new Map<Table, C[]>()
  for (const c of chains) {
    const list = out.get(c.table)
    if (list) list.push(c)
    else out.set(c.table, [c])
  }
  return out
}

/**
 * The payload that takes an instance's chains and jumps from what `iptablesSave` shows to
 * `target`, touching nothing else: removal (target = absentState) and rollback after a failed
 * apply (target = the state before it). Empty string when there is nothing to do.
 */
export function renderRestoreOwned(target: OwnedState, iptablesSave: string): string {
  const ruleset = parseIptablesSave(iptablesSave)
  const current = parseOwnedState(ruleset, target.instance)
  const out: string[] = []
  for (const [table, chains] of byTable(Object.values(current.chains))) {
    const lines: string[] = []
    for (const c of chains) {
      const want = target.chains[c.role]
      if (!want.exists) {
        if (c.exists) lines.push(...c.jumps.map((j) => deleteOf(j.rule)), `-F ${c.name}`, `-X ${c.name}`)
      } else {
        const sameRules = c.exists && sameList(c.rules, want.rules)
        const sameJumps = sameList(
          c.jumps.map((j) => `${j.position} ${j.rule}`),
          want.jumps.map((j) => `${j.position} ${j.rule}`),
        )
        if (!sameRules || !sameJumps) lines.push(`:${c.name} - [0:0]`, ...want.rules)
        if (!sameJumps) lines.push(...c.jumps.map((j) => deleteOf(j.rule)), ...reinsert(want.jumps, ruleset, c, current))
      }
    }
    if (lines.length > 0) out.push(`*${table}`, ...lines, 'COMMIT')
  }
  return out.length > 0 ? out.join('\n') + '\n' : ''
}

/** The payload that removes every chain and jump of an instance and nothing else. */
export function renderRemoval(iptablesSave: string, instance: string): string {
  return renderRestoreOwned(absentState(instance), iptablesSave)
}

/** "-I <chain> <pos> ..." lines that put jumps back where they were, given the deletions above. */
function reinsert(jumps: JumpRef[], ruleset: SavedRuleset, c: OwnedChainState, current: OwnedState): string[] {
  const length = new Map<string, number>()
  const lengthOf = (chain: string) => {
    if (!length.has(chain)) {
      const rules = ruleset.get(c.table)?.chains.get(chain)?.rules.length ?? 0
      const deleted = current.chains[c.role].jumps.filter((j) => j.chain === chain).length
      length.set(chain, rules - deleted)
    }
    return length.get(chain)!
  }
  return [...jumps]
    .sort((a, b) => a.position - b.position)
    .map((j) => {
      // Clamp: the chain may have changed since the target was read; "too big" would fail the table.
      const pos = Math.min(j.position, lengthOf(j.chain) + 1)
      length.set(j.chain, lengthOf(j.chain) + 1)
      return `-I ${j.chain} ${pos}${j.rule.slice(3 + j.chain.length)}`
    })
}

function sameList(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i])
}
