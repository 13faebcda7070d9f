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
 * frame with a view into the chunk: no copy unless a frame straddles two chunks.
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

/** Control messages are small; anything bigger is a broken or hostile peer. */
export const MAX_CONTROL_PAYLOAD = 16 * 1024

export type FrameSink = (type: FrameType, buf: Buffer, offset: number, length: number) => void

export class FrameDecoder {
  private rest: Buffer | null = null

  /** @param maxData the largest Data payload accepted (the tunnel MTU plus transport headroom) */
  constructor(
    private readonly maxData: number,
    private readonly sink: FrameSink,
  ) {}

  /**
   * Feed a chunk. Returns null, or why the stream is corrupt (the caller closes the
   * connection: after a bad header no later byte can be trusted to be a frame boundary).
   */
  push(chunk: Buffer): string | null {
    let buf = chunk
    if (this.rest !== null) {
      buf = Buffer.concat([this.rest, chunk])
      this.rest = null
    }
    let off = 0
    while (buf.length - off >= FRAME_HEADER) {
      const type = buf[off]
      const length = buf.readUInt16BE(off + 1)
      if (type > FrameType.Pong) return `unknown frame type ${type}`
      const limit = type === FrameType.Data ? this.maxData : MAX_CONTROL_PAYLOAD
      if (length > limit) return `frame of ${length} bytes exceeds the limit of ${limit} for its type`
      if (buf.length - off - FRAME_HEADER < length) break
      this.sink(type as FrameType, buf, off + FRAME_HEADER, length)
      off += FRAME_HEADER + length
    }
    if (off < buf.length) this.rest = buf.subarray(off)
    return null
  }

  /** Bytes of an incomplete frame held back; at end of stream, non-zero means truncation. */
  get pending(): number {
    return this.rest === null ? 0 : this.rest.length
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
