/**
 * The data path's checks, with a fake TUN and fake links: what reaches the kernel, what is
 * dropped and counted, and where keepalives go.
 */
import {describe, expect, it} from 'vitest'
import {DataPath} from '../../src/core/device/datapath.js'
import {Peer, type PeerLink} from '../../src/core/device/peer.js'
import type {PacketRing, TunDevice} from '../../src/core/tun/device.js'
import type {Drop, Session, Span} from '../../src/core/transport/contract.js'
import {ipv4ToNumber} from '../../src/core/net/ipv4.js'
import {KEEPALIVE_PACKET, KeepaliveKind, makeKeepalive} from '../../src/core/nat/keepalive.js'

class FakeTun implements TunDevice {
  readonly name = 'fake0'
  written: string[] = []
  onBatch: ((count: number, ring: PacketRing) => void) | null = null
  start(onBatch: (count: number, ring: PacketRing) => void): void {
    this.onBatch = onBatch
  }
  write(buf: Uint8Array, offset: number, length: number): boolean {
    this.written.push(Buffer.from(buf.subarray(offset, offset + length)).toString('hex'))
    return true
  }
  close(): void {}
}

class FakeLink implements PeerLink {
  sent: string[] = []
  flushes = 0
  constructor(
    readonly endpoint: string,
    private readonly from: [number, number] | null = null,
  ) {}
  send(buf: Buffer, offset: number, length: number): void {
    this.sent.push(buf.toString('hex', offset, offset + length))
  }
  flush(): void {
    this.flushes++
  }
  accepts(addr: number, port: number): boolean {
    return this.from === null || (this.from[0] === addr && this.from[1] === port)
  }
}

/** A transport that adds one marker byte in front: enough to see encap/decap happen. */
const markerSession: Session = {
  headroom: 1,
  tailroom: 0,
  encap(buf: Buffer, offset: number, length: number, out: Span): boolean {
    buf[offset - 1] = 0xee
    out.offset = offset - 1
    out.length = length + 1
    return true
  },
  decap(buf: Buffer, offset: number, length: number, out: Span): Drop | null {
    if (buf[offset] !== 0xee) return 'malformed'
    out.offset = offset + 1
    out.length = length - 1
    return null
  },
  close() {},
}

function ipv4(src: string, dst: string, payload = 8): Buffer {
  const b = Buffer.alloc(20 + payload)
  b[0] = 0x45
  b.writeUInt16BE(b.length, 2)
  b[8] = 64
  b[9] = 17
  b.writeUInt32BE(ipv4ToNumber(src), 12)
  b.writeUInt32BE(ipv4ToNumber(dst), 16)
  return b
}

const wire = (inner: Buffer) => Buffer.concat([Buffer.from([0xee]), inner])

function node() {
  const tun = new FakeTun()
  const dp = new DataPath(tun, 'node')
  dp.localAddress = ipv4ToNumber('10.8.0.1')
  const aliceLink = new FakeLink('198.51.100.2:1000', [ipv4ToNumber('198.51.100.2'), 1000])
  const bobLink = new FakeLink('198.51.100.2:2000')
  const alice = new Peer('alice', ipv4ToNumber('10.8.0.2'), '10.8.0.2', markerSession, aliceLink)
  const bob = new Peer('bob', ipv4ToNumber('10.8.0.3'), '10.8.0.3', markerSession, bobLink)
  dp.addPeer(alice)
  dp.addPeer(bob)
  dp.start()
  return {tun, dp, alice, bob, aliceLink, bobLink}
}

const FROM_ALICE: [number, number] = [ipv4ToNumber('198.51.100.2'), 1000]

describe('data path, node side', () => {
  it('hands a client packet from its own address and endpoint to the kernel, decapsulated', () => {
    const {tun, dp, alice} = node()
    const p = ipv4('10.8.0.2', '203.0.113.10')
    dp.receive(alice, wire(p), 0, p.length + 1, ...FROM_ALICE)
    expect(tun.written).toEqual([p.toString('hex')])
    expect(alice.stats.rxPackets).toBe(1)
    expect(alice.stats.lastSeen).toBeGreaterThan(0)
  })

  it("drops and counts a packet whose inner source is another client's address", () => {
    const {tun, dp, alice} = node()
    const spoofed = ipv4('10.8.0.3', '203.0.113.10')
    dp.receive(alice, wire(spoofed), 0, spoofed.length + 1, ...FROM_ALICE)
    expect(tun.written).toEqual([])
    expect(alice.stats.dropsSnapshot()).toEqual({source: 1})
  })

  it('drops data from anywhere but the current endpoint, and malformed or non-IPv4 payloads', () => {
    const {tun, dp, alice} = node()
    const p = ipv4('10.8.0.2', '203.0.113.10')
    dp.receive(alice, wire(p), 0, p.length + 1, ipv4ToNumber('192.0.2.66'), 1000)
    dp.receive(alice, p, 0, p.length, ...FROM_ALICE) // no marker: the transport refuses it
    const short = wire(p.subarray(0, 19))
    dp.receive(alice, short, 0, short.length, ...FROM_ALICE)
    const v6 = Buffer.from(p)
    v6[0] = 0x60
    dp.receive(alice, wire(v6), 0, v6.length + 1, ...FROM_ALICE)
    expect(tun.written).toEqual([])
    expect(alice.stats.dropsSnapshot()).toEqual({endpoint: 1, malformed: 1, short: 1, version: 1})
    expect(alice.stats.lastSeen).toBe(0)
  })

  it('gives keepalives addressed to the node to the handler, from whatever endpoint, never to the kernel', () => {
    const {tun, dp, alice} = node()
    const seen: [string, number, number][] = []
    dp.onKeepalive = (peer, _buf, _offset, addr, port) => seen.push([peer.name, addr, port])
    const k = makeKeepalive(1, 0, ipv4ToNumber('10.8.0.2'), ipv4ToNumber('10.8.0.1'), KeepaliveKind.Request, 1n, Buffer.alloc(32))
    k[0] = 0xee
    dp.receive(alice, k, 0, KEEPALIVE_PACKET + 1, ipv4ToNumber('192.0.2.66'), 4242)
    expect(seen).toEqual([['alice', ipv4ToNumber('192.0.2.66'), 4242]])
    expect(tun.written).toEqual([])
  })

  it('routes TUN packets to the peer owning the destination, encapsulated, one flush per batch per peer', () => {
    const {tun, dp, aliceLink, bobLink} = node()
    const slot = 128
    const headroom = 64
    const ring = {buf: Buffer.alloc(4 * slot), slotSize: slot, headroom, tailroom: 0, lengths: new Uint32Array(4)}
    const packets = [ipv4('203.0.113.10', '10.8.0.2'), ipv4('203.0.113.10', '10.8.0.3'), ipv4('203.0.113.10', '10.8.0.2'), ipv4('203.0.113.10', '10.8.0.9')]
    packets.forEach((p, i) => {
      p.copy(ring.buf, i * slot + headroom)
      ring.lengths[i] = p.length
    })
    tun.onBatch!(4, ring)
    expect(aliceLink.sent).toEqual([`ee${packets[0].toString('hex')}`, `ee${packets[2].toString('hex')}`])
    expect(bobLink.sent).toEqual([`ee${packets[1].toString('hex')}`])
    expect([aliceLink.flushes, bobLink.flushes]).toEqual([1, 1])
    expect(dp.counters.noPeer).toBe(1)
  })

  it('drops a TUN packet longer than the ring leaves room for, before encapsulation', () => {
    const {tun, dp, aliceLink} = node()
    const slot = 128
    // 64 bytes headroom, 40 of tailroom: packets up to 24 bytes may be encapsulated.
    const ring = {buf: Buffer.alloc(2 * slot), slotSize: slot, headroom: 64, tailroom: 40, lengths: new Uint32Array(2)}
    const small = ipv4('203.0.113.10', '10.8.0.2', 0)
    const big = ipv4('203.0.113.10', '10.8.0.2', 8)
    small.copy(ring.buf, 64)
    ring.lengths[0] = small.length
    big.copy(ring.buf, slot + 64)
    ring.lengths[1] = big.length
    tun.onBatch!(2, ring)
    expect(aliceLink.sent).toEqual([`ee${small.toString('hex')}`]) // 20 bytes: fits
    expect(dp.counters.badTunPacket).toBe(1) // 28 bytes: would run into the next slot
  })

  it('survives a transport that throws: the batch is cut short and counted, the process goes on', () => {
    const tun = new FakeTun()
    const dp = new DataPath(tun, 'client')
    const link = new FakeLink('node')
    const boom: Session = {...markerSession, encap: () => { throw new Error('plugin bug') }}
    dp.addPeer(new Peer('node1', ipv4ToNumber('10.8.0.1'), '10.8.0.1', boom, link))
    dp.start()
    const ring = {buf: Buffer.alloc(256), slotSize: 128, headroom: 64, tailroom: 0, lengths: new Uint32Array([28])}
    ipv4('10.8.0.2', '203.0.113.10').copy(ring.buf, 64)
    expect(() => tun.onBatch!(1, ring)).not.toThrow()
    expect(dp.counters.transportErrors).toBe(1)
  })
})
