/**
 * The node's datagram side on its own: which session a datagram lands in, endpoint takeover
 * between id-less sessions, and ids released when a (rekeyed) session ends. A real UDP socket
 * on 127.0.0.1 (for the keepalive replies), a fake TUN, and datagrams fed as the socket would.
 */
import {afterEach, describe, expect, it, vi} from 'vitest'
import {DataPath} from '../../src/core/device/datapath.js'
import {Peer} from '../../src/core/device/peer.js'
import type {DatagramLink} from '../../src/core/carrier/datagram-link.js'
import type {DatagramRing} from '../../src/core/carrier/datagram.js'
import {NodeDatagrams} from '../../src/core/node/node-datagrams.js'
import {FOREIGN_VERIFY_PER_SOURCE, SESSION_VERIFY_BURST, SESSION_VERIFY_PER_SECOND} from '../../src/core/nat/keepalive-budget.js'
import {KEEPALIVE_PACKET, KeepaliveKind, makeKeepalive} from '../../src/core/nat/keepalive.js'
import {ipv4ToNumber} from '../../src/core/net/ipv4.js'
import {createLogger} from '../../src/core/log.js'
import type {Drop, Session, Span, Transport} from '../../src/core/transport/contract.js'
import type {TunDevice} from '../../src/core/tun/device.js'

const fakeTun: TunDevice = {name: 'fake0', start() {}, write: () => true, close() {}}

/** A pass-through session with an optional 4-byte id header (ids) or none (ipip-like). */
function session(id?: number): Session {
  const h = id === undefined ? 0 : 4
  return {
    id,
    headroom: h,
    tailroom: 0,
    encap(buf: Buffer, offset: number, length: number, out: Span) {
      if (h) buf.writeUInt32BE(id!, offset - 4)
      out.offset = offset - h
      out.length = length + h
      return true
    },
    decap(_buf: Buffer, offset: number, length: number, out: Span): Drop | null {
      out.offset = offset + h
      out.length = length - h
      return null
    },
    close() {},
  }
}

function transport(withIds: boolean): Transport {
  return {
    name: withIds ? 'idful' : 'idless',
    description: 'test',
    carrier: () => ({kind: 'udp', port: 0}),
    overhead: () => 0,
    nat: {keepaliveSeconds: 15},
    openNodeSession: () => {
      throw new Error('unused')
    },
    openClientSession: () => {
      throw new Error('unused')
    },
    ...(withIds
      ? {sessionIdOf: (buf: Buffer, offset: number, length: number) => (length >= 4 ? buf.readUInt32BE(offset) : undefined)}
      : {
          innerOf: (_buf: Buffer, offset: number, length: number, out: Span) => {
            out.offset = offset
            out.length = length
            return true
          },
        }),
  }
}

const NODE = ipv4ToNumber('10.8.0.1')
/** Each session's keys, as its own TLS connection would export them. */
const keysOf = (address: string) => {
  const b = ipv4ToNumber(address) & 0xff
  return {toNode: Buffer.alloc(32, b), toClient: Buffer.alloc(32, b + 100)}
}
const open: NodeDatagrams[] = []

function setup(withIds: boolean) {
  const datapath = new DataPath(fakeTun, 'node')
  datapath.localAddress = NODE
  const nd = new NodeDatagrams({kind: 'udp', port: 0}, transport(withIds), datapath, '127.0.0.1', 1400, createLogger('error'))
  open.push(nd)
  const add = (name: string, address: string, id?: number) => {
    const link = nd.newLink()
    const peer = new Peer(name, ipv4ToNumber(address), address, session(id), link)
    link.stats = peer.stats
    const keys = keysOf(address)
    nd.attach(peer, {receive: keys.toNode, send: keys.toClient})
    datapath.addPeer(peer)
    return peer
  }
  /** Feed datagrams as the socket would: [payload, from address, from port]. */
  const feed = (...datagrams: [Buffer, string, number][]) => {
    const slot = 2048
    const ring: DatagramRing = {
      buf: Buffer.alloc(datagrams.length * slot),
      slotSize: slot,
      headroom: 64,
      maxPayload: slot - 64,
      lengths: new Uint32Array(datagrams.length),
      addrs: new Uint32Array(datagrams.length),
      ports: new Uint16Array(datagrams.length),
    } as DatagramRing
    datagrams.forEach(([p, a, port], i) => {
      p.copy(ring.buf, i * slot + 64)
      ring.lengths[i] = p.length
      ring.addrs[i] = ipv4ToNumber(a)
      ring.ports[i] = port
    })
    ;(nd as unknown as {onBatch: (n: number, r: DatagramRing) => void}).onBatch(datagrams.length, ring)
  }
  let counter = 0n
  const keepalive = (from: string, id?: number) => {
    const k = makeKeepalive(0, 0, ipv4ToNumber(from), NODE, KeepaliveKind.Request, ++counter, keysOf(from).toNode)
    if (id === undefined) return k
    const h = Buffer.alloc(4)
    h.writeUInt32BE(id)
    return Buffer.concat([h, k])
  }
  return {nd, add, feed, keepalive}
}

afterEach(() => {
  for (const nd of open.splice(0)) nd.close()
  vi.useRealTimers()
})

describe('node datagrams', () => {
  it('places an id-less session by its proven endpoint, and a takeover makes the other forget it', () => {
    const {add, feed, keepalive} = setup(false)
    const alice = add('alice', '10.8.0.2')
    const bob = add('bob', '10.8.0.3')
    feed([keepalive('10.8.0.2'), '192.0.2.1', 1000], [keepalive('10.8.0.3'), '192.0.2.1', 2000])
    expect([(alice.link as DatagramLink).endpoint, (bob.link as DatagramLink).endpoint]).toEqual(['192.0.2.1:1000', '192.0.2.1:2000'])
    // The NAT gives alice the port bob had: alice proves herself there.
    feed([keepalive('10.8.0.2'), '192.0.2.1', 2000])
    expect((alice.link as DatagramLink).endpoint).toBe('192.0.2.1:2000')
    expect((bob.link as DatagramLink).addr).toBe(0) // bob's replies no longer go to alice
    expect(bob.stats.dropsSnapshot()).toEqual({})
    // Data claiming bob's address from the port alice now holds is bob's at a wrong endpoint.
    const data = Buffer.from(keepalive('10.8.0.3'))
    data[9] = 17
    feed([data, '192.0.2.1', 2000])
    expect(bob.stats.dropsSnapshot()).toEqual({endpoint: 1})
  })

  it('never moves a session for a forged or replayed keepalive', () => {
    const {add, feed, keepalive} = setup(false)
    const alice = add('alice', '10.8.0.2')
    const k = keepalive('10.8.0.2')
    feed([k, '192.0.2.1', 1000])
    feed([k, '198.51.100.66', 1000]) // the same keepalive again, from elsewhere
    const forged = Buffer.from(keepalive('10.8.0.2'))
    forged[KEEPALIVE_PACKET - 1] ^= 1
    feed([forged, '198.51.100.66', 1000])
    expect((alice.link as DatagramLink).endpoint).toBe('192.0.2.1:1000')
    expect(alice.stats.dropsSnapshot()).toEqual({authentication: 2})
  })

  it("charges a stranger's forged keepalives to the stranger, never to the session it names", () => {
    vi.useFakeTimers({toFake: ['Date']})
    vi.setSystemTime(1_000_000)
    const {nd, add, feed, keepalive} = setup(false)
    const alice = add('alice', '10.8.0.2')
    feed([keepalive('10.8.0.2'), '192.0.2.1', 1000])
    // A stranger who knows alice's tunnel address floods forged keepalives from its own address.
    const forged = Buffer.from(keepalive('10.8.0.2'))
    forged[KEEPALIVE_PACKET - 1] ^= 1
    const flood = 3 * FOREIGN_VERIFY_PER_SOURCE
    feed(...Array.from({length: flood}, (_, i) => [forged, '198.51.100.66', 1000 + (i % 7)] as [Buffer, string, number]))
    // Its address's budget is verified and refused; the rest never costs a MAC.
    expect(alice.stats.dropsSnapshot()).toEqual({authentication: FOREIGN_VERIFY_PER_SOURCE})
    expect(nd.counters.keepaliveForeignRate).toBe(flood - FOREIGN_VERIFY_PER_SOURCE)
    // Within the same second, alice's own keepalives still verify (her budget is untouched)...
    for (let i = 0; i < SESSION_VERIFY_BURST; i++) feed([keepalive('10.8.0.2'), '192.0.2.1', 1000])
    expect(alice.stats.dropsSnapshot()).toEqual({authentication: FOREIGN_VERIFY_PER_SOURCE})
    // ...and a NAT rebinding of hers, from another address than the stranger's, still moves her.
    feed([keepalive('10.8.0.2'), '192.0.2.9', 3000])
    expect((alice.link as DatagramLink).endpoint).toBe('192.0.2.9:3000')
  })

  it('verifies at most a burst of keepalives from a session\'s own endpoint, then a steady rate', () => {
    vi.useFakeTimers({toFake: ['Date']})
    vi.setSystemTime(1_000_000)
    const {add, feed, keepalive} = setup(false)
    const alice = add('alice', '10.8.0.2')
    feed([keepalive('10.8.0.2'), '192.0.2.1', 1000])
    // Someone forging alice's own address and port spends her budget (and only that).
    const forged = Buffer.from(keepalive('10.8.0.2'))
    forged[KEEPALIVE_PACKET - 1] ^= 1
    const flood = 3 * SESSION_VERIFY_BURST
    feed(...Array.from({length: flood}, () => [forged, '192.0.2.1', 1000] as [Buffer, string, number]))
    // (Her first keepalive came before her endpoint was known: that was the foreign budget's.)
    expect(alice.stats.dropsSnapshot()).toEqual({authentication: SESSION_VERIFY_BURST, 'keepalive-rate': flood - SESSION_VERIFY_BURST})
    // After a tenth of a second's worth of budget came back, her own keepalive verifies again.
    vi.setSystemTime(1_000_000 + Math.ceil(1000 / SESSION_VERIFY_PER_SECOND))
    const seen = alice.stats.lastSeen
    vi.setSystemTime(1_000_000 + Math.ceil(1000 / SESSION_VERIFY_PER_SECOND) + 1)
    feed([keepalive('10.8.0.2'), '192.0.2.1', 1000])
    expect(alice.stats.lastSeen).toBeGreaterThan(seen)
  })

  it('releases every id a session was bound under when it ends, including one it no longer uses', () => {
    const {nd, add, feed, keepalive} = setup(true)
    const alice = add('alice', '10.8.0.2', 111)
    nd.bindId(222, alice) // a rekey's new id
    feed([keepalive('10.8.0.2', 222), '192.0.2.1', 1000])
    expect((alice.link as DatagramLink).endpoint).toBe('192.0.2.1:1000')
    nd.detach(alice)
    feed([keepalive('10.8.0.2', 111), '192.0.2.1', 1000], [keepalive('10.8.0.2', 222), '192.0.2.1', 1000])
    expect(nd.counters.unknownSession).toBe(2)
  })

  it('refuses to bind an id that another session holds', () => {
    const {nd, add} = setup(true)
    add('alice', '10.8.0.2', 111)
    const bob = add('bob', '10.8.0.3', 222)
    expect(() => nd.bindId(111, bob)).toThrow(/bound to alice already/)
  })
})
