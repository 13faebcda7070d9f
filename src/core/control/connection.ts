/**
 * One control-channel connection (either end): frames in and out of a TLS 1.3 socket,
 * control messages, keepalive pings and the liveness timeout. Data frames are handed to
 * `onData` untouched; what they mean is the data path's business.
 */
import type {TLSSocket} from 'node:tls'
import {FrameDecoder, FrameType, encodeFrame} from './framing.js'
import {type ControlMessage, decodeMessage, encodeMessage} from './messages.js'

export interface ConnectionHandlers {
  onMessage(m: ControlMessage): void
  onData(buf: Buffer, offset: number, length: number): void
  /** Called once, with why the connection ended (and the socket error, if that was why). */
  onClose(reason: string, error?: NodeJS.ErrnoException): void
}

const PING = encodeFrame(FrameType.Ping)
const PONG = encodeFrame(FrameType.Pong)

/** Missed keepalive intervals after which the peer is declared gone. */
export const DEAD_AFTER_INTERVALS = 3

export class ControlConnection {
  private readonly decoder: FrameDecoder
  private lastHeard = Date.now()
  private timer: NodeJS.Timeout | null = null
  private closed = false
  handlers: ConnectionHandlers

  constructor(
    readonly socket: TLSSocket,
    maxData: number,
    handlers: ConnectionHandlers,
  ) {
    this.handlers = handlers
    this.decoder = new FrameDecoder(maxData, this.onFrame)
    socket.setNoDelay(true)
    socket.on('data', (chunk: Buffer) => {
      this.lastHeard = Date.now()
      const error = this.decoder.push(chunk)
      if (error !== null) this.close(`protocol error: ${error}`)
    })
    socket.on('end', () => this.close(this.decoder.pending > 0 ? 'peer closed mid-frame' : 'peer closed the connection'))
    socket.on('error', (e: NodeJS.ErrnoException) => this.close(e.message, e))
    socket.on('close', () => this.close('connection closed'))
  }

  get remote(): string {
    return `${this.socket.remoteAddress}:${this.socket.remotePort}`
  }

  send(m: ControlMessage): void {
    if (!this.closed) this.socket.write(encodeFrame(FrameType.Control, encodeMessage(m)))
  }

  /**
   * Watch liveness: with `ping` true (the client) send a ping every interval; either way,
   * close when nothing at all was heard for DEAD_AFTER_INTERVALS intervals.
   */
  keepalive(seconds: number, ping: boolean): void {
    if (this.timer !== null) clearInterval(this.timer)
    const ms = seconds * 1000
    this.timer = setInterval(() => {
      if (Date.now() - this.lastHeard > DEAD_AFTER_INTERVALS * ms) {
        this.close(`no keepalive for ${DEAD_AFTER_INTERVALS * seconds}s`)
        return
      }
      if (ping && !this.closed) this.socket.write(PING)
    }, ms)
    this.timer.unref()
  }

  close(reason: string, error?: NodeJS.ErrnoException): void {
    if (this.closed) return
    this.closed = true
    if (this.timer !== null) clearInterval(this.timer)
    this.socket.destroy()
    this.handlers.onClose(reason, error)
  }

  get isClosed(): boolean {
    return this.closed
  }

  private readonly onFrame = (type: FrameType, buf: Buffer, offset: number, length: number): void => {
    switch (type) {
      case FrameType.Data:
        this.handlers.onData(buf, offset, length)
        return
      case FrameType.Ping:
        this.socket.write(PONG)
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
