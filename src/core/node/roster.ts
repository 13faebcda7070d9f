/**
 * Who may use the node. The TLS layer has already proven that a client holds a certificate of
 * the fleet's CA; the roster decides whether that certificate's holder is admitted: a listed
 * client (by name, and by fingerprint where the entry pins one), or anyone when the roster
 * admits any certificate of the CA, and in both cases not a revoked certificate.
 *
 * Its parts come from sources that each replace their own part: the node's config (the list
 * and `any`), its CRL (revoked serials), and the fleet's roster in etcd (clients, revoked names
 * and serials). They merge so that any source can revoke and either can list, and the node's own
 * file wins where both list a name (docs/fleet.md). Every change is announced to subscribers,
 * which re-check the sessions they hold: a change costs one check per live session, never a
 * restart.
 */

/** What a client's certificate says about it, as the node sees it after the handshake. */
export interface ClientIdentity {
  /** The certificate's common name. */
  name: string
  /** Its serial number, normalized as the revocation list normalizes them (see serialKey). */
  serial: string
  /** "sha256:AB:CD:..." over the DER. */
  fingerprint: string
}

/** A client the roster lists by name. */
export interface RosterEntry {
  name: string
  /** Static tunnel address. */
  address?: string
  /** "sha256:AB:CD:..." (canonical: upper-case hex pairs), when pinned. */
  fingerprint?: string
}

export interface RosterPolicy {
  listed: readonly RosterEntry[]
  /** Any certificate of the CA is admitted, listed or not. */
  any: boolean
}

export type RosterVerdict = {ok: true; name: string; entry?: RosterEntry} | {ok: false; reason: string}

/** The fleet's part (src/core/fleet): its clients and what it revokes. */
export interface FleetRosterPart {
  listed: readonly RosterEntry[]
  revokedNames: ReadonlySet<string>
  revokedSerials: ReadonlySet<string>
}

/** What one update changed; empty sets when nothing did. */
export interface RosterChange {
  /** Names added to, removed from, or changed in the list. */
  names: ReadonlySet<string>
  /** Whether `any` was turned on or off. */
  any: boolean
  /** Serials newly revoked. */
  revoked: ReadonlySet<string>
}

export class Roster {
  /** The merged list: the fleet's entries, then the config's over them. */
  private listed = new Map<string, RosterEntry>()
  private configListed = new Map<string, RosterEntry>()
  private fleet: FleetRosterPart | null = null
  private anyCertificate = false
  private crlSerials: ReadonlySet<string> = new Set()
  private readonly listeners = new Set<(change: RosterChange) => void>()

  constructor(policy: RosterPolicy, revoked: ReadonlySet<string> = new Set()) {
    this.configListed = byName(policy.listed)
    this.listed = this.merge()
    this.anyCertificate = policy.any
    this.crlSerials = revoked
  }

  /** Whether this certificate's holder may connect now, and if so its entry. */
  check(id: ClientIdentity): RosterVerdict {
    if (id.name === '') return {ok: false, reason: 'certificate has no common name'}
    if (this.crlSerials.has(id.serial) || this.fleet?.revokedSerials.has(id.serial)) return {ok: false, reason: `certificate ${id.serial} of "${id.name}" is revoked`}
    if (this.fleet?.revokedNames.has(id.name)) return {ok: false, reason: `client "${id.name}" is revoked in the fleet`}
    const entry = this.listed.get(id.name)
    if (entry === undefined) {
      if (this.anyCertificate) return {ok: true, name: id.name}
      return {ok: false, reason: `client "${id.name}" is not in this node's authorized clients`}
    }
    if (entry.fingerprint !== undefined && entry.fingerprint !== id.fingerprint) {
      return {ok: false, reason: `client "${id.name}" presented certificate ${id.fingerprint}, which is not the pinned ${entry.fingerprint}`}
    }
    return {ok: true, name: id.name, entry}
  }

  entry(name: string): RosterEntry | undefined {
    return this.listed.get(name)
  }

  /** The listed clients, in the order the source gave them. */
  get entries(): readonly RosterEntry[] {
    return [...this.listed.values()]
  }

  get admitsAny(): boolean {
    return this.anyCertificate
  }

  /** Revocations in force: serials (CRL and fleet) and names (fleet). */
  get revokedCount(): number {
    return this.crlSerials.size + (this.fleet === null ? 0 : this.fleet.revokedSerials.size + this.fleet.revokedNames.size)
  }

  /** Clients the fleet lists (before the config's entries are laid over them). */
  get fleetListed(): number {
    return this.fleet?.listed.length ?? 0
  }

  /** Replaces the config's list and `any`; announces what changed. */
  setPolicy(policy: RosterPolicy): RosterChange {
    this.configListed = byName(policy.listed)
    const change = {names: this.relist(), any: policy.any !== this.anyCertificate, revoked: new Set<string>()}
    this.anyCertificate = policy.any
    return this.announce(change)
  }

  /** Replaces the CRL's revoked serials; announces the newly revoked ones. */
  setRevoked(serials: ReadonlySet<string>): RosterChange {
    const added = new Set([...serials].filter((s) => !this.crlSerials.has(s)))
    this.crlSerials = serials
    return this.announce({names: new Set(), any: false, revoked: added})
  }

  /** Replaces the fleet's part (null: none); announces the names it changed or revoked and the serials it revoked. */
  setFleet(part: FleetRosterPart | null): RosterChange {
    const was = this.fleet
    this.fleet = part === null ? null : {listed: part.listed, revokedNames: new Set(part.revokedNames), revokedSerials: new Set(part.revokedSerials)}
    const names = this.relist()
    for (const n of this.fleet?.revokedNames ?? []) if (!was?.revokedNames.has(n)) names.add(n)
    for (const n of was?.revokedNames ?? []) if (!this.fleet?.revokedNames.has(n)) names.add(n)
    const revoked = new Set([...(this.fleet?.revokedSerials ?? [])].filter((x) => !was?.revokedSerials.has(x)))
    return this.announce({names, any: false, revoked})
  }

  /** Names that differ between the merged lists before and after a source changed. */
  private relist(): Set<string> {
    const next = this.merge()
    const names = new Set<string>()
    for (const [name, e] of next) if (!sameEntry(this.listed.get(name), e)) names.add(name)
    for (const name of this.listed.keys()) if (!next.has(name)) names.add(name)
    this.listed = next
    return names
  }

  private merge(): Map<string, RosterEntry> {
    if (this.fleet === null || this.fleet.listed.length === 0) return new Map(this.configListed)
    const merged = byName(this.fleet.listed)
    for (const [name, e] of this.configListed) merged.set(name, e)
    return merged
  }

  /** Calls `listener` after every change; returns the unsubscribe function. */
  subscribe(listener: (change: RosterChange) => void): () => void {
    this.listeners.add(listener)
    return () => this.listeners.delete(listener)
  }

  private announce(change: RosterChange): RosterChange {
    if (isEmpty(change)) return change
    for (const l of this.listeners) l(change)
    return change
  }
}

function isEmpty(change: RosterChange): boolean {
  return change.names.size === 0 && !change.any && change.revoked.size === 0
}

function byName(entries: readonly RosterEntry[]): Map<string, RosterEntry> {
  return new Map(entries.map((e) => [e.name, {...e}]))
}

function sameEntry(a: RosterEntry | undefined, b: RosterEntry): boolean {
  return a !== undefined && a.address === b.address && a.fingerprint === b.fingerprint
}
