/**
 * The socket side of datagram carriers (udp, ip): one socket per node for every client, one
 * per client for its node. Payloads are encapsulated in place in the TUN ring, so sending
 * queues (offset, length, endpoint) triples that point into the ring and hands the whole batch
 * to the kernel in one sendmmsg when the TUN batch ends: no copy, one syscall per batch.
 */
import {formatIpv4} from '../net/ipv4.js'
import type {PeerLink, PeerStats} from '../device/peer.js'
import type {DatagramSocket} from './datagram.js'

export class SendQueue {
  private buf: Buffer | null = null
  private count = 0
  private readonly offsets: Uint32Array
  private readonly lengths: Uint32Array
  private readonly addrs: Uint32Array
  private readonly ports: Uint32Array
  /** Datagrams the kernel did not take (socket buffer full). */
  dropped = 0

  constructor(
    private readonly socket: DatagramSocket,
    private readonly size = 128,
  ) {
    this.offsets = new Uint32Array(size)
    this.lengths = new Uint32Array(size)
    this.addrs = new Uint32Array(size)
    this.ports = new Uint32Array(size)
  }

  /** Queue one datagram; `buf` must stay unchanged until flush() (the TUN ring does, within a batch). */
  queue(buf: Buffer, offset: number, length: number, addr: number, port: number): void {
    if (this.count === this.size || (this.buf !== null && this.buf !== buf)) this.flush()
    const i = this.count++
    this.buf = buf
    this.offsets[i] = offset
    this.lengths[i] = length
    this.addrs[i] = addr
    this.ports[i] = port
  }

  flush(): void {
    if (this.count === 0) return
    try {
      const sent = this.socket.sendBatch(this.buf!, this.offsets, this.lengths, this.addrs, this.ports, this.count)
      this.dropped += this.count - sent
    } catch (e) {
      this.dropped += this.count
      throw e
    } finally {
      // Never left half-full: a failed batch must not poison the next one.
      this.count = 0
      this.buf = null
    }
  }
}

/** A peer reached over a datagram socket, at an endpoint that authenticated keepalives set. */
export class DatagramLink implements PeerLink {
  /** The peer's public endpoint; 0 until its first authenticated keepalive. Set with moveTo. */
  addr = 0
  port = 0
  stats: PeerStats | null = null
  /** Told after every move (the fast path follows the endpoint). */
  onMove: (() => void) | null = null

  constructor(private readonly queue: SendQueue) {}

  get endpoint(): string {
    return this.addr === 0 ? '(not yet learned)' : `${formatIpv4(this.addr)}:${this.port}`
  }

  /** The peer is at addr:port from now on (0, 0: nowhere known). */
  moveTo(addr: number, port: number): void {
    this.addr = addr
    this.port = port
    this.onMove?.()
  }

  accepts(addr: number, port: number): boolean {
    return addr === this.addr && port === this.port && addr !== 0
  }

  send(buf: Buffer, offset: number, length: number): void {
    if (this.addr === 0) {
      this.stats?.drop('no-endpoint')
      return
    }
    this.queue.queue(buf, offset, length, this.addr, this.port)
  }

  flush(): void {
    this.queue.flush()
  }
}
