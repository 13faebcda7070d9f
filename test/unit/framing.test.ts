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
