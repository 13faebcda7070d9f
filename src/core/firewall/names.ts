/**
 * The one place that derives the names of what an agent instance owns in the kernel: its chains
 * (and where each is entered from) and its ipset of admitted clients. Everything else
 * (rendering, parsing, removal) goes through chainsFor() and setName().
 */

/** Instance names as the config accepts them. */
export const INSTANCE_NAME = /^[a-z0-9][a-z0-9-]{0,15}$/

/** iptables' limit: XT_EXTENSION_MAXNAMELEN (29) including the terminating NUL. */
export const MAX_CHAIN_NAME = 28

/** ipset's limit: IPSET_MAXNAMELEN (32) including the terminating NUL. */
export const MAX_SET_NAME = 31

export type Table = 'filter' | 'nat' | 'mangle'
export type ChainRole = 'fwd' | 'in' | 'nat' | 'mss'

export interface OwnedChain {
  role: ChainRole
  table: Table
  /** Our chain, e.g. AGENT-node1-FWD. */
  name: string
  /** The built-in chain that jumps to it. */
  hook: 'FORWARD' | 'INPUT' | 'POSTROUTING'
}

const PREFIX = 'AGENT-'
const SUFFIX: Record<ChainRole, string> = {fwd: 'FWD', in: 'IN', nat: 'NAT', mss: 'MSS'}

export function assertInstanceName(instance: string): void {
  if (!INSTANCE_NAME.test(instance)) {
    throw new Error(`invalid instance name ${JSON.stringify(instance)}: expected ${INSTANCE_NAME.source}`)
  }
}

export function chainName(instance: string, role: ChainRole): string {
  assertInstanceName(instance)
  const name = `${PREFIX}${instance}-${SUFFIX[role]}`
  // Cannot trigger with the instance pattern above (6 + 16 + 4 = 26 at most, "-FWD"); guards against someone
  // widening the pattern without looking here.
  if (name.length > MAX_CHAIN_NAME) throw new Error(`chain name ${name} exceeds ${MAX_CHAIN_NAME} characters`)
  return name
}

/** Our four chains, in the order payloads render them (the filter table's two first). */
export function chainsFor(instance: string): readonly OwnedChain[] {
  return [
    {role: 'fwd', table: 'filter', name: chainName(instance, 'fwd'), hook: 'FORWARD'},
    {role: 'in', table: 'filter', name: chainName(instance, 'in'), hook: 'INPUT'},
    {role: 'nat', table: 'nat', name: chainName(instance, 'nat'), hook: 'POSTROUTING'},
    {role: 'mss', table: 'mangle', name: chainName(instance, 'mss'), hook: 'FORWARD'},
  ]
}

const OWNED = /^AGENT-([a-z0-9][a-z0-9-]{0,15})-(FWD|IN|NAT|MSS)$/

/** The instance a chain name belongs to, if it is one of ours. */
export function instanceOfChain(chain: string): string | undefined {
  return OWNED.exec(chain)?.[1]
}

const SET_PREFIX = 'agent-'

/** The ipset (hash:ip) holding the instance's admitted client addresses, e.g. agent-node1. */
export function setName(instance: string): string {
  assertInstanceName(instance)
  const name = `${SET_PREFIX}${instance}`
  // Cannot trigger with the instance pattern above (6 + 16 = 22 at most); guards against someone
  // widening the pattern without looking here.
  if (name.length > MAX_SET_NAME) throw new Error(`ipset name ${name} exceeds ${MAX_SET_NAME} characters`)
  return name
}

const OWNED_SET = /^agent-([a-z0-9][a-z0-9-]{0,15})$/

/** The instance an ipset name belongs to, if it is one of ours. */
export function instanceOfSet(set: string): string | undefined {
  return OWNED_SET.exec(set)?.[1]
}
