import {describe, expect, it} from 'vitest'
import {FRAME_HEADER, FrameDecoder, FrameType, MAX_CONTROL_PAYLOAD, encodeFrame} from '../../src/core/control/framing.js'

type Frame = {type: number; payload: string}

function decoder(maxData = 1500) {
  const frames: Frame[] = []
  const d = new FrameDecoder(maxData, (type, buf, off, len) => frames.push({type, payload: buf.toString('hex', off, off + len)}))
  return {d, frames}
}

const data = (hex: string) => encodeFrame(FrameType.Data, Buffer.from(hex, 'hex'))

describe('frame decoder', () => {
  it('decodes back-to-back frames of every type from one chunk', () => {
    const {d, frames} = decoder()
    const chunk = Buffer.concat([data('4500'), encodeFrame(FrameType.Ping), encodeFrame(FrameType.Control, Buffer.from('{}')), encodeFrame(FrameType.Pong)])
    expect(d.push(chunk)).toBeNull()
    expect(frames).toEqual([
      {type: FrameType.Data, payload: '4500'},
      {type: FrameType.Ping, payload: ''},
      {type: FrameType.Control, payload: Buffer.from('{}').toString('hex')},
      {type: FrameType.Pong, payload: ''},
    ])
    expect(d.pending).toBe(0)
  })

  it('reassembles frames split at every possible byte boundary', () => {
    const stream = Buffer.concat([data('aabbccdd'), data('01'), encodeFrame(FrameType.Ping)])
    for (let cut = 1; cut < stream.length; cut++) {
      const {d, frames} = decoder()
      expect(d.push(stream.subarray(0, cut))).toBeNull()
      expect(d.push(stream.subarray(cut))).toBeNull()
      expect(frames.map((f) => f.payload)).toEqual(['aabbccdd', '01', ''])
    }
  })

  it('reassembles a frame split across three chunks, and the frames around it', () => {
    const big = 'ab'.repeat(1000)
    const stream = Buffer.concat([data('01'), data(big), data('02'), encodeFrame(FrameType.Pong)])
    // Cut inside the big frame's payload twice: its start, middle and end arrive separately.
    for (const [a, b] of [
      [5, 600],
      [6, 7],
      [4, stream.length - 9],
      [7, 1004],
    ]) {
      const {d, frames} = decoder()
      expect(d.push(stream.subarray(0, a))).toBeNull()
      expect(d.push(stream.subarray(a, b))).toBeNull()
      expect(d.pending).toBeGreaterThan(0)
      expect(d.push(stream.subarray(b))).toBeNull()
      expect(frames.map((f) => f.payload)).toEqual(['01', big, '02', ''])
      expect(d.pending).toBe(0)
    }
  })

  it('completes a held-back partial header from the next chunks, one byte at a time', () => {
    const stream = Buffer.concat([data('0a'), data('c0ffee'), encodeFrame(FrameType.Ping)])
    const {d, frames} = decoder()
    // The first chunk ends one byte into the second frame's header.
    expect(d.push(stream.subarray(0, 5))).toBeNull()
    expect(d.pending).toBe(1)
    expect(d.push(stream.subarray(5, 6))).toBeNull()
    expect(d.pending).toBe(2)
    expect(frames.map((f) => f.payload)).toEqual(['0a'])
    for (let i = 6; i < stream.length; i++) expect(d.push(stream.subarray(i, i + 1))).toBeNull()
    expect(frames.map((f) => f.payload)).toEqual(['0a', 'c0ffee', ''])
    expect(d.pending).toBe(0)
  })

  it('rejects a bad header completed across chunks', () => {
    const {d} = decoder(100)
    expect(d.push(Buffer.from([FrameType.Data]))).toBeNull()
    expect(d.push(Buffer.from([0]))).toBeNull()
    expect(d.push(Buffer.from([101, 1, 2]))).toMatch(/101 bytes exceeds the limit of 100/)
    const u = decoder()
    expect(u.d.push(Buffer.from([7, 0]))).toBeNull()
    expect(u.d.push(Buffer.from([0]))).toBe('unknown frame type 7')
  })

  it('parses the frames after a straddling one in place, without copying the chunk', () => {
    const seen: {buf: Buffer; off: number}[] = []
    const d = new FrameDecoder(1500, (_t, buf, off) => seen.push({buf, off}))
    const first = data('11223344')
    const chunk2 = Buffer.concat([first.subarray(4), data('55'), data('66')])
    expect(d.push(first.subarray(0, 4))).toBeNull()
    expect(d.push(chunk2)).toBeNull()
    expect(seen).toHaveLength(3)
    expect(seen[0].buf).not.toBe(chunk2)
    expect(seen[1].buf).toBe(chunk2)
    expect(seen[2].buf).toBe(chunk2)
    expect(seen[1].off).toBe(first.length - 4 + FRAME_HEADER)
  })

  it('decodes a long stream cut into random chunks exactly as the whole', () => {
    let seed = 7
    const rand = (n: number) => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) % n)
    const frames: Buffer[] = []
    const want: string[] = []
    for (let i = 0; i < 300; i++) {
      const payload = Buffer.alloc(rand(1500), i & 0xff)
      frames.push(encodeFrame(FrameType.Data, payload))
      want.push(payload.toString('hex'))
    }
    const stream = Buffer.concat(frames)
    const {d, frames: got} = decoder()
    for (let off = 0; off < stream.length; ) {
      const n = 1 + rand(4000)
      expect(d.push(stream.subarray(off, off + n))).toBeNull()
      off += n
    }
    expect(got.map((f) => f.payload)).toEqual(want)
    expect(d.pending).toBe(0)
  })

  it('holds back a truncated frame and reports it as pending', () => {
    const {d, frames} = decoder()
    const f = data('00112233')
    expect(d.push(f.subarray(0, f.length - 1))).toBeNull()
    expect(frames).toEqual([])
    expect(d.pending).toBe(f.length - 1)
  })

  it('holds back a lone partial header', () => {
    const {d, frames} = decoder()
    expect(d.push(Buffer.from([0, 0]))).toBeNull()
    expect(frames).toEqual([])
    expect(d.pending).toBe(2)
  })

  it('rejects a data frame larger than the limit before buffering it', () => {
    const {d, frames} = decoder(100)
    const header = Buffer.from([FrameType.Data, 0, 101])
    expect(d.push(header)).toMatch(/101 bytes exceeds the limit of 100/)
    expect(frames).toEqual([])
  })

  it('rejects an oversized control frame', () => {
    const {d} = decoder()
    const header = Buffer.alloc(FRAME_HEADER)
    header[0] = FrameType.Control
    header.writeUInt16BE(MAX_CONTROL_PAYLOAD + 1, 1)
    expect(d.push(header)).toMatch(/exceeds the limit/)
  })

  it('rejects an unknown frame type', () => {
    const {d} = decoder()
    expect(d.push(Buffer.from([9, 0, 0]))).toBe('unknown frame type 9')
  })

  it('refuses to encode a payload that does not fit the length field', () => {
    expect(() => encodeFrame(FrameType.Data, Buffer.alloc(0x10000))).toThrow(RangeError)
  })
})
