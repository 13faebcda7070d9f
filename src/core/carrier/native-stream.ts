/**
 * The tls transport's data channel in C (src/core/carrier/native/stream.c): TLS 1.3 records on
 * the control connection's TCP socket after the take-over (control/native-records.ts), so the
 * session's packets go between the TUN device and the socket without entering JavaScript.
 * JavaScript still gets every frame C does not take (control, ping, pong, unusual packets).
 */
import {loadAgentNative} from '../native/addon.js'
import {FrameType} from '../control/framing.js'
import type {PeerLink, PeerStats} from '../device/peer.js'

type Handle = {readonly __brand: 'agent_stream'}

interface NativeStreamApi {
  open(
    fd: number,
    role: number,
    txSecret: Uint8Array,
    rxSecret: Uint8Array,
    maxData: number,
    onFrame: (type: number, payload: Buffer) => void,
    onClose: (reason: string) => void,
    keyUpdateAfter?: number,
  ): Handle
  send(handle: Handle, type: number, payload: Uint8Array): boolean
  lastHeard(handle: Handle): number
  stats(handle: Handle): NativeStreamStats
  close(handle: Handle): void
}

export interface NativeStreamStats {
  recordsIn: number
  recordsOut: number
  /** Sealed bytes the socket has not taken yet. */
  queuedBytes: number
  /** Frames dropped on send: queue full, or the stream closed. */
  sendDrops: number
  /** KeyUpdates read from the peer, and sent (one per KEY_UPDATE_AFTER records). */
  keyUpdatesIn: number
  keyUpdatesOut: number
  /** Pings answered in C (every one after the first record; JS never sees them). */
  pingsAnswered: number
}

/** Bytes of one direction's traffic secret (its key and IV are derived from it, as in TLS 1.3). */
export const RECORD_SECRET_BYTES = 32
/** The largest Data payload one record can carry with its frame header (2^14 - 3). */
export const NATIVE_MAX_DATA = 16381

export interface NativeStreamHandlers {
  /** A frame C did not take: control, ping, pong, or a Data frame for JS's checks. */
  onFrame(type: FrameType, payload: Buffer): void
  /** The peer or the socket ended the stream (not called after close()). */
  onClose(reason: string): void
}

export class NativeStream {
  private closed = false

  private constructor(
    private readonly api: NativeStreamApi,
    readonly handle: Handle,
  ) {}

  /**
   * Takes over connection `fd` (dup'ed: the caller keeps and closes its own). The node holds
   * its writes until the client's first record arrives.
   */
  static open(
    fd: number,
    role: 'node' | 'client',
    txSecret: Uint8Array,
    rxSecret: Uint8Array,
    maxData: number,
    handlers: NativeStreamHandlers,
    /** Records before each KeyUpdate; the default (2^23) is for real use, a small one for tests. */
    keyUpdateAfter?: number,
  ): NativeStream {
    const api = loadAgentNative().stream as NativeStreamApi
    const handle = api.open(
      fd,
      role === 'node' ? 0 : 1,
      txSecret,
      rxSecret,
      maxData,
      (type, payload) => handlers.onFrame(type as FrameType, payload),
      (reason) => handlers.onClose(reason),
      keyUpdateAfter,
    )
    return new NativeStream(api, handle)
  }

  /** Seals and writes one frame now; false if it was dropped (queue full, or closed). */
  send(type: FrameType, payload: Uint8Array): boolean {
    if (this.closed) return false
    return this.api.send(this.handle, type, payload)
  }

  /** ms since the epoch when bytes last arrived (0: never). */
  lastHeard(): number {
    return this.closed ? 0 : this.api.lastHeard(this.handle)
  }

  stats(): NativeStreamStats {
    return this.api.stats(this.handle)
  }

  close(): void {
    if (this.closed) return
    this.closed = true
    this.api.close(this.handle)
  }
}

/**
 * A tls peer's link once its connection is native: the fast path carries its packets, so what
 * reaches send() is the rare packet JavaScript handles itself.
 */
export class NativeStreamLink implements PeerLink {
  stats: PeerStats | null = null

  constructor(
    readonly stream: NativeStream,
    readonly endpoint: string,
  ) {}

  send(buf: Buffer, offset: number, length: number): void {
    if (!this.stream.send(FrameType.Data, buf.subarray(offset, offset + length))) this.stats?.drop('queue-full')
  }

  flush(): void {}

  accepts(): boolean {
    return true
  }
}
