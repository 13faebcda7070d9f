/**
 * The data path, both directions, for the node and the client alike:
 *
 *   TUN batch -> route by inner destination -> session.encap -> peer link (coalesced) -> flush
 *   carrier payload -> session.decap -> check inner source -> TUN
 *
 * The node has many peers keyed by tunnel address; a client has one peer (the node) that
 * every packet goes to. Both share this code; only the lookup differs.
 */
import type {PacketRing, TunDevice} from '../tun/device.js'
import {checkIpv4, ipv4Destination, ipv4Source} from '../net/packet.js'
import type {Peer} from './peer.js'

export interface DataPathCounters {
  /** Packets read from the TUN that had no peer to go to. */
  noPeer: number
  /** Packets read from the TUN that were not well-formed IPv4. */
  badTunPacket: number
  /** Packets the kernel refused on TUN write (queue full). */
  tunWriteDrops: number
}

export class DataPath {
  readonly counters: DataPathCounters = {noPeer: 0, badTunPacket: 0, tunWriteDrops: 0}
  private readonly byAddress = new Map<number, Peer>()
  /** Peers that got payloads in the current batch and need a flush. */
  private readonly dirty: Peer[] = []

  /**
   * @param role on a client every packet goes to the single peer; on the node the inner
   * destination picks the peer, and a client may only send from its own address.
   */
  constructor(
    private readonly tun: TunDevice,
    private readonly role: 'node' | 'client',
  ) {}

  start(): void {
    this.tun.start(this.onTunBatch)
  }

  addPeer(peer: Peer): void {
    this.byAddress.set(peer.address, peer)
  }

  removePeer(peer: Peer): void {
    if (this.byAddress.get(peer.address) === peer) this.byAddress.delete(peer.address)
  }

  peers(): Peer[] {
    return [...this.byAddress.values()]
  }

  private readonly onTunBatch = (count: number, ring: PacketRing): void => {
    const {buf, slotSize, lengths, headroom} = ring
    const client = this.role === 'client'
    const only = client ? this.byAddress.values().next().value : undefined
    for (let i = 0; i < count; i++) {
      const off = i * slotSize + headroom
      const len = lengths[i]
      if (checkIpv4(buf, off, len) !== null) {
        this.counters.badTunPacket++
        continue
      }
      const peer = client ? only : this.byAddress.get(ipv4Destination(buf, off))
      if (peer === undefined) {
        this.counters.noPeer++
        continue
      }
      const out = peer.span
      if (!peer.session.encap(buf, off, len, out)) {
        peer.stats.drop('encap')
        continue
      }
      if (peer.stats.txPackets === peer.flushMark) this.dirty.push(peer)
      peer.link.send(buf, out.offset, out.length)
      peer.stats.txPackets++
      peer.stats.txBytes += len
    }
    for (let i = 0; i < this.dirty.length; i++) {
      const p = this.dirty[i]
      p.link.flush()
      p.flushMark = p.stats.txPackets
    }
    this.dirty.length = 0
  }

  /**
   * A carrier payload arrived from `peer`. Decapsulate it and hand the inner packet to the
   * kernel, provided it is well-formed and, on the node, comes from the peer's own address.
   */
  receive(peer: Peer, buf: Buffer, offset: number, length: number): void {
    const stats = peer.stats
    stats.lastSeen = Date.now()
    const out = peer.span
    const drop = peer.session.decap(buf, offset, length, out)
    if (drop !== null) {
      stats.drop(drop)
      return
    }
    const bad = checkIpv4(buf, out.offset, out.length)
    if (bad !== null) {
      stats.drop(bad)
      return
    }
    // A client may only speak for its own tunnel address: anything else is spoofing.
    if (this.role === 'node' && ipv4Source(buf, out.offset) !== peer.address) {
      stats.drop('source')
      return
    }
    stats.rxPackets++
    stats.rxBytes += out.length
    if (!this.tun.write(buf, out.offset, out.length)) this.counters.tunWriteDrops++
  }
}
