/**
 * The gre transport with the real binary: GRE-in-UDP from clients behind a masquerading NAT,
 * bare GRE (IP protocol 47) between public addresses, NAT rebinding and idle timeouts, and a
 * stranger holding a valid key.
 */
import {afterAll, beforeAll, describe, expect, inject, it} from 'vitest'
import {readFileSync, writeFileSync} from 'node:fs'
import {type AgentProcess, type EchoServer, type Fleet, NODE_PORT, admittedAddresses, createFleet, probeEcho, startEchoServer} from '../../src/testbed/index.js'
import {capture as captureOn, greHeaderHex, peers as peersOf, pingOk as pingFrom, sendSpoofed, sleep} from './datagram-helpers.js'

let fleet: Fleet
let echo: EchoServer
const peers = (ns: string) => peersOf(fleet, ns)
const pingOk = (ns: string) => pingFrom(fleet, ns)
const KEEPALIVE = 2

beforeAll(async () => {
  fleet = await createFleet({prefix: 'gret', clients: 2, publicClients: 1, transport: 'gre', keepalive: KEEPALIVE, idleTimeout: 10, dataDir: inject('agentDataDir')})
  echo = await startEchoServer(fleet.tb, fleet.tb.names.target)
})

afterAll(async () => {
  await fleet?.tb.destroy()
})



describe('gre transport', () => {
  let node: AgentProcess
  let alice: AgentProcess

  it('carries a NATed client to the target over GRE-in-UDP, SNATed to the node, with its key on the wire', async () => {
    const {tb} = fleet
    node = await fleet.startNode()
    expect(node.output).toMatch(/transport gre, listening on 0\.0\.0\.0:\d+ and udp 0\.0\.0\.0:4754/)
    // Slow to give up on a silent node: the expiry test below is the node's own, which a
    // client failing over at once (after selection.deadSeconds) would pre-empt.
    alice = await fleet.startClient('alice', 0, {extra: 'selection: {deadSeconds: 60}\n'})
    expect(alice.output).toMatch(/over udp to 198\.51\.100\.1:4754/)

    const wire = await captureOn(fleet, tb.names.node, tb.ifaces.nodeWan, 'udp port 4754', ['udp.srcport', 'udp.dstport', 'gre.key', 'gre.proto'], 4)
    await pingOk(tb.names.client[0])
    const tcp = await probeEcho(tb, tb.names.client[0], tb.addr.target, echo.port, {proto: 'tcp'})
    expect(tcp).toMatchObject({ok: true, peer: {address: tb.addr.nodeEgress}})

    const [me] = await peers(tb.names.client[0])
    expect(me.sessionId).toBeTypeOf('number')
    const key = `0x${me.sessionId!.toString(16).padStart(8, '0')}`
    const lines = await wire.lines
    // Both directions decode as GRE in UDP port 4754, carrying IPv4, with alice's key.
    expect(lines.some((l) => /\t4754\t/.test(l) && l.includes(key) && /0x0800/.test(l))).toBe(true)
    expect(lines.some((l) => /^4754\t/.test(l) && l.includes(key))).toBe(true)
  })

  it('serves two clients behind the same NAT at once, each under its own key', async () => {
    const {tb} = fleet
    const bob = await fleet.startClient('bob', 1)
    const [a, b] = await Promise.all([
      probeEcho(tb, tb.names.client[0], tb.addr.target, echo.port),
      probeEcho(tb, tb.names.client[1], tb.addr.target, echo.port),
    ])
    expect(a).toMatchObject({ok: true, peer: {address: tb.addr.nodeEgress}})
    expect(b).toMatchObject({ok: true, peer: {address: tb.addr.nodeEgress}})
    const list = await peers(tb.names.node)
    expect(list).toHaveLength(2)
    expect(new Set(list.map((p) => p.sessionId)).size).toBe(2)
    // Same public address (the NAT's), different ports.
    expect(new Set(list.map((p) => p.endpoint.split(':')[0]))).toEqual(new Set([tb.addr.natWan]))
    bob.child.kill('SIGTERM')
    expect(await bob.exited).toBe(0)
  })

  it('follows a NAT rebinding within one keepalive interval', async () => {
    const {tb} = fleet
    const before = (await peers(tb.names.node)).find((p) => p.name === 'alice')!.endpoint
    // The home router reboots into another port range: every UDP mapping changes. The range
    // must not hold alice's port now (MASQUERADE keeps a port that is in range: nothing moves).
    const port = Number(before.split(':')[1])
    const range = port >= 40000 && port <= 40999 ? '42000-42999' : '40000-40999'
    const rule = ['-t', 'nat', '-I', 'POSTROUTING', '1', '-o', tb.ifaces.natWan, '-p', 'udp', '-j', 'MASQUERADE', '--to-ports', range]
    await tb.exec(tb.names.nat, 'iptables', ['-w', ...rule], {check: true})
    try {
      // Marked before the flush: a keepalive can cross the new mapping while the flush returns.
      const mark = node.output.length
      await tb.flushNatConntrack()
      await node.waitFor(new RegExp(`client alice moved from 198\\.51\\.100\\.2:${port} to 198\\.51\\.100\\.2:${range.slice(0, 2)}\\d{3}`), (KEEPALIVE + 3) * 1000, mark)
      const after = (await peers(tb.names.node)).find((p) => p.name === 'alice')!.endpoint
      expect(after).not.toBe(before)
      await pingOk(tb.names.client[0])
    } finally {
      await tb.exec(tb.names.nat, 'iptables', ['-w', ...rule.map((a) => (a === '-I' ? '-D' : a)).filter((a) => a !== '1')])
    }
  })

  it('keeps the NAT mapping through idling longer than the NAT forgets unanswered UDP', async () => {
    const {tb} = fleet
    // The NAT's conntrack entry for alice's UDP flow must be the same one after the idle: a
    // mapping that expired and was recreated (MASQUERADE may even reuse the port) has a new id.
    const entryIds = async () =>
      (await tb.exec(tb.names.nat, 'conntrack', ['-L', '-p', 'udp', '--dport', '4754', '-o', 'id'])).stdout.match(/id=\d+/g) ?? []
    await tb.setNatUdpTimeout(3)
    try {
      const before = await entryIds()
      expect(before.length).toBeGreaterThan(0)
      const mark = node.output.length
      await sleep(7000)
      expect(await entryIds()).toEqual(expect.arrayContaining(before))
      expect(node.output.slice(mark)).not.toMatch(/moved from/)
      await pingOk(tb.names.client[0])
    } finally {
      await tb.setNatUdpTimeout(30, 120)
    }
  })

  it('does not move a session for a stranger that knows its key, nor for a forged keepalive', async () => {
    const {tb} = fleet
    const alicePeer = (await peers(tb.names.node)).find((p) => p.name === 'alice')!
    const key = alicePeer.sessionId!
    const drops = (p: {drops: Record<string, number>}, k: string) => p.drops[k] ?? 0
    // From a public address, GRE-in-UDP with alice's key carrying a packet from alice's tunnel
    // address, and a keepalive-shaped packet with a made-up MAC: neither may move alice.
    await sendSpoofed(fleet, tb.names.publicClient[0], {port: 4754, src: alicePeer.address, header: greHeaderHex(key)})
    await sleep(500)
    const now = (await peers(tb.names.node)).find((p) => p.name === 'alice')!
    expect(now.endpoint).toBe(alicePeer.endpoint)
    expect(drops(now, 'endpoint') - drops(alicePeer, 'endpoint')).toBe(5)
    expect(drops(now, 'authentication') - drops(alicePeer, 'authentication')).toBe(5)
    expect(node.output).not.toMatch(new RegExp(`moved from .* to ${tb.addr.publicClient[0].replace(/\./g, '\\.')}`))
    await pingOk(tb.names.client[0])
  })

  it('expires a session whose datagrams stop, and its FORWARD admission with it', async () => {
    const {tb} = fleet
    // The NAT starts dropping UDP while the TLS control connection stays up: only the
    // datagram silence can end the session.
    // New TCP connections are held back too (the established one is not): otherwise the client
    // reconnects at once when the node closes it, and is rightly admitted again before we look.
    const blocks = [
      ['-p', 'udp', '--dport', '4754', '-j', 'DROP'],
      ['-p', 'tcp', '--dport', String(NODE_PORT), '--syn', '-j', 'DROP'],
    ]
    const mark = node.output.length
    for (const b of blocks) await tb.exec(tb.names.nat, 'iptables', ['-w', '-I', 'FORWARD', '1', ...b], {check: true})
    try {
      await node.waitFor(/client alice \(10\.99\.0\.2\) disconnected: no packets for 10 s/, 25_000, mark)
      // Admission is withdrawn right after (coalesced with other changes): give it a moment.
      let admitted: string[] = []
      for (let i = 0; i < 20; i++) {
        admitted = await admittedAddresses(tb, tb.names.node)
        if (!admitted.includes('10.99.0.2')) break
        await sleep(100)
      }
      expect(admitted).not.toContain('10.99.0.2')
    } finally {
      for (const b of blocks) await tb.exec(tb.names.nat, 'iptables', ['-w', '-D', 'FORWARD', ...b])
    }
    // Once UDP passes again the client is back by itself (it reconnects and probes).
    await node.waitFor(/client alice reached us from/, 20_000, mark)
    await pingOk(tb.names.client[0])
  })

  it('switches to another transport with nothing but --transport', async () => {
    const {tb} = fleet
    alice.child.kill('SIGTERM')
    node.child.kill('SIGTERM')
    await Promise.all([alice.exited, node.exited])
    node = await fleet.startNode({args: ['--transport', 'tls']})
    alice = await fleet.startClient('alice', 0, {args: ['--transport', 'tls']})
    expect(alice.output).toMatch(/transport tls/)
    await pingOk(tb.names.client[0])
    alice.child.kill('SIGTERM')
    node.child.kill('SIGTERM')
    expect(await alice.exited).toBe(0)
    expect(await node.exited).toBe(0)
  })

  it('carries bare GRE (IP protocol 47) between public addresses', async () => {
    const {tb} = fleet
    const ipConfig = fleet.nodeConfig.replace(/\.yaml$/, '-ip.yaml')
    writeFileSync(ipConfig, readFileSync(fleet.nodeConfig, 'utf8').replace(`gre: {keepalive: ${KEEPALIVE}}`, `gre: {keepalive: ${KEEPALIVE}, carrier: ip}`))
    node = await fleet.startNode({config: ipConfig})
    expect(node.output).toMatch(/and ip protocol 47/)
    alice = await fleet.startClient('alice', 7, {ns: tb.names.publicClient[0]})
    expect(alice.output).toMatch(/over ip to 198\.51\.100\.1/)
    const wire = await captureOn(fleet, tb.names.node, tb.ifaces.nodeWan, 'ip proto 47', ['ip.src', 'gre.key', 'gre.proto'], 4)
    await pingOk(tb.names.publicClient[0])
    const tcp = await probeEcho(tb, tb.names.publicClient[0], tb.addr.target, echo.port, {proto: 'tcp'})
    expect(tcp).toMatchObject({ok: true, peer: {address: tb.addr.nodeEgress}})
    const [me] = await peers(tb.names.publicClient[0])
    const key = `0x${me.sessionId!.toString(16).padStart(8, '0')}`
    const lines = await wire.lines
    expect(lines.some((l) => l.startsWith(tb.addr.publicClient[0]) && l.includes(key) && /0x0800/.test(l))).toBe(true)
    alice.child.kill('SIGTERM')
    node.child.kill('SIGTERM')
    expect(await alice.exited).toBe(0)
    expect(await node.exited).toBe(0)
  })
})
