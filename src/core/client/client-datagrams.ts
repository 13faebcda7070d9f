/**
 * The client's side of a datagram carrier: one socket for the agent's lifetime (so the NAT
 * keeps one mapping for it), datagrams taken only from the node's address and port, and the
 * keepalives that let the node learn and follow our public endpoint.
 *
 * After each welcome the client sends a keepalive at once and every second until the node
 * answers (the tunnel counts as up only then: it proves the datagram path, not just the TLS
 * connection), then one every keepalive interval, traffic or not.
 */
import type {CarrierSpec} from '../transport/contract.js'
import type {Logger} from '../log.js'
import type {DataPath} from '../device/datapath.js'
import type {Peer} from '../device/peer.js'
import {DatagramLink, SendQueue} from '../carrier/datagram-link.js'
import type {DatagramRing, DatagramSocket} from '../carrier/datagram.js'
import {openCarrierSocket} from '../carrier/carrier-socket.js'
import {KeepaliveKind} from '../nat/keepalive.js'
import {KeepaliveState} from '../nat/session-keepalive.js'

const PROBE_INTERVAL_MS = 1000
/** Unanswered probes after which the operator is told the datagram path seems blocked. */
const PROBES_BEFORE_WARNING = 5

export class ClientDatagrams {
  private readonly socket: DatagramSocket
  readonly queue: SendQueue
  readonly link: DatagramLink
  readonly counters = {foreignSource: 0}
  private peer: Peer | null = null
  private state: KeepaliveState | null = null
  private timer: NodeJS.Timeout | null = null
  private probes = 0
  /** Until the session is up: what the node's first answer calls. */
  private answered: (() => void) | null = null

  constructor(
    private readonly carrier: CarrierSpec,
    private readonly datapath: DataPath,
    mtu: number,
    private readonly log: Logger,
  ) {
    this.socket = openCarrierSocket(carrier, mtu, '0.0.0.0', 0)
    this.queue = new SendQueue(this.socket)
    this.link = new DatagramLink(this.queue)
    datapath.onKeepalive = this.onKeepalive
    datapath.enableFastPath(this.socket, mtu)
    this.socket.start(this.onBatch)
  }

  /** ms since epoch of the last keepalive the node answered in this session; 0 if none. */
  get lastAnswer(): number {
    return this.state?.lastVerified ?? 0
  }

  /** Whether this socket still fits what the node now says (a node reconfigured between sessions). */
  fits(carrier: CarrierSpec): boolean {
    return carrier.kind === this.carrier.kind && carrier.ipProtocol === this.carrier.ipProtocol && carrier.copyDfFromInner === this.carrier.copyDfFromInner
  }

  get local(): string {
    return this.carrier.kind === 'udp' ? `udp port ${this.socket.localPort}` : `ip protocol ${this.carrier.ipProtocol}`
  }

  /**
   * A new session over this socket, with the node at `nodeAddress` (another node than the last
   * one's, after a failover): probe until it answers, then `onUp` once.
   */
  begin(peer: Peer, carrier: CarrierSpec, nodeAddress: number, keys: {receive: Buffer; send: Buffer}, keepaliveSeconds: number, onUp: () => void): void {
    this.end()
    this.link.moveTo(nodeAddress, carrier.kind === 'udp' ? carrier.port! : 0)
    this.peer = peer
    this.state = new KeepaliveState(keys.receive, keys.send)
    this.probes = 0
    let up = false
    const tick = () => {
      const state = this.state
      if (state === null || this.peer === null) return
      if (!up && state.lastVerified > 0) {
        up = true
        this.answered = null
        onUp()
        this.schedule(tick, keepaliveSeconds * 1000)
        return
      }
      if (!up && ++this.probes === PROBES_BEFORE_WARNING) {
        this.log.warn(`no answer from the node over ${this.carrier.kind} to ${this.link.endpoint} yet: is it blocked on the way?`, {
          event: 'node.unanswered',
          endpoint: this.link.endpoint,
          carrier: this.carrier.kind,
        })
      }
      this.sendKeepalive()
      this.schedule(tick, up ? keepaliveSeconds * 1000 : PROBE_INTERVAL_MS)
    }
    // Up as soon as the node answers, not at the next tick: after a failover that is the
    // moment the client is back, and from when it watches the new node for silence.
    this.answered = () => {
      if (this.timer !== null) clearTimeout(this.timer)
      tick()
    }
    this.sendKeepalive()
    this.schedule(tick, PROBE_INTERVAL_MS / 4)
  }

  end(): void {
    this.answered = null
    if (this.timer !== null) clearTimeout(this.timer)
    this.timer = null
    this.peer = null
    this.state = null
  }

  close(): void {
    this.end()
    this.datapath.disableFastPath()
    this.socket.close()
  }

  private schedule(fn: () => void, ms: number): void {
    this.timer = setTimeout(fn, ms)
    this.timer.unref()
  }

  private sendKeepalive(): void {
    const peer = this.peer
    const state = this.state
    if (peer === null || state === null) return
    try {
      const k = state.build(peer.session, this.datapath.localAddress, peer.address, KeepaliveKind.Request)
      if (k !== null) this.socket.send(k.buf, k.span.offset, k.span.length, this.link.addr, this.link.port)
      else peer.stats.drop('encap')
    } catch {
      // Runs from a timer: a transport that throws must not take the client down.
      this.datapath.counters.transportErrors++
    }
  }

  private readonly onBatch = (count: number, ring: DatagramRing): void => {
    try {
      this.receiveBatch(count, ring)
    } catch {
      this.datapath.counters.transportErrors++
    }
  }

  private receiveBatch(count: number, ring: DatagramRing): void {
    const peer = this.peer
    const {buf, slotSize, headroom, lengths, addrs, ports} = ring
    for (let i = 0; i < count; i++) {
      if (!this.link.accepts(addrs[i], ports[i])) {
        this.counters.foreignSource++
        continue
      }
      // From the node, between two sessions: nothing to give it to.
      if (peer === null) continue
      this.datapath.receive(peer, buf, i * slotSize + headroom, lengths[i], addrs[i], ports[i])
    }
  }

  private readonly onKeepalive = (peer: Peer, buf: Buffer, offset: number): void => {
    if (this.state === null || !this.state.accept(buf, offset, KeepaliveKind.Reply)) {
      peer.stats.drop('authentication')
      return
    }
    peer.stats.lastSeen = Date.now()
    const answered = this.answered
    this.answered = null
    answered?.()
  }
}
