/**
 * One control-channel connection (either end): frames in and out of a TLS 1.3 socket,
 * control messages, keepalive pings and the liveness timeout. Data frames are handed to
 * `onData` untouched; what they mean is the data path's business.
 *
 * A tls session's connection may move to native records after the welcome (goNative,
 * native-records.ts): the same frames then go through C, which carries the Data frames it can
 * itself and hands this class the rest.
 */
import type {TLSSocket} from 'node:tls'
import {FrameDecoder, FrameType, encodeFrame} from './framing.js'
import {type ControlMessage, decodeMessage, encodeMessage} from './messages.js'
import type {NativeStream} from '../carrier/native-stream.js'
import {takeOver} from './native-records.js'

export interface ConnectionHandlers {
  onMessage(m: ControlMessage): void
  onData(buf: Buffer, offset: number, length: number): void
  /** Called once, with why the connection ended (and the socket error, if that was why). */
  onClose(reason: string, error?: NodeJS.ErrnoException): void
}

const PING = encodeFrame(FrameType.Ping)
const PONG = encodeFrame(FrameType.Pong)
const EMPTY = new Uint8Array(0)

/** Bytes queued for a peer through Node's TLS past which it is taken to read nothing (as native records do). */
const CONTROL_QUEUE_LIMIT = 1 << 20

/** Missed keepalive intervals after which the peer is declared gone. */
export const DEAD_AFTER_INTERVALS = 3

/**
 * No Pong while this much is already queued for the peer: a peer that pings faster than it
 * reads cannot grow our write queue, and one whose queue is that full is being sent data anyway.
 */
export const PONG_QUEUE_LIMIT = 256 * 1024

export class ControlConnection {
  private readonly decoder: FrameDecoder
  private lastHeard = Date.now()
  private pingTimer: NodeJS.Timeout | null = null
  private deadTimer: NodeJS.Timeout | null = null
  private closed = false
  /** A Ping arrived in the chunk being decoded: answered once, after the whole chunk. */
  private pinged = false
  private native: NativeStream | null = null
  /** Kept once Node's socket is let go (native records): it can no longer be asked. */
  private remoteText: string | null = null
  /** Node's TLS socket; null once released to native records, so its objects can be collected. */
  private tls: TLSSocket | null
  handlers: ConnectionHandlers

  constructor(
    socket: TLSSocket,
    private readonly maxData: number,
    handlers: ConnectionHandlers,
  ) {
    this.tls = socket
    this.handlers = handlers
    this.decoder = new FrameDecoder(maxData, this.onFrame)
    socket.setNoDelay(true)
    socket.on('data', this.onChunk)
    socket.on('end', () => this.close(this.decoder.pending > 0 ? 'peer closed mid-frame' : 'peer closed the connection'))
    socket.on('error', (e: NodeJS.ErrnoException) => this.close(e.message, e))
    socket.on('close', () => this.close('connection closed'))
  }

  /**
   * Node's TLS socket, for what only it can do before native records (keying material, a
   * stream link). Throws once released: from then on the connection is the native stream's.
   */
  get socket(): TLSSocket {
    if (this.tls === null) throw new Error("Node's TLS socket was released to native records")
    return this.tls
  }

  /** Half-closes the connection after what was sent (a refusal): the peer reads it, then EOF. */
  end(): void {
    this.tls?.end()
  }

  get remote(): string {
    return this.remoteText ?? `${this.socket.remoteAddress}:${this.socket.remotePort}`
  }

  send(m: ControlMessage): void {
    if (this.closed) return
    if (this.native === null) {
      if (this.socket.writableLength > CONTROL_QUEUE_LIMIT) return this.close('control message dropped: the peer reads nothing (send queue full)')
      this.socket.write(encodeFrame(FrameType.Control, encodeMessage(m)))
      return
    }
    // A control message is never dropped quietly: a peer that reads nothing for a megabyte
    // of queue is gone as far as the session is concerned.
    if (!this.native.send(FrameType.Control, encodeMessage(m))) this.close('control message dropped: the peer reads nothing (send queue full)')
  }

  /** The native records, once goNative() moved this connection to them. */
  get nativeStream(): NativeStream | null {
    return this.native
  }

  /**
   * From now on frames go through native records (native-records.ts says when each end may
   * call this). The client then pings at once: its first record lets the node write.
   */
  goNative(role: 'node' | 'client'): NativeStream {
    if (this.closed) throw new Error('the connection is closed')
    if (this.native !== null) return this.native
    // Bytes Node has read but not handed over would be lost to both readers.
    if (this.decoder.pending > 0 || this.socket.readableLength > 0) throw new Error('bytes read through Node\'s TLS are still pending')
    this.remoteText = this.remote
    this.native = takeOver(this.socket, role, this.maxData, {
      onFrame: (type, payload) => {
        // The node's first record from the client: the welcome was read, Node's socket is done.
        if (role === 'node') this.releaseSocket()
        try {
          this.dispatch(type, payload, 0, payload.length)
        } catch (e) {
          // As for Node's TLS (onChunk): a handler that fails costs this connection, not the process.
          this.close(`error handling a frame: ${(e as Error)?.message ?? String(e)}`)
          return
        }
        if (this.pinged && !this.closed) {
          this.pinged = false
          this.native?.send(FrameType.Pong, EMPTY)
        }
      },
      onClose: (reason) => this.close(reason),
    })
    if (role === 'client') {
      this.native.send(FrameType.Ping, EMPTY)
      this.releaseSocket()
    }
    return this.native
  }

  /**
   * Frees Node's TLS socket once the native records have the connection: its TLS state and
   * buffers were most of what an idle client cost the node. Our own copy of the fd keeps the
   * connection open. Only once nothing we wrote through it can still be queued (destroy would
   * drop it): on the client after the hello was answered, on the node after the welcome was.
   */
  private releaseSocket(): void {
    const socket = this.tls
    if (socket === null) return
    this.tls = null
    socket.removeAllListeners()
    socket.on('error', () => {})
    socket.destroy()
  }

  /**
   * Watch liveness: with `ping` true (the client) send a ping every interval; either way,
   * close as soon as nothing at all was heard for DEAD_AFTER_INTERVALS intervals. Does nothing
   * on a closed connection.
   */
  keepalive(seconds: number, ping: boolean): void {
    if (this.closed) return
    this.stopTimers()
    const ms = seconds * 1000
    const deadMs = DEAD_AFTER_INTERVALS * ms
    if (ping) {
      this.pingTimer = setInterval(() => {
        if (this.closed) return
        if (this.native !== null) this.native.send(FrameType.Ping, EMPTY)
        else this.socket.write(PING)
      }, ms)
      this.pingTimer.unref()
    }
    // A timer due when the deadline would pass if nothing more were heard: re-armed for the
    // rest when something was, so the check costs nothing per chunk and is exact.
    const check = () => {
      // Native records are read in C, which keeps its own time of the last bytes heard.
      const heard = this.heardAt
      const left = heard + deadMs - Date.now()
      if (left > 0) {
        this.deadTimer = setTimeout(check, left)
        this.deadTimer.unref()
        return
      }
      this.close(`no keepalive for ${DEAD_AFTER_INTERVALS * seconds}s`)
    }
    this.deadTimer = setTimeout(check, Math.max(1, this.lastHeard + deadMs - Date.now()))
    this.deadTimer.unref()
  }

  close(reason: string, error?: NodeJS.ErrnoException): void {
    if (this.closed) return
    this.closed = true
    this.stopTimers()
    this.native?.close()
    this.tls?.destroy()
    this.handlers.onClose(reason, error)
  }

  /** ms since epoch when anything was last heard on this connection (native records too). */
  get heardAt(): number {
    return Math.max(this.lastHeard, this.native?.lastHeard() ?? 0)
  }

  get isClosed(): boolean {
    return this.closed
  }

  private stopTimers(): void {
    if (this.pingTimer !== null) clearInterval(this.pingTimer)
    if (this.deadTimer !== null) clearTimeout(this.deadTimer)
    this.pingTimer = null
    this.deadTimer = null
  }

  private readonly onChunk = (chunk: Buffer): void => {
    if (this.closed) return
    this.lastHeard = Date.now()
    this.pinged = false
    let error: string | null
    try {
      error = this.decoder.push(chunk)
    } catch (e) {
      // A handler failed on this input (a plugin's decap, a TUN write...): end this
      // connection, not the process.
      this.close(`error handling a frame: ${(e as Error)?.message ?? String(e)}`)
      return
    }
    if (error !== null) {
      this.close(`protocol error: ${error}`)
      return
    }
    // Nothing may follow the last frame said through Node's TLS (native-records.ts).
    if (this.native !== null && this.decoder.pending > 0) {
      this.close("protocol error: bytes through Node's TLS after the switch to native records")
      return
    }
    if (this.pinged && !this.closed && this.native === null && this.socket.writableLength <= PONG_QUEUE_LIMIT) this.socket.write(PONG)
  }

  /** A frame through Node's TLS: none may come once the connection moved to native records. */
  private readonly onFrame = (type: FrameType, buf: Buffer, offset: number, length: number): void => {
    if (this.native !== null && !this.closed) {
      this.close("protocol error: bytes through Node's TLS after the switch to native records")
      return
    }
    this.dispatch(type, buf, offset, length)
  }

  private dispatch(type: FrameType, buf: Buffer, offset: number, length: number): void {
    // Closed by an earlier frame of the same chunk (or a handler): dispatch nothing more.
    if (this.closed) return
    switch (type) {
      case FrameType.Data:
        this.handlers.onData(buf, offset, length)
        return
      case FrameType.Ping:
        // Through Node's TLS, and in the first native record: after that, native records
        // answer pings themselves (stream.c) and neither pings nor pongs reach us.
        this.pinged = true
        return
      case FrameType.Pong:
        return
      case FrameType.Control: {
        let m: ControlMessage
        try {
          m = decodeMessage(buf, offset, length)
        } catch (e) {
          this.close(`bad control message: ${(e as Error).message}`)
          return
        }
        this.handlers.onMessage(m)
      }
    }
  }
}
