import {describe, expect, it} from 'vitest'
import {checkInner} from '../../plugins/ipip/src/codec.js'
import {ipipTransport} from '../../plugins/ipip/src/index.js'
import type {SessionContext} from '../../src/core/transport/contract.js'

/** An inner IPv4/UDP packet 10.8.0.2 -> 203.0.113.10, as RFC 2003 carries it unchanged. */
function inner(payload = 4): Buffer {
  const b = Buffer.alloc(28 + payload)
  b[0] = 0x45
  b.writeUInt16BE(b.length, 2)
  b[8] = 64
  b[9] = 17
  Buffer.from([10, 8, 0, 2]).copy(b, 12)
  Buffer.from([203, 0, 113, 10]).copy(b, 16)
  return b
}

const ctx = {mtu: 1480} as SessionContext

describe('ipip codec (RFC 2003)', () => {
  it('leaves the inner packet untouched both ways', () => {
    const s = ipipTransport.openClientSession(ctx, {})
    const p = inner()
    const before = p.toString('hex')
    const out = {offset: 0, length: 0}
    expect(s.encap(p, 0, p.length, out)).toBe(true)
    expect(out).toEqual({offset: 0, length: p.length})
    expect(s.decap(p, 0, p.length, out)).toBeNull()
    expect(p.toString('hex')).toBe(before)
    expect(ipipTransport.overhead({})).toBe(0)
  })

  it('accepts an inner packet with IP options', () => {
    const p = Buffer.alloc(32)
    p[0] = 0x46
    p.writeUInt16BE(32, 2)
    expect(checkInner(p, 0, 32, 1480)).toBeNull()
  })

  it('rejects truncated, wrong-version, length-disagreeing and oversize payloads, and never throws', () => {
    const p = inner()
    expect(checkInner(p, 0, 0, 1480)).toBe('truncated')
    expect(checkInner(p, 0, 19, 1480)).toBe('truncated')
    expect(checkInner(p, 0, p.length - 1, 1480)).toBe('truncated') // header says more than came
    const padded = Buffer.concat([p, Buffer.alloc(3)])
    expect(checkInner(padded, 0, padded.length, 1480)).toBe('malformed') // header says less
    const v5 = Buffer.from(p)
    v5[0] = 0x55
    expect(checkInner(v5, 0, v5.length, 1480)).toBe('malformed')
    const v6 = Buffer.from(p)
    v6[0] = 0x60
    expect(checkInner(v6, 0, v6.length, 1480)).toBe('unsupported')
    const ihl = Buffer.from(p)
    ihl[0] = 0x4f
    expect(checkInner(ihl, 0, ihl.length, 1480)).toBe('malformed')
    expect(checkInner(p, 0, p.length, p.length - 1)).toBe('malformed')
    let seed = 7
    for (let i = 0; i < 5000; i++) {
      const len = (seed = (seed * 1103515245 + 12345) >>> 0) % 64
      const junk = Buffer.alloc(len)
      for (let j = 0; j < len; j++) junk[j] = (seed = (seed * 1103515245 + 12345) >>> 0) & 0xff
      expect(() => checkInner(junk, 0, len, 1480)).not.toThrow()
    }
  })

  it('rides UDP port 4755 by default, or bare IP protocol 4', () => {
    // Its sessions' payload is the inner packet (fastCodec identity), which node workers carry.
    expect(ipipTransport.carrier({})).toEqual({kind: 'udp', port: 4755, fastCodec: 'identity'})
    // Over bare IP the outer header copies the inner TOS and DF (RFC 2003 3.1).
    expect(ipipTransport.carrier({carrier: 'ip'})).toEqual({kind: 'ip', ipProtocol: 4, copyDfFromInner: true, fastCodec: 'identity'})
  })

  it('shows the core the inner packet without a session, for IPv4 payloads only', () => {
    const out = {offset: -1, length: -1}
    const p = inner()
    expect(ipipTransport.innerOf!(p, 0, p.length, out)).toBe(true)
    expect(out).toEqual({offset: 0, length: p.length})
    expect(ipipTransport.innerOf!(Buffer.from([0x60, 0, 0, 0]), 0, 4, out)).toBe(false)
  })
})
