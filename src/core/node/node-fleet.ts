/**
 * A node's part in a fleet (the config's `fleet:`): the fleet's roster from etcd handed to the
 * roster as one more source, this node's registry entry kept under a lease, and the other nodes
 * its clients may go to. NodeAgent sees only this small interface; etcd stays in src/core/fleet.
 */
import type {Etcd3} from 'etcd3'
import type {ResolvedFleetConfig} from '../config/types.js'
import type {FleetPeer} from '../control/messages.js'
import type {Logger} from '../log.js'
import {connectEtcd} from '../fleet/connect.js'
import {FleetWatch, type FleetStatus, type FleetView} from '../fleet/fleet-watch.js'
import {fleetKeys, type NodeRecord} from '../fleet/layout.js'
import {NodeRegistration} from '../fleet/registration.js'
import {cidrContains, parseCidr, parseIpv4} from '../net/ipv4.js'
import type {FleetRosterPart, RosterEntry} from './roster.js'

/** What the node tells the registry at each heartbeat, besides what NodeFleet knows itself. */
export interface NodeFigures {
  sessions: number
  /** Bytes received and sent since start, all clients. */
  rxBytes: number
  txBytes: number
  problems: string[]
}

export interface NodeFleetOptions {
  config: ResolvedFleetConfig
  name: string
  version: string
  transport: string
  /** The control port; and the carrier's, for datagram transports (told to clients as is). */
  controlPort: number
  carrier?: string
  /** The node's tunnel subnet and own address: a fleet entry's static address must fit them. */
  subnet: string
  nodeAddress: string
  log: Logger
  /** The fleet's roster changed (at start, and at every change after). */
  apply(part: FleetRosterPart): void
  figures(): NodeFigures
}

export class NodeFleet {
  private readonly etcd: Etcd3
  private readonly watch: FleetWatch
  private registration: NodeRegistration | null = null
  private readonly startedAt = new Date().toISOString()
  private last: {at: number; rx: number; tx: number} | null = null
  /** Names whose fleet address this node cannot use, said once each. */
  private readonly warned = new Set<string>()

  constructor(private readonly o: NodeFleetOptions) {
    this.etcd = connectEtcd(o.config)
    this.watch = new FleetWatch(this.etcd, fleetKeys(o.config.prefix), o.log, (view) => o.apply(this.rosterPart(view)))
  }

  /** Lists the fleet and watches it (see FleetWatch.start for an unreachable etcd). */
  async start(): Promise<void> {
    await this.watch.start(this.o.config.unreachable)
  }

  /** Once the node serves: its registry entry, from now until close. */
  register(): void {
    if (this.o.config.advertise === undefined) {
      this.o.log.warn('fleet: not registering this node: listen.address is 0.0.0.0 and fleet.advertise is not set, so clients would not know where to reach it', {
        event: 'fleet.registry.skipped',
      })
      return
    }
    this.registration = new NodeRegistration(this.etcd, fleetKeys(this.o.config.prefix), this.o.name, () => this.record(), this.o.log)
    this.registration.start()
  }

  /** Other nodes of the fleet that serve this node's transport, for a client's welcome. */
  peers(): FleetPeer[] {
    const out: FleetPeer[] = []
    for (const n of this.watch.current.nodes.values()) {
      if (n.name === this.o.name || n.transport !== this.o.transport) continue
      const at = /^(.*):(\d+)$/.exec(n.endpoints.control)
      if (at !== null) out.push({name: n.name, host: at[1], port: Number(at[2])})
    }
    return out.sort((a, b) => a.name.localeCompare(b.name))
  }

  status(): FleetStatus & {prefix: string; registered: boolean} {
    return {...this.watch.status(), prefix: this.o.config.prefix, registered: this.registration !== null}
  }

  async close(): Promise<void> {
    this.watch.close()
    await this.registration?.close()
    this.etcd.close()
  }

  /** The fleet's clients as this node can use them: a static address outside its subnet is dropped (the client gets a pool address). */
  private rosterPart(view: FleetView): FleetRosterPart {
    const subnet = parseCidr(this.o.subnet)!
    const own = parseIpv4(this.o.nodeAddress)
    const listed: RosterEntry[] = []
    for (const e of view.roster.clients.values()) {
      if (e.address === undefined) {
        listed.push(e)
        continue
      }
      const a = parseIpv4(e.address)
      if (a !== undefined && a !== own && cidrContains(subnet, a)) {
        listed.push(e)
        continue
      }
      if (!this.warned.has(e.name)) {
        this.o.log.warn(`fleet: client ${e.name}'s address ${e.address} is not one of this node's (${this.o.subnet}); it gets one from the pool here`, {
          event: 'fleet.address.foreign',
          peer: e.name,
          address: e.address,
        })
      }
      this.warned.add(e.name)
      listed.push({name: e.name, ...(e.fingerprint === undefined ? {} : {fingerprint: e.fingerprint})})
    }
    return {listed, revokedNames: view.roster.revokedNames, revokedSerials: view.roster.revokedSerials}
  }

  private record(): NodeRecord {
    const f = this.o.figures()
    const now = Date.now()
    const last = this.last
    this.last = {at: now, rx: f.rxBytes, tx: f.txBytes}
    const seconds = last === null ? 0 : (now - last.at) / 1000
    const rate = (a: number, b: number) => (seconds > 0 ? Math.max(0, Math.round((a - b) / seconds)) : 0)
    const fleetState = this.watch.status().state
    const problems = [...f.problems, ...(fleetState === 'connected' ? [] : [`etcd ${fleetState}`])]
    const host = this.o.config.advertise!
    return {
      name: this.o.name,
      version: this.o.version,
      transport: this.o.transport,
      endpoints: {control: `${host}:${this.o.controlPort}`, ...(this.o.carrier === undefined ? {} : {carrier: this.o.carrier.replace('0.0.0.0', host)})},
      sessions: f.sessions,
      throughput: {rxBytesPerSecond: rate(f.rxBytes, last?.rx ?? 0), txBytesPerSecond: rate(f.txBytes, last?.tx ?? 0)},
      health: problems.length === 0 ? 'ok' : 'degraded',
      ...(problems.length === 0 ? {} : {problems}),
      startedAt: this.startedAt,
      heartbeatAt: new Date(now).toISOString(),
    }
  }
}
