/**
 * A node's entry in the fleet's registry: <prefix>/nodes/<name>, a NodeRecord written under a
 * lease of LEASE_TTL_S seconds and rewritten every HEARTBEAT_MS with fresh figures (sessions,
 * throughput, health). The lease is kept alive by etcd3 in between; a node that dies stops
 * keeping it, and etcd deletes the entry within the TTL. A clean stop revokes it at once.
 */
import type {Etcd3, Lease} from 'etcd3'
import type {Logger} from '../log.js'
import type {FleetKeys, NodeRecord} from './layout.js'
import {etcdErrorLine} from './errors.js'

export const LEASE_TTL_S = 10
export const HEARTBEAT_MS = 3_000

export class NodeRegistration {
  private lease: Lease | null = null
  private timer: NodeJS.Timeout | null = null
  private closed = false
  /** Whether the last write failed (so a recovery is said once, not each heartbeat). */
  private failing = false

  constructor(
    private readonly etcd: Etcd3,
    private readonly keys: FleetKeys,
    private readonly name: string,
    /** The record as it is now: called at each heartbeat. */
    private readonly record: () => NodeRecord,
    private readonly log: Logger,
  ) {}

  /** Writes the entry now and every heartbeat after; never throws (etcd may be down). */
  start(): void {
    void this.beat()
    this.timer = setInterval(() => void this.beat(), HEARTBEAT_MS)
    this.timer.unref()
  }

  /** Removes the entry (revokes its lease). */
  async close(): Promise<void> {
    this.closed = true
    if (this.timer !== null) clearInterval(this.timer)
    const lease = this.lease
    this.lease = null
    if (lease !== null) await lease.revoke().catch(() => lease.release())
  }

  private async beat(): Promise<void> {
    if (this.closed) return
    try {
      const lease = this.leaseNow()
      await lease.put(this.keys.node(this.name)).value(JSON.stringify(this.record()))
      if (this.failing) this.log.info('fleet: registered again', {event: 'fleet.registry.back'})
      this.failing = false
    } catch (e) {
      if (!this.failing) {
        this.log.warn(`fleet: cannot write this node's registry entry (${etcdErrorLine(e)}); retrying every ${HEARTBEAT_MS / 1000} s`, {
          event: 'fleet.registry.failing',
          reason: etcdErrorLine(e),
        })
      }
      this.failing = true
    }
  }

  /** The lease to write under; a lost one (etcd forgot it, or its TTL passed while unreachable) is replaced. */
  private leaseNow(): Lease {
    if (this.lease !== null && !this.lease.revoked()) return this.lease
    const lease = this.etcd.lease(LEASE_TTL_S, {autoKeepAlive: true})
    lease.on('lost', () => {
      if (this.lease === lease) this.lease = null
    })
    this.lease = lease
    return lease
  }
}
