import {describe, expect, it} from 'vitest'
import {checkIpv4, ipv4Destination, ipv4Source} from '../../src/core/net/packet.js'
import {formatIpv4, ipv4ToNumber} from '../../src/core/net/ipv4.js'

/** An ICMP echo request 10.8.0.2 -> 121.201.64.81, as ping sends it (header checksum not checked here). */
function icmpEcho(): Buffer {
  const b = Buffer.alloc(28)
  b[0] = 0x45
  b.writeUInt16BE(28, 2)
  b[8] = 64
  b[9] = 1
  Buffer.from([10, 8, 0, 2]).copy(b, 12)
  Buffer.from([121, 201, 64, 81]).copy(b, 16)
  b[20] = 8
  return b
}

describe('IPv4 header checks', () => {
  it('accepts a well-formed packet and reads its addresses', () => {
    const p = icmpEcho()
    expect(checkIpv4(p, 0, p.length)).toBeNull()
    expect(formatIpv4(ipv4Source(p, 0))).toBe('10.8.0.2')
    expect(formatIpv4(ipv4Destination(p, 0))).toBe('121.201.64.81')
  })

  it('works at an offset inside a larger buffer', () => {
    const ring = Buffer.alloc(100)
    icmpEcho().copy(ring, 64)
    expect(checkIpv4(ring, 64, 28)).toBeNull()
    expect(formatIpv4(ipv4Destination(ring, 64))).toBe('121.201.64.81')
  })

  it('rejects short, wrong-version, bad-IHL and length-mismatched packets', () => {
    const p = icmpEcho()
    expect(checkIpv4(p, 0, 19)).toBe('short')
    const v6 = Buffer.from(p)
    v6[0] = 0x60
    expect(checkIpv4(v6, 0, v6.length)).toBe('version')
    const ihl4 = Buffer.from(p)
    ihl4[0] = 0x44
    expect(checkIpv4(ihl4, 0, ihl4.length)).toBe('header-length')
    const ihlTooBig = Buffer.from(p)
    ihlTooBig[0] = 0x4f
    expect(checkIpv4(ihlTooBig, 0, ihlTooBig.length)).toBe('header-length')
    expect(checkIpv4(p, 0, 27)).toBe('total-length')
    const longer = Buffer.concat([p, Buffer.alloc(4)])
    expect(checkIpv4(longer, 0, longer.length)).toBe('total-length')
  })

  it('converts addresses both ways and rejects malformed text', () => {
    expect(ipv4ToNumber('255.255.255.255')).toBe(0xffffffff)
    expect(formatIpv4(ipv4ToNumber('10.8.0.1'))).toBe('10.8.0.1')
    for (const bad of ['10.8.0', '10.8.0.256', '10.8.0.x', '1.2.3.4.5', '']) expect(() => ipv4ToNumber(bad)).toThrow(/not an IPv4/)
  })
})
