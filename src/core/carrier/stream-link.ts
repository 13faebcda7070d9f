/**
 * The `stream` carrier: payloads ride as Data frames on the control channel's TLS socket.
 * Frames of one TUN batch are coalesced into one buffer and one socket write, so TLS seals
 * a few large records instead of one per packet.
 *
 * Frames gather in a scratch buffer allocated on the first packet (an idle client costs the
 * node nothing for it: 64 KiB times a thousand idle clients was most of the node's memory),
 * then kept; the flush hands the socket an exact-size
 * copy (the socket keeps what it is given until written, so the scratch cannot go itself).
 * Allocating a fresh batch-sized buffer per flush instead cost 25-55 us per ping-sized batch
 * here (fresh pages and external-memory accounting); a small exact copy comes from Node's pool.
 */
import type {Socket} from 'node:net'
import {FRAME_HEADER, FrameType, writeFrameHeader} from '../control/framing.js'
import type {PeerLink, PeerStats} from '../device/peer.js'

/**
 * Past this much unsent data the link drops new packets, as a router's queue would, instead
 * of buffering without bound (which would only add latency: TCP retransmits for us).
 */
export const STREAM_QUEUE_LIMIT = 1024 * 1024
/** Bytes one peer's coalesced writes may gather per TUN batch before a socket write. */
export const STREAM_BATCH_BYTES = 64 * 1024
/** Room a Data frame's payload may take beyond the MTU (transport headers, trailers). */
export const STREAM_FRAME_SLACK = 256

export class StreamLink implements PeerLink {
  private scratch: Buffer | null = null
  private readonly capacity: number
  private used = 0
  stats: PeerStats | null = null

  constructor(
    private readonly socket: Socket,
    readonly endpoint: string,
    /** Capacity of the coalescing buffer: it must hold at least one frame of the largest payload. */
    batchBytes: number,
  ) {
    this.capacity = Math.max(batchBytes, FRAME_HEADER + 0xffff)
  }

  send(buf: Buffer, offset: number, length: number): void {
    if (this.socket.writableLength > STREAM_QUEUE_LIMIT) {
      this.stats?.drop('queue-full')
      return
    }
    const need = FRAME_HEADER + length
    if (this.used + need > this.capacity) this.flush()
    const scratch = (this.scratch ??= Buffer.allocUnsafe(this.capacity))
    writeFrameHeader(scratch, this.used, FrameType.Data, length)
    buf.copy(scratch, this.used + FRAME_HEADER, offset, offset + length)
    this.used += need
  }

  accepts(): boolean {
    return true
  }

  flush(): void {
    if (this.used === 0 || this.scratch === null) return
    const out = Buffer.allocUnsafe(this.used)
    this.scratch.copy(out, 0, 0, this.used)
    this.used = 0
    this.socket.write(out)
  }
}
