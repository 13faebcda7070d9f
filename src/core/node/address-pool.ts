/**
 * Which tunnel address each client gets, while the roster changes under a running node.
 *
 * - A listed client with a static address always gets that address.
 * - Every other client gets a pool address and keeps it (a lease by name) across reconnects,
 *   so its flows and the game server's view of it survive a reconnect.
 * - Listed clients without a static address are leased in list order when the list is set,
 *   and a client admitted by `any` gets the first free address from a slot derived from its
 *   name: both give the same address after a node restart, whoever connects first.
 * - When the pool is full, the lease of a client that is not connected, least recently used
 *   first, goes to the newcomer; a connected client's address is never taken.
 *
 * Changing the statics (a reload) may take an address leased to someone else: that lease is
 * dropped, and current() tells the holder's session it must move.
 */
import {createHash} from 'node:crypto'
import {formatIpv4, ipv4ToNumber} from '../net/ipv4.js'

export interface PoolRange {
  /** Inclusive. */
  start: number
  end: number
}

export class AddressPool {
  private readonly size: number
  /** name -> static address (as a number). */
  private statics = new Map<string, number>()
  private readonly staticAddresses = new Set<number>()
  /** name -> leased pool address; Map order is least recently used first. */
  private readonly leases = new Map<string, number>()
  /** leased address -> name. */
  private readonly holders = new Map<number, string>()

  /** `inUse(name)`: whether that client is connected now (its lease cannot be taken). */
  constructor(
    private readonly nodeAddress: number,
    private readonly range: PoolRange,
    private readonly inUse: (name: string) => boolean,
  ) {
    this.size = range.end - range.start + 1
  }

  /**
   * Sets the listed clients: their static addresses, and leases in list order for those
   * without one that have none yet. A lease on an address that became someone's static is
   * dropped (its holder must move: current() no longer gives it).
   */
  setListed(clients: readonly {name: string; address?: string}[]): void {
    this.statics = new Map(clients.filter((c) => c.address !== undefined).map((c) => [c.name, ipv4ToNumber(c.address!)]))
    this.staticAddresses.clear()
    for (const a of this.statics.values()) this.staticAddresses.add(a)
    for (const [name, address] of [...this.leases]) {
      if (this.staticAddresses.has(address) || this.statics.has(name)) this.drop(name)
    }
    let next = this.range.start
    for (const c of clients) {
      if (c.address !== undefined || this.leases.has(c.name)) continue
      while (next <= this.range.end && !this.isFree(next)) next++
      // A pool too small for every listed client: the rest are leased on connect (reclaiming).
      if (next > this.range.end) break
      this.grant(c.name, next)
    }
  }

  /** The client's address now (static or lease), without allocating; undefined if it has none. */
  current(name: string): string | undefined {
    const a = this.statics.get(name) ?? this.leases.get(name)
    return a === undefined ? undefined : formatIpv4(a)
  }

  /** The client's address, leasing one if it has none; undefined when the pool has no room. */
  assign(name: string): string | undefined {
    const fixed = this.statics.get(name)
    if (fixed !== undefined) return formatIpv4(fixed)
    const leased = this.leases.get(name)
    if (leased !== undefined) {
      // Most recently used last.
      this.leases.delete(name)
      this.leases.set(name, leased)
      return formatIpv4(leased)
    }
    const free = this.findFree(name) ?? this.reclaim()
    if (free === undefined) return undefined
    this.grant(name, free)
    return formatIpv4(free)
  }

  get leased(): number {
    return this.leases.size
  }

  /** First free address from the name's slot on, wrapping around. */
  private findFree(name: string): number | undefined {
    const slot = createHash('sha256').update(name).digest().readUInt32BE(0) % this.size
    for (let i = 0; i < this.size; i++) {
      const a = this.range.start + ((slot + i) % this.size)
      if (this.isFree(a)) return a
    }
    return undefined
  }

  /** The least recently used lease whose holder is not connected, taken back. */
  private reclaim(): number | undefined {
    for (const [name, address] of this.leases) {
      if (this.inUse(name)) continue
      this.drop(name)
      return address
    }
    return undefined
  }

  private isFree(a: number): boolean {
    return a !== this.nodeAddress && !this.staticAddresses.has(a) && !this.holders.has(a)
  }

  private grant(name: string, a: number): void {
    this.leases.set(name, a)
    this.holders.set(a, name)
  }

  private drop(name: string): void {
    const a = this.leases.get(name)
    if (a === undefined) return
    this.leases.delete(name)
    this.holders.delete(a)
  }
}
