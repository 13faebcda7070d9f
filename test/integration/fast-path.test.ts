/**
 * The native fast path (src/core/device/native/fastpath.c) with the real binary: it carries
 * gre, ipip and ipsec-over-gre traffic both ways without JavaScript, counts it per peer, still
 * refuses a client's spoofed inner source (which it leaves to JavaScript to drop and count),
 * speaks the same wire format as the JavaScript codecs (one end native, the other not), and
 * AGENT_FAST_PATH=off puts everything back on the JavaScript path, which still works. For tls,
 * the connection itself moves to native records after the welcome, when both ends can.
 */
import {afterAll, describe, expect, inject, it} from 'vitest'
import {join} from 'node:path'
import {type Fleet, createFleet, probeEcho, startEchoServer, waitForOutput} from '../../src/testbed/index.js'
import {capture, peers as peersOf, pingOk, sleep} from './datagram-helpers.js'

interface Status {
  counters: Record<string, number>
  peers: {name: string; rxPackets: number; txPackets: number; drops: Record<string, number>; path: string}[]
}

async function status(fleet: Fleet, ns: string): Promise<Status> {
  const r = await fleet.cli(ns, ['status', '--json'])
  expect(r.code, r.stderr).toBe(0)
  return JSON.parse(r.stdout)[0]
}

/**
 * From `ns`, through its routes (so into the client's TUN), `count` UDP packets to `dst` with
 * the inner source address `src`: what a client would send to speak for another one.
 */
async function sendWithSource(fleet: Fleet, ns: string, src: string, dst: string, count: number): Promise<void> {
  const script = `
import socket, struct, sys
src, dst, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
def csum(b):
    s = sum(struct.unpack('!10H', b))
    while s > 0xffff: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
udp = struct.pack('!HHHH', 40000, 9, 12, 0) + b'spoof'[:4]
hdr = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, socket.inet_aton(src), socket.inet_aton(dst))
hdr = hdr[:10] + struct.pack('!H', csum(hdr)) + hdr[12:]
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
for _ in range(count): s.sendto(hdr + udp, (dst, 0))
`
  const r = await fleet.tb.exec(ns, 'python3', ['-c', script, src, dst, String(count)])
  expect(r.code, r.stderr).toBe(0)
}

const TRANSFER = join(import.meta.dirname, '..', 'fixtures', 'tcp', 'transfer.mjs')
const TRANSFER_PORT = 5201

/** 8 MiB each way through the tunnel over TCP, every byte checked at the other end. */
async function bulkBothWays(fleet: Fleet): Promise<void> {
  const {tb} = fleet
  const server = tb.spawn(tb.names.target, process.execPath, [TRANSFER, 'server', String(TRANSFER_PORT)], {stdio: ['ignore', 'pipe', 'pipe']})
  try {
    await waitForOutput(server, /listening/, 10_000)
    for (const dir of ['up', 'down']) {
      const r = await tb.exec(tb.names.client[0], process.execPath, [TRANSFER, 'client', tb.addr.target, String(TRANSFER_PORT), dir, String(8 << 20)], {timeoutMs: 90_000})
      expect(JSON.parse(r.stdout), `${dir}: ${r.stdout}${r.stderr}`).toMatchObject({ok: true, bytes: 8 << 20})
    }
  } finally {
    await tb.stop(server)
  }
}

const fleets: Fleet[] = []

/** A fleet of one client on `transport`, node and alice up, an echo server on the target. */
async function up(prefix: string, transport: string, o: {env?: Record<string, string>; nodeEnv?: Record<string, string>; clientEnv?: Record<string, string>} = {}) {
  const fleet = await createFleet({prefix, clients: 1, transport, dataDir: inject('agentDataDir'), env: o.env})
  fleets.push(fleet)
  const echo = await startEchoServer(fleet.tb, fleet.tb.names.target)
  await fleet.startNode({env: o.nodeEnv})
  await fleet.startClient('alice', 0, {env: o.clientEnv})
  return {fleet, tb: fleet.tb, echo}
}
afterAll(async () => {
  await Promise.all(fleets.map((f) => f.tb.destroy()))
})

const TRANSPORTS = ['gre', 'ipip', 'ipsec-over-gre']

describe.each(TRANSPORTS)('fast path: %s', (transport) => {
  it('carries traffic both ways natively, counted per peer, and still drops a spoofed inner source', async () => {
    const {fleet, tb, echo} = await up(`fp${transport.slice(0, 3)}`, transport)
    await pingOk(fleet, tb.names.client[0], 20)
    const tcp = await probeEcho(tb, tb.names.client[0], tb.addr.target, echo.port, {proto: 'tcp'})
    expect(tcp).toMatchObject({ok: true, peer: {address: tb.addr.nodeEgress}})

    const node = await status(fleet, tb.names.node)
    const client = await status(fleet, tb.names.client[0])
    for (const s of [node, client]) {
      expect(s.counters.fastPathSessions).toBe(1)
      expect(s.peers[0].path).toBe('native')
      // 20 pings and a TCP exchange each way at least, none of it through JavaScript's encap.
      expect(s.counters.fastPathTxPackets).toBeGreaterThanOrEqual(20)
      expect(s.counters.fastPathRxPackets).toBeGreaterThanOrEqual(20)
      // The peer's counters include what the fast path carried.
      expect(s.peers[0].rxPackets).toBeGreaterThanOrEqual(s.counters.fastPathRxPackets)
      expect(s.peers[0].txPackets).toBeGreaterThanOrEqual(s.counters.fastPathTxPackets)
    }

    // Bulk TCP both ways arrives byte for byte, and the receiving ends wrote runs of segments
    // to their TUN as single GSO packets (the node uploads' runs, the client downloads').
    await bulkBothWays(fleet)
    for (const ns of [tb.names.node, tb.names.client[0]]) {
      const c = (await status(fleet, ns)).counters
      expect(c.fastPathTunGsoPackets, ns).toBeGreaterThan(0)
      expect(c.fastPathTunGsoSegments).toBeGreaterThan(2 * c.fastPathTunGsoPackets)
    }

    // Oversize, as a router answers it: the tunnel MTU leaves room for the transport's overhead
    // on a 1500-byte path, a DF packet over it is refused with the MTU (never sent as an
    // outer fragment), and one without DF is fragmented before the tunnel and still arrives.
    const mtu = Number(/mtu (\d+)/.exec((await tb.exec(tb.names.client[0], 'ip', ['link', 'show', 'agtun0'])).stdout)?.[1])
    expect(mtu).toBe(transport === 'gre' ? 1464 : transport === 'ipip' ? 1472 : 1500 - 28 - 8 - 57)
    const big = await tb.exec(tb.names.client[0], 'ping', ['-c', '1', '-W', '2', '-M', 'do', '-s', String(mtu - 28 + 1), tb.addr.target])
    expect(big.code).not.toBe(0)
    expect(big.stdout + big.stderr).toMatch(new RegExp(`mtu ?= ?${mtu}`))
    const frag = await tb.exec(tb.names.client[0], 'ping', ['-c', '2', '-i', '0.2', '-W', '2', '-M', 'dont', '-s', '2000', tb.addr.target])
    expect(frag.code, frag.stdout).toBe(0)

    // alice sends as bob (10.99.0.50) through her own, authenticated session: the node must
    // neither forward it natively nor in JavaScript.
    const before = node.peers[0].drops.source ?? 0
    await sendWithSource(fleet, tb.names.client[0], '10.99.0.50', tb.addr.target, 5)
    await sleep(500)
    const after = (await peersOf(fleet, tb.names.node))[0]
    expect((after.drops.source ?? 0) - before).toBe(5)
  })
})

// The C codecs against the JavaScript ones (which are checked against Wireshark, Python and
// the RFCs): with the fast path on one end only, every data packet is sealed by one and opened
// by the other. For ipsec-over-gre that covers the nonce, AAD, padding, outer header and
// replay window sharing; a mismatch anywhere would lose every packet.
describe.each(TRANSPORTS)('fast path against JavaScript: %s', (transport) => {
  it.each([
    ['node', 'client'],
    ['client', 'node'],
  ])('native %s, JavaScript %s', async (native) => {
    const off = {AGENT_FAST_PATH: 'off'}
    const {fleet, tb, echo} = await up(`fx${transport.slice(0, 3)}${native[0]}`, transport, {
      nodeEnv: native === 'node' ? {} : off,
      clientEnv: native === 'client' ? {} : off,
    })
    await pingOk(fleet, tb.names.client[0], 10)
    expect(await probeEcho(tb, tb.names.client[0], tb.addr.target, echo.port, {proto: 'tcp'})).toMatchObject({ok: true})
    await bulkBothWays(fleet)
    const nativeNs = native === 'node' ? tb.names.node : tb.names.client[0]
    const jsNs = native === 'node' ? tb.names.client[0] : tb.names.node
    const n = await status(fleet, nativeNs)
    expect(n.counters.fastPathTxPackets).toBeGreaterThanOrEqual(10)
    expect(n.counters.fastPathRxPackets).toBeGreaterThanOrEqual(10)
    const j = await status(fleet, jsNs)
    expect(j.counters.fastPathSessions).toBeUndefined()
    // Nothing the native end sealed was refused by the JavaScript end, nor the other way.
    for (const s of [n, j]) expect(s.peers[0].drops).not.toHaveProperty('authentication')
    await fleet.tb.destroy()
  })
})

describe('fast path: AGENT_FAST_PATH=off', () => {
  it('carries gre through JavaScript alone, with no fast path counters', async () => {
    const {fleet, tb, echo} = await up('fpoff', 'gre', {env: {AGENT_FAST_PATH: 'off'}})
    await pingOk(fleet, tb.names.client[0], 5)
    expect(await probeEcho(tb, tb.names.client[0], tb.addr.target, echo.port, {proto: 'tcp'})).toMatchObject({ok: true})
    await bulkBothWays(fleet)
    for (const ns of [tb.names.node, tb.names.client[0]]) {
      const s = await status(fleet, ns)
      expect(s.counters.fastPathSessions).toBeUndefined()
      expect(s.peers[0].path).toBe('javascript')
      expect(s.peers[0].rxPackets).toBeGreaterThanOrEqual(5)
      expect(s.peers[0].txPackets).toBeGreaterThanOrEqual(5)
    }
  })
})

// tls: after the welcome the connection moves from Node's TLS to native records (stream.c,
// native-records.ts), and the fast path carries the session's packets on it.
describe('native records: tls', () => {
  it('carries tls natively both ways, counted per peer, and still drops a spoofed inner source', async () => {
    const {fleet, tb, echo} = await up('fptls', 'tls')
    await pingOk(fleet, tb.names.client[0], 20)
    expect(await probeEcho(tb, tb.names.client[0], tb.addr.target, echo.port, {proto: 'tcp'})).toMatchObject({ok: true, peer: {address: tb.addr.nodeEgress}})
    for (const ns of [tb.names.node, tb.names.client[0]]) {
      const s = await status(fleet, ns)
      expect(s.counters.fastPathSessions, ns).toBe(1)
      expect(s.peers[0].path).toBe('native')
      expect(s.counters.fastPathTxPackets).toBeGreaterThanOrEqual(20)
      expect(s.counters.fastPathRxPackets).toBeGreaterThanOrEqual(20)
      expect(s.peers[0].rxPackets).toBeGreaterThanOrEqual(s.counters.fastPathRxPackets)
    }
    await bulkBothWays(fleet)
    for (const ns of [tb.names.node, tb.names.client[0]]) {
      const c = (await status(fleet, ns)).counters
      expect(c.fastPathTunGsoPackets, ns).toBeGreaterThan(0)
    }
    const node = await status(fleet, tb.names.node)
    const before = node.peers[0].drops.source ?? 0
    await sendWithSource(fleet, tb.names.client[0], '10.99.0.50', tb.addr.target, 5)
    await sleep(500)
    expect(((await peersOf(fleet, tb.names.node))[0].drops.source ?? 0) - before).toBe(5)

    // On the wire it is still a TLS 1.3 stream: Wireshark's TLS dissector reads every record
    // the native ends write as application data (type 23, legacy version 0x0303).
    const wire = await capture(fleet, tb.names.node, tb.ifaces.nodeWan, 'tcp port 4443 and greater 100', ['tls.record.content_type', 'tls.record.version'], 4, ['-d', 'tcp.port==4443,tls'])
    await pingOk(fleet, tb.names.client[0], 5)
    const records = (await wire.lines).flatMap((line) => {
      const [types, versions] = line.split('\t')
      return types.split(',').map((t, i) => `${t}/${versions.split(',')[i]}`)
    })
    expect(records.length).toBeGreaterThanOrEqual(10)
    expect(new Set(records)).toEqual(new Set(['23/0x0303']))
  })

  // An end that cannot take over (here: turned off) does not ask or agree, and the session
  // stays in Node's TLS: the same frames, so it works either way round.
  it.each([
    ['node', 'client'],
    ['client', 'node'],
  ])('native-capable %s with a JavaScript-only %s stays in Node\'s TLS and works', async (capable) => {
    const off = {AGENT_FAST_PATH: 'off'}
    const {fleet, tb, echo} = await up(`fxtls${capable[0]}`, 'tls', {
      nodeEnv: capable === 'node' ? {} : off,
      clientEnv: capable === 'client' ? {} : off,
    })
    await pingOk(fleet, tb.names.client[0], 10)
    expect(await probeEcho(tb, tb.names.client[0], tb.addr.target, echo.port, {proto: 'tcp'})).toMatchObject({ok: true})
    await bulkBothWays(fleet)
    for (const ns of [tb.names.node, tb.names.client[0]]) {
      const s = await status(fleet, ns)
      expect(s.counters.fastPathSessions ?? 0, ns).toBe(0)
      expect(s.peers[0].path).toBe('javascript')
      expect(s.peers[0].rxPackets).toBeGreaterThanOrEqual(10)
    }
    await fleet.tb.destroy()
  })
})
