import {describe, expect, it} from 'vitest'
import {
  broadcastAddress,
  canonicalCidr,
  cidrContains,
  firstHost,
  formatCidr,
  formatIpv4,
  isHostOf,
  isIpv4,
  isNetworkAddress,
  lastHost,
  networkAddress,
  parseCidr,
  parseIpv4,
  prefixMask,
} from '../../src/core/net/ipv4.js'

const ip = (s: string) => parseIpv4(s) as number
const cidr = (s: string) => parseCidr(s) ?? expect.unreachable(`bad cidr ${s}`)

describe('IPv4 addresses', () => {
  it('parses dotted quads to uint32 and back', () => {
    expect(parseIpv4('0.0.0.0')).toBe(0)
    expect(parseIpv4('10.8.0.1')).toBe(0x0a080001)
    expect(parseIpv4('255.255.255.255')).toBe(0xffffffff)
    for (const s of ['0.0.0.0', '10.8.0.1', '192.168.255.254', '255.255.255.255']) expect(formatIpv4(ip(s))).toBe(s)
  })

  it('rejects anything else', () => {
    for (const s of ['', '1.2.3', '1.2.3.4.5', '256.1.1.1', '01.2.3.4', '1.2.3.-4', ' 1.2.3.4', '1.2.3.4 ', '1..3.4', '0x1.2.3.4', '1.2.3.4/32']) {
      expect(parseIpv4(s), s).toBeUndefined()
      expect(isIpv4(s), s).toBe(false)
    }
  })

  it('formats any number as its low 32 bits', () => {
    expect(formatIpv4(-1)).toBe('255.255.255.255')
    expect(formatIpv4(2 ** 32 + 1)).toBe('0.0.0.1')
  })
})

describe('CIDR', () => {
  it('parses, keeping host bits', () => {
    expect(parseCidr('10.8.0.5/24')).toEqual({address: ip('10.8.0.5'), prefix: 24})
    expect(parseCidr('0.0.0.0/0')).toEqual({address: 0, prefix: 0})
    expect(formatCidr(cidr('121.201.64.81/32'))).toBe('121.201.64.81/32')
  })

  it('rejects bad blocks', () => {
    for (const s of ['10.8.0.0', '10.8.0.0/', '10.8.0.0/33', '10.8.0.0/024', '10.8.0/24', '10.8.0.0/-1', '10.8.0.0/24/1']) {
      expect(parseCidr(s), s).toBeUndefined()
    }
  })

  it('computes masks, network and broadcast addresses', () => {
    expect(prefixMask(0)).toBe(0)
    expect(prefixMask(8)).toBe(0xff000000)
    expect(prefixMask(32)).toBe(0xffffffff)
    const c = cidr('10.8.0.5/24')
    expect(formatIpv4(networkAddress(c))).toBe('10.8.0.0')
    expect(formatIpv4(broadcastAddress(c))).toBe('10.8.0.255')
    expect(formatCidr(canonicalCidr(c))).toBe('10.8.0.0/24')
    expect(isNetworkAddress(c)).toBe(false)
    expect(isNetworkAddress(cidr('10.8.0.0/24'))).toBe(true)
    expect(formatIpv4(broadcastAddress(cidr('0.0.0.0/0')))).toBe('255.255.255.255')
    expect(formatIpv4(networkAddress(cidr('200.1.2.3/1')))).toBe('128.0.0.0')
  })

  it('tests containment', () => {
    const c = cidr('10.8.0.0/24')
    expect(cidrContains(c, ip('10.8.0.0'))).toBe(true)
    expect(cidrContains(c, ip('10.8.0.255'))).toBe(true)
    expect(cidrContains(c, ip('10.8.1.0'))).toBe(false)
    expect(cidrContains(cidr('0.0.0.0/0'), ip('203.0.113.9'))).toBe(true)
    expect(cidrContains(cidr('192.0.2.7/32'), ip('192.0.2.7'))).toBe(true)
    expect(cidrContains(cidr('192.0.2.7/32'), ip('192.0.2.8'))).toBe(false)
    // Host bits in the block itself do not matter.
    expect(cidrContains(cidr('10.8.0.5/24'), ip('10.8.0.200'))).toBe(true)
  })

  it('knows the usable hosts, /31 and /32 included', () => {
    const c = cidr('10.8.0.0/24')
    expect(formatIpv4(firstHost(c))).toBe('10.8.0.1')
    expect(formatIpv4(lastHost(c))).toBe('10.8.0.254')
    expect(isHostOf(c, ip('10.8.0.0'))).toBe(false)
    expect(isHostOf(c, ip('10.8.0.255'))).toBe(false)
    expect(isHostOf(c, ip('10.8.0.7'))).toBe(true)
    const p2p = cidr('10.9.0.0/31')
    expect([firstHost(p2p), lastHost(p2p)].map(formatIpv4)).toEqual(['10.9.0.0', '10.9.0.1'])
    const one = cidr('10.9.0.3/32')
    expect([firstHost(one), lastHost(one)].map(formatIpv4)).toEqual(['10.9.0.3', '10.9.0.3'])
  })
})
