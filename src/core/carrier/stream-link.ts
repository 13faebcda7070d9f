/**
 * The `stream` carrier: payloads ride as Data frames on the control channel's TLS socket.
 * Frames of one TUN batch are coalesced into one buffer and one socket write, so TLS seals
 * a few large records instead of one per packet.
 */
import type {Socket} from 'node:net'
import {FRAME_HEADER, FrameType, writeFrameHeader} from '../control/framing.js'
import type {PeerLink, PeerStats} from '../device/peer.js'

/**
 * Past this much unsent data the link drops new packets, as a router's queue would, instead
 * of buffering without bound (which would only add latency: TCP retransmits for us).
 */
export const STREAM_QUEUE_LIMIT = 1024 * 1024

export class StreamLink implements PeerLink {
  private out: Buffer | null = null
  private used = 0
  stats: PeerStats | null = null

  constructor(
    private readonly socket: Socket,
    readonly endpoint: string,
    /** Capacity of one coalescing buffer: a batch of frames of the tunnel MTU. */
    private readonly batchBytes: number,
  ) {}

  send(buf: Buffer, offset: number, length: number): void {
    if (this.socket.writableLength > STREAM_QUEUE_LIMIT) {
      this.stats?.drop('queue-full')
      return
    }
    const need = FRAME_HEADER + length
    if (this.out !== null && this.used + need > this.out.length) this.flush()
    if (this.out === null) {
      this.out = Buffer.allocUnsafe(Math.max(this.batchBytes, need))
      this.used = 0
    }
    writeFrameHeader(this.out, this.used, FrameType.Data, length)
    buf.copy(this.out, this.used + FRAME_HEADER, offset, offset + length)
    this.used += need
  }

  flush(): void {
    if (this.out === null || this.used === 0) return
    // The socket keeps a reference until written, so the buffer is handed over, not reused.
    this.socket.write(this.out.subarray(0, this.used))
    this.out = null
    this.used = 0
  }
}
