import {randomBytes} from 'node:crypto'
import {describe, expect, it} from 'vitest'
import {
  KEEPALIVE_PACKET,
  KeepaliveKind,
  isKeepalive,
  makeKeepalive,
  verifyKeepalive,
} from '../../src/core/nat/keepalive.js'
import {checkIpv4} from '../../src/core/net/packet.js'
import {ipv4ToNumber} from '../../src/core/net/ipv4.js'

const key = randomBytes(32)
const client = ipv4ToNumber('10.8.0.2')
const node = ipv4ToNumber('10.8.0.1')

describe('authenticated keepalive', () => {
  it('is a well-formed IPv4 packet that verifies with the key and says its kind and counter', () => {
    const buf = makeKeepalive(16, 8, client, node, KeepaliveKind.Request, 7n, key)
    expect(checkIpv4(buf, 16, KEEPALIVE_PACKET)).toBeNull()
    expect(isKeepalive(buf, 16, KEEPALIVE_PACKET, node)).toBe(true)
    expect(verifyKeepalive(buf, 16, key, 0n)).toEqual({kind: KeepaliveKind.Request, counter: 7n})
    // The headroom and tailroom are left for the transport.
    expect(buf.subarray(0, 16).every((b) => b === 0)).toBe(true)
  })

  it('has a valid IPv4 header checksum', () => {
    const buf = makeKeepalive(0, 0, client, node, KeepaliveKind.Reply, 1n, key)
    let sum = 0
    for (let i = 0; i < 20; i += 2) sum += buf.readUInt16BE(i)
    while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16)
    expect(sum).toBe(0xffff)
  })

  it('is refused with another key, a replayed or older counter, or any flipped bit of the payload', () => {
    const buf = makeKeepalive(0, 0, client, node, KeepaliveKind.Request, 5n, key)
    expect(verifyKeepalive(buf, 0, randomBytes(32), 0n)).toBeNull()
    expect(verifyKeepalive(buf, 0, key, 5n)).toBeNull()
    expect(verifyKeepalive(buf, 0, key, 6n)).toBeNull()
    for (let bit = 0; bit < 32 * 8; bit++) {
      const copy = Buffer.from(buf)
      copy[20 + (bit >> 3)] ^= 1 << (bit & 7)
      expect(verifyKeepalive(copy, 0, key, 0n), `bit ${bit}`).toBeNull()
    }
  })

  it('is told apart from ordinary traffic cheaply', () => {
    const buf = makeKeepalive(0, 0, client, node, KeepaliveKind.Request, 1n, key)
    expect(isKeepalive(buf, 0, KEEPALIVE_PACKET, client)).toBe(false) // addressed elsewhere
    expect(isKeepalive(buf, 0, KEEPALIVE_PACKET - 1, node)).toBe(false)
    const icmp = Buffer.from(buf)
    icmp[9] = 1
    expect(isKeepalive(icmp, 0, KEEPALIVE_PACKET, node)).toBe(false)
  })
})
