/**
 * Config types, derived from the schema so the two cannot drift apart.
 *
 * - NodeConfig / ClientConfig: a file as written and validated (defaulted fields optional).
 * - Resolved*: after loadConfig: defaults applied, derived values computed, paths absolute.
 */
import type {FromSchema} from 'json-schema-to-ts'
import type {clientConfigSchema, clientEntrySchema, nodeConfigSchema} from './schema.js'

/** One client a node lists by name. */
export type ListedClient = FromSchema<typeof clientEntrySchema>
/**
 * A node's `clients`: FromSchema cannot follow the schema's if/then/else (used there for
 * precise error positions), so the field's type is spelled out here.
 */
export type ClientsField = 'any' | ('any' | ListedClient)[]

export type NodeConfig = Omit<FromSchema<typeof nodeConfigSchema, {keepDefaultedPropertiesOptional: true}>, 'clients'> & {clients?: ClientsField}
export type ClientConfig = FromSchema<typeof clientConfigSchema, {keepDefaultedPropertiesOptional: true}>
export type AgentConfig = NodeConfig | ClientConfig

/** With schema defaults applied: FromSchema marks every property that has a `default` as present. */
export type DefaultedNodeConfig = Omit<FromSchema<typeof nodeConfigSchema>, 'clients'> & {clients: ClientsField}
export type DefaultedClientConfig = FromSchema<typeof clientConfigSchema>
type DefaultedNode = DefaultedNodeConfig
type DefaultedClient = DefaultedClientConfig

export type TransportsConfig = DefaultedNode['transports']
export type LogLevel = DefaultedNode['log']['level']

/** Credentials, with absolute paths. */
export type ResolvedPki =
  | {kind: 'bundle'; bundle: string}
  | {kind: 'files'; ca: string; cert: string; key: string}

/** A node's credentials, and the CRL it enforces (absolute path), if any. */
export type ResolvedNodePki = ResolvedPki & {crl?: string}

interface Located {
  /** Absolute path of the config file. */
  file: string
  /** Its directory, against which relative paths were resolved. */
  dir: string
}

export interface ResolvedClientEntry {
  name: string
  /** Static tunnel address, if any. */
  address?: string
  /** Canonical "sha256:AB:12:..." (upper-case hex pairs joined by ":"), when pinned. */
  fingerprint?: string
}

/** A node's fleet section with paths made absolute and defaults applied. */
export interface ResolvedFleetConfig {
  endpoints: string[]
  ca: string
  cert: string
  key: string
  prefix: string
  /** Where clients reach this node; undefined: not known (listen.address 0.0.0.0 and no advertise). */
  advertise?: string
  unreachable: 'start' | 'refuse'
}

export type ResolvedNodeConfig = Located &
  Omit<DefaultedNode, '$schema' | 'tunnel' | 'pki' | 'clients' | 'fleet'> & {
    /** Absent: a node on its own. */
    fleet?: ResolvedFleetConfig
    tunnel: {
      interface: string
      subnet: string
      address: string
      /** Inclusive; the allocator skips the node's address and static client addresses. */
      pool: {start: string; end: string}
      /** Undefined: derive from the transport's overhead. */
      mtu?: number
    }
    pki: ResolvedNodePki
    /** The listed clients (names, static addresses, pins). */
    clients: ResolvedClientEntry[]
    /** `any` (alone or in the list): any non-revoked client certificate of the fleet CA is admitted too. */
    admitAny: boolean
  }

/** A node a client may ride. */
export interface ResolvedNodeEntry {
  host: string
  port: number
  /** The name its certificate must carry. */
  name: string
  /** Milliseconds off its score when ranking. */
  preference: number
}

export type ResolvedClientConfig = Located &
  Omit<DefaultedClient, '$schema' | 'node' | 'nodes' | 'pki'> & {
    /** `node:` or `nodes:`, as one list. */
    nodes: ResolvedNodeEntry[]
    pki: ResolvedPki
  }

export type ResolvedConfig = ResolvedNodeConfig | ResolvedClientConfig
