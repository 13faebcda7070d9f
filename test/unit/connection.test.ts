import {EventEmitter} from 'node:events'
import type {TLSSocket} from 'node:tls'
import {afterEach, describe, expect, it, vi} from 'vitest'
import {ControlConnection, DEAD_AFTER_INTERVALS, PONG_QUEUE_LIMIT, type ConnectionHandlers} from '../../src/core/control/connection.js'
import {FrameType, encodeFrame} from '../../src/core/control/framing.js'
import {encodeMessage} from '../../src/core/control/messages.js'

/** Just what ControlConnection uses of a TLSSocket. */
class FakeSocket extends EventEmitter {
  written: Buffer[] = []
  writableLength = 0
  destroyed = false
  remoteAddress = '192.0.2.1'
  remotePort = 4433
  setNoDelay(): this {
    return this
  }
  write(b: Buffer): boolean {
    this.written.push(Buffer.from(b))
    return true
  }
  destroy(): this {
    this.destroyed = true
    return this
  }
  types(): number[] {
    return this.written.map((b) => b[0])
  }
}

function open(over: Partial<ConnectionHandlers> = {}) {
  const socket = new FakeSocket()
  const closes: string[] = []
  const data: string[] = []
  const messages: unknown[] = []
  const conn = new ControlConnection(socket as unknown as TLSSocket, 1500, {
    onMessage: (m) => messages.push(m),
    onData: (buf, off, len) => data.push(buf.toString('hex', off, off + len)),
    onClose: (reason) => closes.push(reason),
    ...over,
  })
  return {socket, conn, closes, data, messages}
}

const ping = encodeFrame(FrameType.Ping)
const dataFrame = (hex: string) => encodeFrame(FrameType.Data, Buffer.from(hex, 'hex'))

afterEach(() => {
  vi.useRealTimers()
})

describe('control connection: pings', () => {
  it('answers a chunk full of pings with one pong', () => {
    const {socket} = open()
    socket.emit('data', Buffer.concat(Array.from({length: 1000}, () => ping)))
    expect(socket.types()).toEqual([FrameType.Pong])
    socket.emit('data', ping)
    expect(socket.types()).toEqual([FrameType.Pong, FrameType.Pong])
    socket.emit('data', dataFrame('45'))
    expect(socket.types()).toHaveLength(2)
  })

  it('answers no ping while more than the limit is queued for the peer', () => {
    const {socket} = open()
    socket.writableLength = PONG_QUEUE_LIMIT + 1
    for (let i = 0; i < 100; i++) socket.emit('data', ping)
    expect(socket.written).toEqual([])
    socket.writableLength = PONG_QUEUE_LIMIT
    socket.emit('data', ping)
    expect(socket.types()).toEqual([FrameType.Pong])
  })
})

describe('control connection: failures stay on their connection', () => {
  it('closes the connection, with the error as reason, when a handler throws', () => {
    const {socket, closes, conn} = open({
      onData: () => {
        throw new Error('decap exploded')
      },
    })
    expect(() => socket.emit('data', dataFrame('4500'))).not.toThrow()
    expect(conn.isClosed).toBe(true)
    expect(socket.destroyed).toBe(true)
    expect(closes).toEqual(['error handling a frame: decap exploded'])
  })

  it('dispatches nothing after the connection closed mid-chunk', () => {
    const data: string[] = []
    const {socket, closes} = open({
      onData: (buf, off, len) => data.push(buf.toString('hex', off, off + len)),
      onMessage: () => {},
    })
    const bad = encodeFrame(FrameType.Control, Buffer.from('{not json'))
    socket.emit('data', Buffer.concat([dataFrame('01'), bad, dataFrame('02'), ping]))
    expect(data).toEqual(['01'])
    expect(closes).toHaveLength(1)
    expect(closes[0]).toMatch(/^bad control message/)
    // No pong after the close either.
    expect(socket.written).toEqual([])
  })

  it('does not dispatch frames after a handler closed it', () => {
    const seen: string[] = []
    let conn!: ControlConnection
    const r = open({
      onMessage: (m) => {
        seen.push(m.type)
        conn.close('refused')
      },
      onData: (buf, off, len) => seen.push(buf.toString('hex', off, off + len)),
    })
    conn = r.conn
    const hello = encodeFrame(FrameType.Control, encodeMessage({type: 'hello', version: 1, transport: 'tls'}))
    r.socket.emit('data', Buffer.concat([hello, dataFrame('aa')]))
    expect(seen).toEqual(['hello'])
    expect(r.closes).toEqual(['refused'])
  })

  it('closes on a protocol error', () => {
    const {socket, closes} = open()
    socket.emit('data', Buffer.from([9, 0, 0]))
    expect(closes).toEqual(['protocol error: unknown frame type 9'])
  })
})

describe('control connection: keepalive', () => {
  it('starts no timer on a closed connection', () => {
    vi.useFakeTimers()
    const {conn, socket} = open()
    conn.close('done')
    conn.keepalive(1, true)
    expect(vi.getTimerCount()).toBe(0)
    vi.advanceTimersByTime(10_000)
    expect(socket.written).toEqual([])
  })

  it(`declares the peer dead exactly ${DEAD_AFTER_INTERVALS} intervals after it was last heard`, () => {
    vi.useFakeTimers()
    const {conn, socket, closes} = open()
    conn.keepalive(10, true)
    vi.advanceTimersByTime(15_000)
    socket.emit('data', encodeFrame(FrameType.Pong)) // heard at t = 15 s
    vi.advanceTimersByTime(DEAD_AFTER_INTERVALS * 10_000 - 1) // t = 45 s - 1 ms
    expect(closes).toEqual([])
    vi.advanceTimersByTime(1) // t = 45 s
    expect(closes).toEqual([`no keepalive for ${DEAD_AFTER_INTERVALS * 10}s`])
    expect(vi.getTimerCount()).toBe(0)
  })

  it('with nothing heard at all, closes at 3 intervals, not at the first check after', () => {
    vi.useFakeTimers()
    const {conn, closes, socket} = open()
    conn.keepalive(10, true)
    vi.advanceTimersByTime(DEAD_AFTER_INTERVALS * 10_000 - 1)
    expect(closes).toEqual([])
    expect(socket.types()).toEqual([FrameType.Ping, FrameType.Ping])
    vi.advanceTimersByTime(1)
    expect(closes).toHaveLength(1)
  })

  it('replaces the timers when called again, and clears them on close', () => {
    vi.useFakeTimers()
    const {conn} = open()
    conn.keepalive(10, true)
    conn.keepalive(5, false)
    expect(vi.getTimerCount()).toBe(1)
    conn.close('bye')
    expect(vi.getTimerCount()).toBe(0)
  })
})

describe('control connection: a peer that reads nothing', () => {
  it('is closed once a megabyte of control messages waits for it, not buffered without end', () => {
    const {socket, conn, closes} = open()
    conn.send({type: 'probed', n: 1, game: []})
    expect(socket.written).toHaveLength(1)
    socket.writableLength = (1 << 20) + 1
    conn.send({type: 'probed', n: 2, game: []})
    expect(socket.written).toHaveLength(1)
    expect(closes).toEqual(['control message dropped: the peer reads nothing (send queue full)'])
  })
})
