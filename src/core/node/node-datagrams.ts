/**
 * The node's side of a datagram carrier: one socket for every client, the session id on the
 * wire (GRE key, SPI) to find the session, and endpoint learning by authenticated keepalive.
 *
 *   datagram from addr:port -> transport.sessionIdOf -> peer -> DataPath.receive(.., addr, port)
 *     data:      accepted only from the peer's current endpoint
 *     keepalive: verified with the session's key; moves the endpoint, then is answered
 *
 * Transports with no id on the wire (IPIP) are found by endpoint instead; a payload from an
 * unknown endpoint goes to the session its inner source names, where only a keepalive that
 * verifies is accepted (and moves the session), so a spoofed inner source moves nothing.
 */
import type {CarrierSpec, Transport} from '../transport/contract.js'
import type {Logger} from '../log.js'
import type {DataPath} from '../device/datapath.js'
import type {Peer} from '../device/peer.js'
import {DatagramLink, SendQueue} from '../carrier/datagram-link.js'
import type {DatagramRing, DatagramSocket} from '../carrier/datagram.js'
import {openCarrierSocket} from '../carrier/carrier-socket.js'
import {laneFor} from '../carrier/datagram.js'
import {KeepaliveKind} from '../nat/keepalive.js'
import {KeepaliveState} from '../nat/session-keepalive.js'
import {ForeignBudget, SESSION_VERIFY_BURST, SESSION_VERIFY_PER_SECOND, TokenBucket} from '../nat/keepalive-budget.js'
import {ipv4Source} from '../net/packet.js'
import type {LinuxTunDevice, TunQueue} from '../tun/linux.js'
import {looksLikeProbe} from '../probe/probe-packet.js'

/** One number per endpoint: an IPv4 address and a port fit in 48 bits, a safe integer. */
function endpointKey(addr: number, port: number): number {
  return addr * 65536 + port
}

export class NodeDatagrams {
  private readonly byId = new Map<number, Peer>()
  /** The ids each peer is bound under, so all go when it does. */
  private readonly idsOf = new Map<Peer, Set<number>>()
  /** Sessions of id-less transports, by endpoint (address * 65536 + port). */
  private readonly byEndpoint = new Map<number, Peer>()
  private readonly inner = {offset: 0, length: 0}
  private readonly keepalives = new Map<Peer, KeepaliveState>()
  /** Keepalives from a session's own endpoint spend its budget; from elsewhere, the sender's. */
  private readonly budgets = new Map<Peer, TokenBucket>()
  private readonly foreign = new ForeignBudget()
  private readonly socket: DatagramSocket
  /** Each worker's socket (of the main one's SO_REUSEPORT group) and TUN queue. */
  private readonly workerSockets: DatagramSocket[] = []
  private readonly workerQueues: TunQueue[] = []
  readonly queue: SendQueue
  readonly counters = {unknownSession: 0, keepaliveForeignRate: 0}
  /**
   * Probes (probe-packet.ts) that reach this socket: the reply to send back, or null. A probe
   * comes from the client's probe socket, never its data socket, so the fast path, which takes
   * only a session's own endpoint, hands it here.
   */
  answerProbe: ((buf: Buffer, offset: number, length: number, source: number) => Buffer | null) | null = null

  constructor(
    private readonly carrier: CarrierSpec,
    private readonly transport: Transport,
    private readonly datapath: DataPath,
    listenAddress: string,
    private readonly mtu: number,
    private readonly log: Logger,
    /** Lanes to spread clients over (the main thread and lanes - 1 workers); udp only. */
    private readonly lanes = 1,
  ) {
    // SO_REUSEPORT would let this socket join another process's on the same port (say a second
    // node started by mistake) and share its clients in silence; a plain socket bound first
    // fails with "already in use" as it always did.
    if (lanes > 1 && (carrier.port ?? 0) !== 0) openCarrierSocket(carrier, mtu, listenAddress, carrier.port!).close()
    this.socket = openCarrierSocket(carrier, mtu, listenAddress, carrier.port ?? 0, lanes > 1)
    this.queue = new SendQueue(this.socket)
    datapath.onKeepalive = this.onKeepalive
    datapath.enableFastPath(this.socket, mtu)
  }

  get listening(): string {
    return this.carrier.kind === 'udp'
      ? `udp ${this.socket.localAddress}:${this.socket.localPort}`
      : `ip protocol ${this.carrier.ipProtocol}`
  }

  start(): void {
    this.socket.start(this.onBatch)
  }

  /**
   * Once the socket and the TUN device have started: the worker threads, each with a socket on
   * the same port and a queue of `tun`, and the kernel told to steer each client endpoint to
   * one of them. Returns the lanes that now carry packets (1: only this thread).
   */
  startWorkers(tun: LinuxTunDevice, onError: (err: Error) => void, required: boolean): number {
    if (this.lanes <= 1 || !this.datapath.hasFastPath()) return 1
    try {
      for (let i = 1; i < this.lanes; i++) {
        const socket = openCarrierSocket(this.carrier, this.mtu, this.socket.localAddress, this.socket.localPort, true)
        this.workerSockets.push(socket)
        const queue = tun.openQueue()
        this.workerQueues.push(queue)
        this.datapath.addWorker(queue, socket, onError)
      }
      // Last: until every worker reads its socket, the kernel's own hash sends clients to all.
      this.socket.steer!(this.lanes)
      return this.lanes
    } catch (e) {
      // Asked for by number: the start fails (teardown closes what was opened). By default
      // ("auto"), a host that cannot have workers (a restricted kernel or container) runs on
      // one thread as before: closing a worker's socket or queue stops every worker first.
      if (required) throw e
      this.closeWorkers()
      this.log.warn(`workers: running 1, could not start more: ${(e as Error).message}`, {event: 'workers.fewer', workers: 1, reason: (e as Error).message})
      return 1
    }
  }

  private closeWorkers(): void {
    for (const s of this.workerSockets.splice(0)) s.close()
    for (const q of this.workerQueues.splice(0)) q.close()
  }

  /** The lane (0: the main thread) a client at addr:port is steered to, while workers run. */
  laneOf(addr: number, port: number): number | undefined {
    return this.workerSockets.length === 0 || addr === 0 ? undefined : laneFor(addr, port, this.lanes)
  }

  /** A link for a new session; its endpoint is learned from the client's first keepalive. */
  newLink(): DatagramLink {
    return new DatagramLink(this.queue)
  }

  /** A client's session is open: its datagrams are found by its session id from now on. */
  attach(peer: Peer, keys: {receive: Buffer; send: Buffer}): void {
    const id = peer.session.id
    if (this.transport.sessionIdOf !== undefined) {
      if (id === undefined) throw new Error(`transport "${this.transport.name}" gave the session no id to find it by`)
      this.bindId(id, peer)
    } else if (this.transport.innerOf === undefined) {
      throw new Error(`transport "${this.transport.name}" has neither session ids nor innerOf: its datagrams cannot be placed`)
    }
    this.keepalives.set(peer, new KeepaliveState(keys.receive, keys.send))
    this.budgets.set(peer, new TokenBucket(SESSION_VERIFY_PER_SECOND, SESSION_VERIFY_BURST))
  }

  /** What the client is told in its welcome: where to send. */
  get spec(): CarrierSpec {
    return this.carrier.kind === 'udp' ? {kind: 'udp', port: this.socket.localPort} : this.carrier
  }

  /** Datagrams with this id belong to `peer` (its first id, or a new SA's SPI during a rekey). */
  bindId(id: number, peer: Peer): void {
    if (this.transport.sessionIdOf === undefined) return
    const other = this.byId.get(id)
    if (other !== undefined && other !== peer) throw new Error(`session id ${id} is bound to ${other.name} already`)
    this.byId.set(id, peer)
    let ids = this.idsOf.get(peer)
    if (ids === undefined) this.idsOf.set(peer, (ids = new Set()))
    ids.add(id)
  }

  unbindId(id: number, peer: Peer): void {
    if (this.byId.get(id) === peer) this.byId.delete(id)
    this.idsOf.get(peer)?.delete(id)
  }

  detach(peer: Peer): void {
    // Every id it was bound under, not just its id now: a session may have rekeyed.
    for (const id of this.idsOf.get(peer) ?? []) if (this.byId.get(id) === peer) this.byId.delete(id)
    this.idsOf.delete(peer)
    const link = peer.link as DatagramLink
    const at = endpointKey(link.addr, link.port)
    if (this.byEndpoint.get(at) === peer) this.byEndpoint.delete(at)
    this.keepalives.delete(peer)
    this.budgets.delete(peer)
  }

  close(): void {
    this.datapath.disableFastPath() // joins the workers before their descriptors close
    this.closeWorkers()
    this.socket.close()
  }

  private readonly onBatch = (count: number, ring: DatagramRing): void => {
    const {buf, slotSize, headroom, lengths, addrs, ports} = ring
    const idOf = this.transport.sessionIdOf
    for (let i = 0; i < count; i++) {
      const off = i * slotSize + headroom
      const len = lengths[i]
      if (this.answerProbe !== null && looksLikeProbe(buf, off, len)) {
        const reply = this.answerProbe(buf, off, len, addrs[i])
        if (reply !== null) this.socket.send(reply, 0, reply.length, addrs[i], ports[i])
        continue
      }
      let peer: Peer | undefined
      if (idOf !== undefined) {
        const id = idOf(buf, off, len)
        peer = id === undefined ? undefined : this.byId.get(id)
      } else {
        // The endpoint's session, unless the inner source names another: after a NAT hands a
        // port from one client to another, the newcomer's keepalive must reach its own session
        // (where it can verify and move it), not the one that held the port before.
        const atEndpoint = this.byEndpoint.get(endpointKey(addrs[i], ports[i]))
        const named = this.byInnerSource(buf, off, len)
        peer = named ?? atEndpoint
      }
      if (peer === undefined) {
        this.counters.unknownSession++
        continue
      }
      try {
        this.datapath.receive(peer, buf, off, len, addrs[i], ports[i])
      } catch {
        // Hostile input must never take the node down, nor cost other clients their packets:
        // a transport that throws loses this one datagram.
        this.datapath.counters.transportErrors++
      }
    }
  }

  /** Id-less transports, unknown endpoint: the session the inner source names, if any. */
  private byInnerSource(buf: Buffer, offset: number, length: number): Peer | undefined {
    const inner = this.inner
    if (!this.transport.innerOf!(buf, offset, length, inner) || inner.length < 20) return undefined
    return this.datapath.peerAt(ipv4Source(buf, inner.offset))
  }

  private readonly onKeepalive = (peer: Peer, buf: Buffer, offset: number, addr: number, port: number): void => {
    const state = this.keepalives.get(peer)
    const link = peer.link as DatagramLink
    const now = Date.now()
    const fromItsEndpoint = link.accepts(addr, port)
    if (fromItsEndpoint ? this.budgets.get(peer)?.take(now) === false : !this.foreign.take(addr, now)) {
      // From elsewhere it is the sender's budget that ran out, not the session's doing.
      if (fromItsEndpoint) peer.stats.drop('keepalive-rate')
      else this.counters.keepaliveForeignRate++
      return
    }
    if (state === undefined || !state.accept(buf, offset, KeepaliveKind.Request)) {
      peer.stats.drop('authentication')
      return
    }
    peer.stats.lastSeen = now
    if (!fromItsEndpoint) {
      const was = link.addr === 0 ? null : link.endpoint
      const old = endpointKey(link.addr, link.port)
      if (this.byEndpoint.get(old) === peer) this.byEndpoint.delete(old)
      link.moveTo(addr, port)
      // Id-less transports find the session by endpoint; a client that moved where another
      // session was (a NAT reusing a port) takes the place over: its keepalive proved it. The
      // other session forgets that endpoint, or its replies would go to this client, until its
      // own next keepalive says where it is now.
      if (this.transport.sessionIdOf === undefined) {
        const key = endpointKey(addr, port)
        const previous = this.byEndpoint.get(key)
        if (previous !== undefined && previous !== peer) {
          const pl = previous.link as DatagramLink
          pl.moveTo(0, 0)
          this.log.warn(`client ${previous.name} lost endpoint ${link.endpoint} to ${peer.name}; waiting for its next keepalive`, {
            event: 'client.endpoint_lost',
            peer: previous.name,
            endpoint: link.endpoint,
            to: peer.name,
          })
        }
        this.byEndpoint.set(key, peer)
      }
      this.log.info(`client ${peer.name} ${was === null ? 'reached us from' : `moved from ${was} to`} ${link.endpoint}`, {
        event: 'client.endpoint',
        peer: peer.name,
        endpoint: link.endpoint,
        from: was,
      })
    }
    const reply = state.build(peer.session, this.datapath.localAddress, peer.address, KeepaliveKind.Reply)
    if (reply !== null) this.socket.send(reply.buf, reply.span.offset, reply.span.length, addr, port)
  }
}
