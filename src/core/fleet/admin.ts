/**
 * The operator's side of a fleet: what `agent fleet ...` does to the fleet's keys and to etcd's
 * users and roles. Everything here takes a connected Etcd3 client and a prefix, so it is usable
 * (and testable) without the CLI; the commands only parse flags and print.
 */
import {Etcd3, EtcdRoleExistsError, EtcdUserExistsError, Range, type IPermissionRequest} from 'etcd3'
import {isIpv4} from '../net/ipv4.js'
import {normalizeFingerprint} from '../pki/pem.js'
import {connectEtcd, type EtcdAccess} from './connect.js'
import {listStrings} from './list.js'
import {
  checkName,
  checkPrefix,
  fleetKeys,
  LAYOUT_VERSION,
  normalizeSerial,
  parseClient,
  parseNodeRecord,
  type ClientValue,
  type FleetKeys,
  type NodeRecord,
  type RevocationValue,
} from './layout.js'

/** etcd role names of a fleet: several fleets (prefixes) can share one etcd cluster. */
export function fleetId(prefix: string): string {
  return checkPrefix(prefix).slice(1).replaceAll('/', '.')
}

export function fleetRoles(prefix: string) {
  const id = fleetId(prefix)
  return {
    operator: `agent-operator-${id}`,
    node: `agent-node-${id}`,
    /** The role that lets one node write its own registry entry, and nothing else. */
    ownNode: (name: string) => `agent-node-${id}-${checkName(name)}`,
  }
}

/** What each role may do, as etcd permissions. Exported for docs/tests: the one place they are defined. */
export function rolePermissions(prefix: string) {
  const keys = fleetKeys(prefix)
  return {
    // `<prefix>/`, not `<prefix>`: a range on "/agent/fleet" would cover "/agent/fleet2" too.
    operator: [{permission: 'Readwrite', range: Range.prefix(`${prefix}/`)}] as IPermissionRequest[],
    // Read on the whole prefix: a node lists and watches it as one range, at one revision
    // (fleet-watch.ts), and in layout v1 it holds nothing a node may not read (the version, the
    // roster, and the registry it tells its clients about).
    node: [{permission: 'Read', range: Range.prefix(`${prefix}/`)}] as IPermissionRequest[],
    ownNode: (name: string) => [{permission: 'Readwrite', key: keys.node(name)}] as IPermissionRequest[],
  }
}

export interface ClientEntry extends ClientValue {
  name: string
  /** Set when the stored value is not a valid client (nodes ignore it): the raw text. */
  invalid?: string
}

export interface Revocations {
  names: ({name: string} & RevocationValue)[]
  serials: ({serial: string} & RevocationValue)[]
}

export interface NodeEntry {
  name: string
  /** The record, or null when the stored value is not one (then `invalid` holds the text). */
  record: NodeRecord | null
  invalid?: string
  /** Seconds since its last heartbeat (heartbeatAt), null if unknown. */
  heartbeatAgeSeconds: number | null
}

export interface MemberStatus {
  endpoint: string
  reachable: boolean
  error?: string
  memberId?: string
  leader?: boolean
  version?: string
  revision?: string
  raftTerm?: string
  dbSize?: number
  errors?: string[]
}

export interface FleetStatus {
  prefix: string
  members: MemberStatus[]
  /** The layout version key: null when absent (an empty fleet, before `agent fleet init`). */
  layoutVersion: string | null
  clients: number
  revokedNames: number
  revokedSerials: number
  nodes: number
}

/** Thrown for what the operator asked that cannot be done (not for etcd's own failures). */
export class FleetAdminError extends Error {}

function checkAddress(address: string): string {
  if (!isIpv4(address)) throw new FleetAdminError(`invalid address ${JSON.stringify(address)}: expected an IPv4 address such as 10.8.0.20`)
  return address
}

function checkFingerprint(fp: string): string {
  try {
    return normalizeFingerprint(fp)
  } catch {
    throw new FleetAdminError(`invalid fingerprint ${JSON.stringify(fp)}: expected a SHA-256 fingerprint (32 hex pairs with ":" or 64 hex digits, optionally after "sha256:"), as agent pki prints it`)
  }
}

function tail(key: string, prefix: string): string {
  return key.slice(prefix.length)
}

function parseRevocation(text: string): RevocationValue {
  try {
    const v = JSON.parse(text) as Record<string, unknown>
    if (v && typeof v === 'object') {
      const out: RevocationValue = {at: typeof v.at === 'string' ? v.at : ''}
      if (typeof v.by === 'string') out.by = v.by
      if (typeof v.name === 'string') out.name = v.name
      return out
    }
  } catch {
    // A revocation counts by its key alone; an unreadable value only loses the details.
  }
  return {at: ''}
}

export class FleetAdmin {
  readonly keys: FleetKeys
  readonly roles: ReturnType<typeof fleetRoles>

  constructor(
    readonly etcd: Etcd3,
    readonly prefix: string,
  ) {
    this.keys = fleetKeys(prefix)
    this.roles = fleetRoles(prefix)
  }

  /** The layout version key's value, refusing one this agent does not know. */
  async layoutVersion(): Promise<string | null> {
    const v = await this.etcd.get(this.keys.version).string()
    if (v !== null && v !== LAYOUT_VERSION) throw new FleetAdminError(`fleet ${this.prefix} has layout version ${JSON.stringify(v)}; this agent knows version ${LAYOUT_VERSION} only`)
    return v
  }

  /** Writes the version key if it is absent (atomically), refuses another version. */
  async ensureVersion(): Promise<void> {
    const r = await this.etcd
      .if(this.keys.version, 'Create', '==', 0)
      .then(this.etcd.put(this.keys.version).value(LAYOUT_VERSION))
      .else(this.etcd.get(this.keys.version))
      .commit()
    if (r.succeeded) return
    const kv = r.responses[0]?.response_range?.kvs[0]
    const v = kv?.value.toString()
    if (v !== LAYOUT_VERSION) throw new FleetAdminError(`fleet ${this.prefix} has layout version ${JSON.stringify(v)}; this agent knows version ${LAYOUT_VERSION} only`)
  }

  async addClient(name: string, opts: {address?: string; fingerprint?: string} = {}): Promise<ClientEntry & {replaced: boolean}> {
    checkName(name)
    const value: ClientValue = {}
    if (opts.address !== undefined) value.address = checkAddress(opts.address)
    if (opts.fingerprint !== undefined) value.fingerprint = checkFingerprint(opts.fingerprint)
    await this.ensureVersion()
    const prev = await this.etcd.put(this.keys.client(name)).value(JSON.stringify(value)).getPrevious()
    return {name, ...value, replaced: prev !== undefined && prev !== null && prev.value !== undefined && prev.value.length > 0}
  }

  async removeClient(name: string): Promise<void> {
    const r = await this.etcd.delete().key(this.keys.client(name)).exec()
    if (Number(r.deleted) === 0) throw new FleetAdminError(`fleet ${this.prefix} has no client "${name}"`)
  }

  async listClients(): Promise<ClientEntry[]> {
    await this.layoutVersion()
    const all = await listStrings(this.etcd, this.keys.clients)
    return Object.entries(all)
      .map(([key, text]): ClientEntry => {
        const name = tail(key, this.keys.clients)
        const v = parseClient(text)
        return v === null ? {name, invalid: text} : {name, ...v}
      })
      .sort((a, b) => a.name.localeCompare(b.name))
  }

  /** No certificate named `name` is admitted by any node; the client entry (if any) stays. */
  async revokeName(name: string, by?: string): Promise<{name: string} & RevocationValue> {
    checkName(name)
    await this.ensureVersion()
    const value: RevocationValue = {at: new Date().toISOString(), ...(by ? {by} : {})}
    await this.etcd.put(this.keys.revokedName(name)).value(JSON.stringify(value))
    return {name, ...value}
  }

  async revokeSerial(serial: string, opts: {name?: string; by?: string} = {}): Promise<{serial: string} & RevocationValue> {
    const key = normalizeSerial(serial)
    if (opts.name !== undefined) checkName(opts.name)
    await this.ensureVersion()
    const value: RevocationValue = {at: new Date().toISOString(), ...(opts.name ? {name: opts.name} : {}), ...(opts.by ? {by: opts.by} : {})}
    await this.etcd.put(this.keys.revokedSerial(key)).value(JSON.stringify(value))
    return {serial: key, ...value}
  }

  /** Lifts a revocation by name or serial; refuses one that is not there. */
  async unrevoke(what: {name: string} | {serial: string}): Promise<void> {
    const key = 'name' in what ? this.keys.revokedName(what.name) : this.keys.revokedSerial(normalizeSerial(what.serial))
    const r = await this.etcd.delete().key(key).exec()
    if (Number(r.deleted) === 0) throw new FleetAdminError(`fleet ${this.prefix} has no revocation of ${'name' in what ? `"${what.name}"` : `serial ${what.serial}`}`)
  }

  async listRevocations(): Promise<Revocations> {
    await this.layoutVersion()
    const [names, serials] = await Promise.all([
      listStrings(this.etcd, this.keys.revokedNames),
      listStrings(this.etcd, this.keys.revokedSerials),
    ])
    return {
      names: Object.entries(names)
        .map(([k, v]) => ({name: tail(k, this.keys.revokedNames), ...parseRevocation(v)}))
        .sort((a, b) => a.name.localeCompare(b.name)),
      serials: Object.entries(serials)
        .map(([k, v]) => ({serial: tail(k, this.keys.revokedSerials), ...parseRevocation(v)}))
        .sort((a, b) => a.serial.localeCompare(b.serial)),
    }
  }

  /** The registry: every node with a live lease, with the age of its last heartbeat. */
  async nodes(now: Date = new Date()): Promise<NodeEntry[]> {
    await this.layoutVersion()
    const all = await listStrings(this.etcd, this.keys.nodes)
    return Object.entries(all)
      .map(([key, text]): NodeEntry => {
        const name = tail(key, this.keys.nodes)
        const record = parseNodeRecord(text)
        if (record === null) return {name, record: null, invalid: text, heartbeatAgeSeconds: null}
        const at = Date.parse(record.heartbeatAt)
        return {name, record, heartbeatAgeSeconds: Number.isNaN(at) ? null : Math.max(0, (now.getTime() - at) / 1000)}
      })
      .sort((a, b) => a.name.localeCompare(b.name))
  }

  /** Counts of what the fleet holds (members are asked separately: memberStatus). */
  async counts(): Promise<Omit<FleetStatus, 'members' | 'prefix'>> {
    const count = (prefix: string) => this.etcd.getAll().prefix(prefix).count()
    const [layoutVersion, clients, revokedNames, revokedSerials, nodes] = await Promise.all([
      this.etcd.get(this.keys.version).string(),
      count(this.keys.clients),
      count(this.keys.revokedNames),
      count(this.keys.revokedSerials),
      count(this.keys.nodes),
    ])
    return {layoutVersion, clients, revokedNames, revokedSerials, nodes}
  }

  /**
   * Creates (or completes) the fleet's roles and writes the layout version. Safe to run again:
   * existing roles get their permissions granted again, which changes nothing.
   */
  async init(): Promise<{roles: {name: string; permissions: string[]}[]; version: string}> {
    const perms = rolePermissions(this.prefix)
    await this.ensureRole(this.roles.operator, perms.operator)
    await this.ensureRole(this.roles.node, perms.node)
    await this.ensureVersion()
    return {
      roles: [
        {name: this.roles.operator, permissions: perms.operator.map(describePermission)},
        {name: this.roles.node, permissions: perms.node.map(describePermission)},
      ],
      version: LAYOUT_VERSION,
    }
  }

  /**
   * etcd user `name` for a node (no password: its certificate's CN is the user), with the fleet's
   * node role and a role of its own that may write exactly its registry entry.
   */
  async nodeUser(name: string): Promise<{user: string; created: boolean; roles: {name: string; permissions: string[]}[]}> {
    checkName(name)
    const own = this.roles.ownNode(name)
    const ownPerms = rolePermissions(this.prefix).ownNode(name)
    await this.requireRole(this.roles.node)
    await this.ensureRole(own, ownPerms)
    const created = await this.ensureUser(name)
    await this.etcd.user(name).addRole(this.roles.node)
    await this.etcd.user(name).addRole(own)
    return {
      user: name,
      created,
      roles: [
        {name: this.roles.node, permissions: rolePermissions(this.prefix).node.map(describePermission)},
        {name: own, permissions: ownPerms.map(describePermission)},
      ],
    }
  }

  /** etcd user `name` for an operator, with the fleet's operator role. */
  async operatorUser(name: string): Promise<{user: string; created: boolean; roles: {name: string; permissions: string[]}[]}> {
    checkName(name)
    await this.requireRole(this.roles.operator)
    const created = await this.ensureUser(name)
    await this.etcd.user(name).addRole(this.roles.operator)
    return {user: name, created, roles: [{name: this.roles.operator, permissions: rolePermissions(this.prefix).operator.map(describePermission)}]}
  }

  private async ensureRole(name: string, perms: IPermissionRequest[]): Promise<void> {
    await this.etcd
      .role(name)
      .create()
      .catch((e: unknown) => {
        if (!(e instanceof EtcdRoleExistsError)) throw e
      })
    await this.etcd.role(name).grant(perms)
  }

  private async requireRole(name: string): Promise<void> {
    const roles = await this.etcd.getRoles()
    if (!roles.some((r) => r.name === name)) throw new FleetAdminError(`etcd has no role ${name}: run \`agent fleet init\` for fleet ${this.prefix} first`)
  }

  /** Creates a password-less user; false if it existed already. */
  private async ensureUser(name: string): Promise<boolean> {
    try {
      await this.etcd.auth.userAdd({name, options: {no_password: true}})
      return true
    } catch (e) {
      if (e instanceof EtcdUserExistsError) return false
      throw e
    }
  }
}

/** "readwrite /agent/fleet/ (prefix)" for an output line or JSON. */
export function describePermission(p: IPermissionRequest): string {
  const perm = p.permission.toLowerCase()
  if ('key' in p) return `${perm} ${p.key.toString()}`
  return `${perm} ${p.range.start.toString()} (prefix)`
}

/** Each endpoint asked on its own: whether it answers, its member id, whether it leads, its revision. */
export async function memberStatus(access: EtcdAccess, timeoutMs: number): Promise<MemberStatus[]> {
  return Promise.all(
    access.endpoints.map(async (endpoint): Promise<MemberStatus> => {
      const one = connectEtcd({...access, endpoints: [endpoint]})
      try {
        const s = await withTimeout(one.maintenance.status(), timeoutMs, `no answer within ${timeoutMs} ms`)
        return {
          endpoint,
          reachable: true,
          memberId: s.header.member_id,
          leader: s.header.member_id === s.leader,
          version: s.version,
          revision: s.header.revision,
          raftTerm: s.header.raft_term,
          dbSize: Number(s.dbSize),
          ...(s.errors?.length ? {errors: s.errors} : {}),
        }
      } catch (e) {
        return {endpoint, reachable: false, error: (e as Error).message.split('\n')[0]}
      } finally {
        one.close()
      }
    }),
  )
}

export function withTimeout<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(message)), ms)
  })
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer))
}
