/**
 * The ipsec-over-gre transport with the real binary: ESP (AES-256-GCM) inside GRE inside UDP
 * from clients behind a NAT, decoded layer by layer by tshark, and a replayed capture refused.
 */
import {readFileSync} from 'node:fs'
import {join} from 'node:path'
import {afterAll, beforeAll, describe, expect, inject, it} from 'vitest'
import {type AgentProcess, type EchoServer, type Fleet, createFleet, probeEcho, startEchoServer} from '../../src/testbed/index.js'
import {capture, peers, pingOk, sleep} from './datagram-helpers.js'

let fleet: Fleet
let echo: EchoServer

beforeAll(async () => {
  fleet = await createFleet({prefix: 'ipst', clients: 2, publicClients: 1, transport: 'ipsec-over-gre', keepalive: 2, dataDir: inject('agentDataDir')})
  echo = await startEchoServer(fleet.tb, fleet.tb.names.target)
})

afterAll(async () => {
  await fleet?.tb.destroy()
})

const hex = (n: number) => `0x${n.toString(16).padStart(8, '0')}`

/** The UDP payloads of the packets in a pcap of an Ethernet link (no IP options). */
function udpPayloads(file: string): Buffer[] {
  const pcap = readFileSync(file)
  const out: Buffer[] = []
  for (let off = 24; off + 16 <= pcap.length; ) {
    const len = pcap.readUInt32LE(off + 8)
    const frame = pcap.subarray(off + 16, off + 16 + len)
    const ihl = (frame[14] & 0x0f) * 4
    if (frame[14 + 9] === 17) out.push(frame.subarray(14 + ihl + 8))
    off += 16 + len
  }
  return out
}

describe('ipsec-over-gre transport', () => {
  let node: AgentProcess

  it('carries a NATed client to the target as UDP/GRE/IP/ESP, each direction under its receiver\'s SPI', async () => {
    const {tb} = fleet
    node = await fleet.startNode()
    await fleet.startClient('alice', 0)
    const wire = await capture(fleet, tb.names.node, tb.ifaces.nodeWan, 'udp port 4754', ['udp.dstport', 'gre.key', 'ip.proto', 'esp.spi'], 4)
    await pingOk(fleet, tb.names.client[0])
    const tcp = await probeEcho(tb, tb.names.client[0], tb.addr.target, echo.port, {proto: 'tcp'})
    expect(tcp).toMatchObject({ok: true, peer: {address: tb.addr.nodeEgress}})
    const nodeSpi = (await peers(fleet, tb.names.node))[0].sessionId!
    const clientSpi = (await peers(fleet, tb.names.client[0]))[0].sessionId!
    expect(nodeSpi).not.toBe(clientSpi)
    const lines = await wire.lines
    // To the node: GRE key and ESP SPI are the node's inbound SPI; outer UDP (17), inner ESP (50).
    expect(lines.some((l) => l.startsWith('4754\t') && l.includes(`${hex(nodeSpi)}\t17,50\t${hex(nodeSpi)}`))).toBe(true)
    // To the client: the client's own SPI.
    expect(lines.some((l) => !l.startsWith('4754\t') && l.includes(`${hex(clientSpi)}\t17,50\t${hex(clientSpi)}`))).toBe(true)
  })

  it('serves two clients at once', async () => {
    const {tb} = fleet
    const bob = await fleet.startClient('bob', 1)
    const [a, b] = await Promise.all([
      probeEcho(tb, tb.names.client[0], tb.addr.target, echo.port),
      probeEcho(tb, tb.names.client[1], tb.addr.target, echo.port),
    ])
    expect(a).toMatchObject({ok: true, peer: {address: tb.addr.nodeEgress}})
    expect(b).toMatchObject({ok: true, peer: {address: tb.addr.nodeEgress}})
    bob.child.kill('SIGTERM')
    expect(await bob.exited).toBe(0)
  })

  it('drops and counts a replayed capture, and keeps working', async () => {
    const {tb} = fleet
    const file = join(tb.dir, 'c2s.pcap')
    // -Z root: tcpdump otherwise drops to its own user, which cannot write the testbed's 0700 dir;
    // --immediate-mode -U: write each packet at once, not when a capture block times out.
    const dump = tb.spawn(tb.names.node, 'tcpdump', ['-Z', 'root', '--immediate-mode', '-U', '-i', tb.ifaces.nodeWan, '-w', file, '-c', '6', 'udp dst port 4754 and greater 200'], {stdio: 'ignore'})
    await sleep(1000)
    await tb.exec(tb.names.client[0], 'ping', ['-c', '6', '-i', '0.1', '-s', '300', tb.addr.target])
    await tb.stop(dump)
    const captured = udpPayloads(file)
    expect(captured.length).toBeGreaterThan(0)
    const before = (await peers(fleet, tb.names.node)).find((p) => p.name === 'alice')!
    // Sent again from elsewhere, exactly as captured: the ESP sequence numbers were seen.
    const script = `
      const s = require('node:dgram').createSocket('udp4'); const ps = JSON.parse(process.argv[2]); let n = 0
      for (const p of ps) s.send(Buffer.from(p, 'hex'), 4754, process.argv[1], () => { if (++n === ps.length) s.close() })`
    await tb.exec(tb.names.publicClient[0], process.execPath, ['-e', script, tb.addr.nodeWan, JSON.stringify(captured.map((b) => b.toString('hex')))], {check: true})
    await sleep(500)
    const after = (await peers(fleet, tb.names.node)).find((p) => p.name === 'alice')!
    expect((after.drops.replay ?? 0) - (before.drops.replay ?? 0)).toBe(captured.length)
    await pingOk(fleet, tb.names.client[0])
    expect(node.output).not.toMatch(/moved from/)
  })
})

describe('ipsec-over-gre rekeying', () => {
  let rekeyFleet: Fleet

  beforeAll(async () => {
    rekeyFleet = await createFleet({
      prefix: 'ipsr',
      clients: 1,
      transport: 'ipsec-over-gre',
      keepalive: 2,
      transportOptions: {rekeySeconds: 10},
      dataDir: inject('agentDataDir'),
    })
  })

  afterAll(async () => {
    await rekeyFleet?.tb.destroy()
  })

  it('rekeys make-before-break while a TCP transfer runs, losing no connection', async () => {
    const {tb} = rekeyFleet
    const node = await rekeyFleet.startNode()
    const alice = await rekeyFleet.startClient('alice', 0)
    const [before] = await peers(rekeyFleet, tb.names.node)
    const server = tb.spawn(tb.names.target, 'iperf3', ['-s', '-1'], {stdio: 'ignore'})
    await sleep(500)
    // 16 s of TCP spans the rekey at 10 s.
    const run = await tb.exec(tb.names.client[0], 'iperf3', ['-c', tb.addr.target, '-t', '16', '-J'], {timeoutMs: 60_000})
    await tb.stop(server)
    expect(run.code, run.stderr).toBe(0)
    const result = JSON.parse(run.stdout)
    expect(result.error).toBeUndefined()
    expect(result.end.sum_received.bytes).toBeGreaterThan(0)
    const [after] = await peers(rekeyFleet, tb.names.node)
    expect(after.sessionId).not.toBe(before.sessionId) // the node receives on a new SPI now
    expect(node.output.match(/client alice connected/g)).toHaveLength(1) // one session throughout
    expect(alice.output).not.toMatch(/lost|failed/)
    // After the overlap the old inbound SA is gone: a packet under the old SPI finds no session.
    await sleep(6000)
    const counters = async () => JSON.parse((await rekeyFleet.cli(tb.names.node, ['status', '--json'])).stdout)[0].counters
    const unknownBefore = (await counters()).unknownSession ?? 0
    const script = `
      const s = require('node:dgram').createSocket('udp4'); const b = Buffer.alloc(64); b.writeUInt16BE(0x2000, 0); b.writeUInt16BE(0x0800, 2)
      b.writeUInt32BE(+process.argv[2], 4); b[8] = 0x45; s.send(b, 4754, process.argv[1], () => s.close())`
    await tb.exec(tb.names.client[0], process.execPath, ['-e', script, tb.addr.nodeWan, String(before.sessionId)], {check: true})
    await sleep(300)
    expect((await counters()).unknownSession - unknownBefore).toBe(1)
    // The native fast path follows the rekey: traffic under the new SAs is its, both ways.
    const fastRx = async (ns: string) => JSON.parse((await rekeyFleet.cli(ns, ['status', '--json'])).stdout)[0].counters.fastPathRxPackets as number
    const [nodeRx, clientRx] = [await fastRx(tb.names.node), await fastRx(tb.names.client[0])]
    const ping = await tb.exec(tb.names.client[0], 'ping', ['-c', '20', '-i', '0.05', '-W', '2', tb.addr.target])
    expect(ping.code, ping.stdout).toBe(0)
    expect((await fastRx(tb.names.node)) - nodeRx).toBeGreaterThanOrEqual(20)
    expect((await fastRx(tb.names.client[0])) - clientRx).toBeGreaterThanOrEqual(20)
  }, 90_000)
})
