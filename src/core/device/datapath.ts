/**
 * The data path, both directions, for the node and the client alike:
 *
 *   TUN batch -> route by inner destination -> session.encap -> peer link (coalesced) -> flush
 *   carrier payload -> session.decap -> check inner source -> TUN
 *
 * The node has many peers keyed by tunnel address; a client has one peer (the node) that
 * every packet goes to. Both share this code; only the lookup differs.
 *
 * With a datagram carrier, the native fast path (fast-path.ts) carries the common packets of
 * peers whose session declares a FastCodec before they would reach this code; this class keeps
 * its table in step with the peers and their endpoints. What reaches the code below is then
 * the unusual rest (keepalives, unknown senders, malformed input) and every packet of sessions
 * without a FastCodec: this stays the reference for what is accepted.
 */
import type {PacketRing, TunDevice} from '../tun/device.js'
import type {TunQueue} from '../tun/linux.js'
import {checkIpv4, ipv4Destination, ipv4Source} from '../net/packet.js'
import {isKeepalive} from '../nat/keepalive.js'
import type {Peer} from './peer.js'
import type {Drop} from '../transport/contract.js'
import type {DatagramSocket} from '../carrier/datagram-types.js'
import {DatagramLink} from '../carrier/datagram-link.js'
import {NativeStreamLink} from '../carrier/native-stream.js'
import {FastPath, type FastPathStats, type LaneStats} from './fast-path.js'

/**
 * Handles an authenticated keepalive (see nat/keepalive.ts) that arrived from `peer` via
 * addr:port: verifies it, may move the peer's endpoint, answers it.
 */
export type KeepaliveHandler = (peer: Peer, buf: Buffer, offset: number, addr: number, port: number) => void

export interface DataPathCounters {
  /** Packets read from the TUN that had no peer to go to. */
  noPeer: number
  /** Packets read from the TUN that were not well-formed IPv4. */
  badTunPacket: number
  /** Packets the kernel refused on TUN write (queue full). */
  tunWriteDrops: number
  /** Batches cut short because a transport's encap or decap threw. */
  transportErrors: number
}

/** Packets, bytes and drops of every peer the data path has carried, gone ones included. */
export interface TrafficTotals {
  rxPackets: number
  rxBytes: number
  txPackets: number
  txBytes: number
  /** Peers' drops by reason (DropCounter). */
  drops: Record<string, number>
}

export class DataPath {
  readonly counters: DataPathCounters = {noPeer: 0, badTunPacket: 0, tunWriteDrops: 0, transportErrors: 0}
  /**
   * What peers that left had counted: totals (and the metrics read from them) never go back
   * when a client disconnects.
   */
  private readonly departed: TrafficTotals = {rxPackets: 0, rxBytes: 0, txPackets: 0, txBytes: 0, drops: Object.create(null)}
  private readonly byAddress = new Map<number, Peer>()
  /** The only peer, when there is exactly one (a client's node): no lookup per packet. */
  private single: Peer | undefined = undefined
  private fast: FastPath | null = null
  /**
   * What the fast paths that closed had counted (a client that changed carrier or socket opens
   * a new one, counting from 0): fastPathTotals() goes on from there, so counters exported as
   * totals never go back. Null until one closed.
   */
  private closedFast: FastPathStats | null = null
  /** Peers that got payloads in the current batch and need a flush. */
  private readonly dirty: Peer[] = []

  /**
   * @param role on a client every packet goes to the single peer; on the node the inner
   * destination picks the peer, and a client may only send from its own address.
   */
  /** Keepalives are inner packets addressed to this end's own tunnel address. */
  localAddress = 0
  onKeepalive: KeepaliveHandler | null = null
  /** Told when a transport threw on a packet (peer null: outside any transport's call). */
  onTransportError: ((peer: Peer | null, err: unknown) => void) | null = null

  constructor(
    private readonly tun: TunDevice,
    private readonly role: 'node' | 'client',
  ) {}

  start(): void {
    this.tun.start(this.onTunBatch)
  }

  addPeer(peer: Peer): void {
    const was = this.byAddress.get(peer.address)
    if (was !== undefined && was !== peer) {
      this.unfast(was)
      addStats(this.departed, was)
    }
    this.byAddress.set(peer.address, peer)
    this.single = this.byAddress.size === 1 ? peer : undefined
    this.refast(peer)
  }

  removePeer(peer: Peer): void {
    if (this.byAddress.get(peer.address) === peer) {
      this.unfast(peer)
      this.byAddress.delete(peer.address)
      addStats(this.departed, peer)
    }
    this.single = this.byAddress.size === 1 ? this.byAddress.values().next().value : undefined
  }

  /**
   * Lets the native fast path carry, between the TUN device and `socket`, the peers whose
   * sessions allow it (now and as they come). Without our addon behind both, nothing changes.
   */
  enableFastPath(socket: DatagramSocket | null, mtu: number): void {
    this.disableFastPath()
    this.fast = FastPath.open(this.role, mtu, this.tun, socket)
    for (const peer of this.byAddress.values()) this.refast(peer)
  }

  /** Everything through JavaScript again (the socket is about to close). */
  disableFastPath(): void {
    const fast = this.fast
    if (fast === null) return
    for (const peer of this.byAddress.values()) this.unfast(peer)
    this.fast = null
    // Its last counts, before its handle goes.
    this.closedFast = addFastStats(this.closedFast, {...fast.stats(), sessions: 0})
    fast.close()
  }

  /** See FastPath.addWorker (workers are part of the fast path: check hasFastPath first). */
  addWorker(queue: TunQueue, socket: DatagramSocket, onError: (err: Error) => void): void {
    if (this.fast === null) throw new Error('a worker needs the native fast path, which is off')
    this.fast.addWorker(queue, socket, onError)
  }

  hasFastPath(): boolean {
    return this.fast !== null
  }

  /** The open fast path's own counters (since it opened), or null without one. */
  fastPathStats(): FastPathStats | null {
    return this.fast?.stats() ?? null
  }

  /**
   * The fast paths' counters since start: the open one's plus those of every one that closed,
   * lane by lane (sessions: the open one's table, 0 without one). Null if none ever opened.
   */
  fastPathTotals(): FastPathStats | null {
    const open = this.fastPathStats()
    if (this.closedFast === null) return open
    return open === null ? addFastStats(this.closedFast, null) : addFastStats(this.closedFast, open)
  }

  /** The session of `peer` says its fastPath changed (a rekey): the table follows. */
  refreshFastPath(peer: Peer): void {
    if (this.byAddress.get(peer.address) === peer) this.refast(peer)
  }

  /** Puts `peer` in the fast path's table as it is now (endpoint included), if it can go there. */
  private refast(peer: Peer): void {
    const fast = this.fast
    const link = peer.link
    if (fast === null) return
    const codec = peer.session.fastPath
    if (link instanceof NativeStreamLink) {
      // The stream carries frames as they are: only a session whose encap is identity can skip JS.
      if (codec?.kind !== 'identity') return this.unfast(peer)
      fast.setStream(peer.address, link.stream)
      peer.stats.sync = () => fast.take(peer.address, peer.stats)
      return
    }
    if (!(link instanceof DatagramLink)) return
    if (codec === undefined) {
      this.unfast(peer)
      return
    }
    fast.set(peer.address, codec, link.addr, link.port)
    link.onMove = () => {
      if (this.byAddress.get(peer.address) === peer && this.fast === fast) this.refast(peer)
    }
    peer.stats.sync = () => fast.take(peer.address, peer.stats)
  }

  private unfast(peer: Peer): void {
    if (peer.stats.sync === null) return
    peer.stats.sync()
    peer.stats.sync = null
    this.fast?.remove(peer.address)
  }

  /**
   * Every peer's counts, present and departed, summed (the fast path's folded in first). Read
   * when asked (status, a scrape): nothing is counted twice on the packet path.
   */
  totals(): TrafficTotals {
    const t: TrafficTotals = {...this.departed, drops: {...this.departed.drops}}
    for (const peer of this.byAddress.values()) {
      peer.stats.sync?.()
      addStats(t, peer)
    }
    return t
  }

  /** The peer whose tunnel address this is. */
  peerAt(address: number): Peer | undefined {
    return this.byAddress.get(address)
  }

  peers(): Peer[] {
    return [...this.byAddress.values()]
  }

  private readonly onTunBatch = (count: number, ring: PacketRing): void => {
    const {buf, slotSize, lengths, headroom, tailroom} = ring
    const client = this.role === 'client'
    const only = client ? this.single : undefined
    try {
      this.encapBatch(count, buf, slotSize, lengths, headroom, slotSize - headroom - tailroom, client, only)
    } catch (e) {
      // Not a transport's (those are caught per packet): whatever it is loses the rest of this
      // batch, not the process (this runs in a native callback).
      this.counters.transportErrors++
      this.onTransportError?.(null, e)
    } finally {
      // Whatever happened, what was queued goes out and the next batch starts clean; a link
      // that fails to flush costs its batch, never the process (this runs in a native callback).
      for (let i = 0; i < this.dirty.length; i++) {
        const p = this.dirty[i]
        try {
          p.link.flush()
        } catch {
          this.counters.transportErrors++
        }
        p.flushMark = p.stats.txPackets
      }
      this.dirty.length = 0
    }
  }

  private encapBatch(count: number, buf: Buffer, slotSize: number, lengths: Uint32Array, headroom: number, maxPacket: number, client: boolean, only: Peer | undefined): void {
    for (let i = 0; i < count; i++) {
      const off = i * slotSize + headroom
      const len = lengths[i]
      if (len > maxPacket || checkIpv4(buf, off, len) !== null) {
        this.counters.badTunPacket++
        continue
      }
      const peer = client ? only : this.byAddress.get(ipv4Destination(buf, off))
      if (peer === undefined) {
        this.counters.noPeer++
        continue
      }
      const out = peer.span
      // The payload must stay inside this packet's slot: a transport that says otherwise is
      // wrong, and its packet is dropped rather than sent from a neighbour's bytes.
      const slot = off - headroom
      if (!this.encapOne(peer, buf, off, len) || out.offset < slot || out.offset + out.length > slot + slotSize) {
        peer.stats.drop('encap')
        continue
      }
      if (peer.stats.txPackets === peer.flushMark) this.dirty.push(peer)
      peer.link.send(buf, out.offset, out.length)
      peer.stats.txPackets++
      peer.stats.txBytes += len
    }
  }

  /** The session's encap; a transport that throws (a plugin bug) loses this packet only. */
  private encapOne(peer: Peer, buf: Buffer, offset: number, length: number): boolean {
    try {
      return peer.session.encap(buf, offset, length, peer.span)
    } catch (e) {
      this.counters.transportErrors++
      this.onTransportError?.(peer, e)
      return false
    }
  }

  /**
   * A carrier payload arrived from `peer` (via addr:port, for datagram carriers). Decapsulate
   * it and hand the inner packet to the kernel, provided it is well-formed, comes from the
   * peer's current endpoint and, on the node, from the peer's own tunnel address. Keepalives
   * go to the keepalive handler instead, whatever endpoint they came from.
   */
  receive(peer: Peer, buf: Buffer, offset: number, length: number, addr = 0, port = 0): void {
    const stats = peer.stats
    const out = peer.span
    const session = peer.session
    // From an endpoint the session has not proven only a keepalive is accepted: it must not
    // move the session's state on the way (see Session.peek).
    const proven = peer.link.accepts(addr, port)
    let drop: Drop | null
    try {
      drop = !proven && session.peek !== undefined ? session.peek(buf, offset, length, out) : session.decap(buf, offset, length, out)
    } catch (e) {
      // Whatever a stranger sends, a transport that throws on it (a plugin bug) loses this
      // payload, not the node and not its other clients.
      this.counters.transportErrors++
      this.onTransportError?.(peer, e)
      return
    }
    if (drop !== null) {
      stats.drop(drop)
      return
    }
    const bad = checkIpv4(buf, out.offset, out.length)
    if (bad !== null) {
      stats.drop(bad)
      return
    }
    if (this.onKeepalive !== null && isKeepalive(buf, out.offset, out.length, this.localAddress)) {
      this.onKeepalive(peer, buf, out.offset, addr, port)
      return
    }
    if (!proven) {
      stats.drop('endpoint')
      return
    }
    // A client may only speak for its own tunnel address: anything else is spoofing.
    if (this.role === 'node' && ipv4Source(buf, out.offset) !== peer.address) {
      stats.drop('source')
      return
    }
    stats.lastSeen = Date.now()
    stats.rxPackets++
    stats.rxBytes += out.length
    if (!this.tun.write(buf, out.offset, out.length)) this.counters.tunWriteDrops++
  }
}

function addStats(t: TrafficTotals, peer: Peer): void {
  const s = peer.stats
  t.rxPackets += s.rxPackets
  t.rxBytes += s.rxBytes
  t.txPackets += s.txPackets
  t.txBytes += s.txBytes
  for (const k in s.drops) t.drops[k] = (t.drops[k] ?? 0) + s.drops[k]
}

const FAST_COUNTERS = ['txPackets', 'rxPackets', 'sendDrops', 'tunWriteDrops', 'tunGsoPackets', 'tunGsoSegments'] as const
const LANE_COUNTERS = [...FAST_COUNTERS, 'handedOff', 'handoffDrops'] as const

/** a + b, counter by counter and lane by lane (a new object); `sessions` is b's (a gauge, not a count), 0 without b. */
function addFastStats(a: FastPathStats | null, b: FastPathStats | null): FastPathStats {
  const sum = {sessions: b?.sessions ?? 0} as FastPathStats
  for (const k of FAST_COUNTERS) sum[k] = (a?.[k] ?? 0) + (b?.[k] ?? 0)
  const lanes: LaneStats[] = []
  const n = Math.max(a?.workers.length ?? 0, b?.workers.length ?? 0)
  for (let i = 0; i < n; i++) {
    const lane = {} as LaneStats
    for (const k of LANE_COUNTERS) lane[k] = (a?.workers[i]?.[k] ?? 0) + (b?.workers[i]?.[k] ?? 0)
    lanes.push(lane)
  }
  sum.workers = lanes
  return sum
}
