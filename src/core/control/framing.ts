/**
 * Framing on the control channel's TLS stream. Control messages and, for the `tls` transport,
 * inner IP packets share one connection, so every unit is a frame:
 *
 *   0        1        2        3
 *   +--------+--------+--------+---------------- - -
 *   |  type  |  length (BE)    | payload (length bytes)
 *   +--------+--------+--------+---------------- - -
 *
 * The decoder works on whatever chunks TCP/TLS hands over and calls the sink once per complete
 * frame with a view into the chunk. Only a frame that straddles chunks is copied, into one
 * reassembly buffer per decoder, and only its own bytes: the rest of the chunk is parsed in
 * place. A view is valid only during the sink call (the reassembly buffer is reused).
 */
export const FRAME_HEADER = 3

export const FrameType = {
  /** An inner IP packet, encapsulated by the session's transport. */
  Data: 0,
  /** A JSON control message (hello, welcome, refused...). */
  Control: 1,
  /** Keepalive request; the peer answers with Pong. Keeps NAT/TCP state warm and detects death. */
  Ping: 2,
  Pong: 3,
} as const
export type FrameType = (typeof FrameType)[keyof typeof FrameType]

/**
 * Control messages are small; anything bigger is a broken or hostile peer. The bound lets a
 * control frame fit one TLS record (2^14 bytes with its 3-byte header), as native records need.
 */
export const MAX_CONTROL_PAYLOAD = 16 * 1024 - 3

export type FrameSink = (type: FrameType, buf: Buffer, offset: number, length: number) => void

export class FrameDecoder {
  /** Holds the start of a frame that straddles chunks; allocated on first need, then reused. */
  private partial: Buffer | null = null
  /** Bytes of that frame (header included) in `partial`; 0 when none is pending. */
  private have = 0

  /** @param maxData the largest Data payload accepted (the tunnel MTU plus transport headroom) */
  constructor(
    private readonly maxData: number,
    private readonly sink: FrameSink,
  ) {}

  /**
   * Feed a chunk. Returns null, or why the stream is corrupt (the caller closes the
   * connection: after a bad header no later byte can be trusted to be a frame boundary).
   * Exceptions thrown by the sink propagate; the decoder is then in an unspecified state.
   */
  push(chunk: Buffer): string | null {
    let off = 0
    if (this.have > 0) {
      // Finish the straddling frame first: complete its header, then copy just its missing bytes.
      const partial = this.partial!
      if (this.have < FRAME_HEADER) {
        const n = Math.min(FRAME_HEADER - this.have, chunk.length)
        chunk.copy(partial, this.have, 0, n)
        this.have += n
        off = n
        if (this.have < FRAME_HEADER) return null
        const bad = this.check(partial, 0)
        if (bad !== null) return bad
      }
      const length = partial.readUInt16BE(1)
      const missing = FRAME_HEADER + length - this.have
      const n = Math.min(missing, chunk.length - off)
      chunk.copy(partial, this.have, off, off + n)
      this.have += n
      off += n
      if (n < missing) return null
      this.have = 0
      this.sink(partial[0] as FrameType, partial, FRAME_HEADER, length)
    }
    // Then every whole frame in place.
    while (chunk.length - off >= FRAME_HEADER) {
      const bad = this.check(chunk, off)
      if (bad !== null) return bad
      const length = chunk.readUInt16BE(off + 1)
      if (chunk.length - off - FRAME_HEADER < length) break
      this.sink(chunk[off] as FrameType, chunk, off + FRAME_HEADER, length)
      off += FRAME_HEADER + length
    }
    if (off < chunk.length) {
      // A header checked above (or less than a header): it fits the buffer.
      this.partial ??= Buffer.allocUnsafe(FRAME_HEADER + Math.min(0xffff, Math.max(this.maxData, MAX_CONTROL_PAYLOAD)))
      chunk.copy(this.partial, 0, off)
      this.have = chunk.length - off
    }
    return null
  }

  /** Why the header at `off` is unacceptable, or null. */
  private check(buf: Buffer, off: number): string | null {
    const type = buf[off]
    const length = buf.readUInt16BE(off + 1)
    if (type > FrameType.Pong) return `unknown frame type ${type}`
    const limit = type === FrameType.Data ? this.maxData : MAX_CONTROL_PAYLOAD
    if (length > limit) return `frame of ${length} bytes exceeds the limit of ${limit} for its type`
    return null
  }

  /** Bytes of an incomplete frame held back; at end of stream, non-zero means truncation. */
  get pending(): number {
    return this.have
  }
}

export function writeFrameHeader(buf: Buffer, offset: number, type: FrameType, length: number): void {
  buf[offset] = type
  buf.writeUInt16BE(length, offset + 1)
}

/** A whole frame in a fresh buffer: for control messages, not the data path. */
export function encodeFrame(type: FrameType, payload: Uint8Array = Buffer.alloc(0)): Buffer {
  if (payload.length > 0xffff) throw new RangeError(`frame payload of ${payload.length} bytes is too large`)
  const out = Buffer.allocUnsafe(FRAME_HEADER + payload.length)
  writeFrameHeader(out, 0, type, payload.length)
  out.set(payload, FRAME_HEADER)
  return out
}
