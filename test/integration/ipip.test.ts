/**
 * The ipip transport with the real binary: IP-in-UDP from clients behind a masquerading NAT,
 * bare IPIP (IP protocol 4) between public addresses, NAT rebinding, and spoofed inner sources.
 * IPIP has no key: sessions are found by endpoint, which only authenticated keepalives set.
 */
import {afterAll, beforeAll, describe, expect, inject, it} from 'vitest'
import {readFileSync, writeFileSync} from 'node:fs'
import {type AgentProcess, type EchoServer, type Fleet, createFleet, probeEcho, startEchoServer} from '../../src/testbed/index.js'
import {capture as captureOn, peers as peersOf, pingOk as pingFrom, sendSpoofed, sleep} from './datagram-helpers.js'

let fleet: Fleet
let echo: EchoServer
const peers = (ns: string) => peersOf(fleet, ns)
const pingOk = (ns: string) => pingFrom(fleet, ns)
const KEEPALIVE = 2

beforeAll(async () => {
  fleet = await createFleet({prefix: 'ipit', clients: 2, publicClients: 1, transport: 'ipip', keepalive: KEEPALIVE, dataDir: inject('agentDataDir')})
  echo = await startEchoServer(fleet.tb, fleet.tb.names.target)
})

afterAll(async () => {
  await fleet?.tb.destroy()
})



describe('ipip transport', () => {
  let node: AgentProcess
  let alice: AgentProcess

  it('carries a NATed client to the target as IP-in-UDP, the inner packet untouched', async () => {
    const {tb} = fleet
    node = await fleet.startNode()
    expect(node.output).toMatch(/transport ipip, listening on 0\.0\.0\.0:\d+ and udp 0\.0\.0\.0:4755/)
    alice = await fleet.startClient('alice', 0)
    expect(alice.output).toMatch(/over udp to 198\.51\.100\.1:4755/)
    // Decoded as IPv4 inside UDP port 4755 (a decode-as, since 4755 is not a registered port).
    const wire = await captureOn(fleet, tb.names.node, tb.ifaces.nodeWan, 'udp port 4755', ['ip.src', 'ip.dst', 'ip.proto'], 4, ['-d', 'udp.port==4755,ip'])
    await pingOk(tb.names.client[0])
    const tcp = await probeEcho(tb, tb.names.client[0], tb.addr.target, echo.port, {proto: 'tcp'})
    expect(tcp).toMatchObject({ok: true, peer: {address: tb.addr.nodeEgress}})
    const lines = await wire.lines
    // Outer 198.51.100.2 -> .1 (the NAT), inner 10.99.0.2 -> 203.0.113.10, ICMP (1) inside UDP (17).
    expect(lines.some((l) => l.startsWith(`${tb.addr.natWan},10.99.0.2\t${tb.addr.nodeWan},${tb.addr.target}\t17,1`))).toBe(true)
  })

  it('serves two clients behind the same NAT at once, told apart by endpoint', async () => {
    const {tb} = fleet
    const bob = await fleet.startClient('bob', 1)
    const [a, b] = await Promise.all([
      probeEcho(tb, tb.names.client[0], tb.addr.target, echo.port),
      probeEcho(tb, tb.names.client[1], tb.addr.target, echo.port),
    ])
    expect(a).toMatchObject({ok: true, peer: {address: tb.addr.nodeEgress}})
    expect(b).toMatchObject({ok: true, peer: {address: tb.addr.nodeEgress}})
    const list = await peers(tb.names.node)
    expect(new Set(list.map((p) => p.endpoint)).size).toBe(2)
    bob.child.kill('SIGTERM')
    expect(await bob.exited).toBe(0)
  })

  it('follows a NAT rebinding once the client proves itself with a keepalive', async () => {
    const {tb} = fleet
    // Ports the NAT must move alice to: a range that does not hold her port now (MASQUERADE
    // keeps a port that is already in its range, and then nothing would move).
    const now = Number((await peers(tb.names.node)).find((p) => p.name === 'alice')!.endpoint.split(':')[1])
    const range = now >= 41000 && now <= 41999 ? '43000-43999' : '41000-41999'
    const rule = ['-o', tb.ifaces.natWan, '-p', 'udp', '-j', 'MASQUERADE', '--to-ports', range]
    await tb.exec(tb.names.nat, 'iptables', ['-w', '-t', 'nat', '-I', 'POSTROUTING', '1', ...rule], {check: true})
    try {
      // Marked before the flush: a keepalive can cross the new mapping while the flush returns.
      const mark = node.output.length
      await tb.flushNatConntrack()
      await node.waitFor(new RegExp(`client alice moved from 198\\.51\\.100\\.2:${now} to 198\\.51\\.100\\.2:${range.slice(0, 2)}\\d{3}`), (KEEPALIVE + 3) * 1000, mark)
      await pingOk(tb.names.client[0])
    } finally {
      await tb.exec(tb.names.nat, 'iptables', ['-w', '-t', 'nat', '-D', 'POSTROUTING', ...rule])
    }
  })

  it("drops a client's inner source sent from another endpoint, and moves nothing", async () => {
    const {tb} = fleet
    const before = (await peers(tb.names.node)).find((p) => p.name === 'alice')!
    // From a public address: packets claiming alice's tunnel address, and keepalive-shaped
    // packets with a made-up MAC. IPIP has no key to check, so only the endpoint and the
    // keepalive's MAC stand between these and alice's session.
    await sendSpoofed(fleet, tb.names.publicClient[0], {port: 4755, src: before.address})
    await sleep(500)
    const after = (await peers(tb.names.node)).find((p) => p.name === 'alice')!
    expect(after.endpoint).toBe(before.endpoint)
    expect((after.drops.endpoint ?? 0) - (before.drops.endpoint ?? 0)).toBe(5)
    expect((after.drops.authentication ?? 0) - (before.drops.authentication ?? 0)).toBe(5)
    await pingOk(tb.names.client[0])
    alice.child.kill('SIGTERM')
    node.child.kill('SIGTERM')
    expect(await alice.exited).toBe(0)
    expect(await node.exited).toBe(0)
  })

  it('carries bare IPIP (IP protocol 4) between public addresses', async () => {
    const {tb} = fleet
    const ipConfig = fleet.nodeConfig.replace(/\.yaml$/, '-ip.yaml')
    writeFileSync(ipConfig, readFileSync(fleet.nodeConfig, 'utf8').replace(`ipip: {keepalive: ${KEEPALIVE}}`, `ipip: {keepalive: ${KEEPALIVE}, carrier: ip}`))
    node = await fleet.startNode({config: ipConfig})
    expect(node.output).toMatch(/and ip protocol 4,/)
    alice = await fleet.startClient('alice', 7, {ns: tb.names.publicClient[0]})
    const wire = await captureOn(fleet, tb.names.node, tb.ifaces.nodeWan, 'ip proto 4', ['ip.src', 'ip.dst', 'ip.proto', 'ip.ttl', 'ip.flags.df', 'ip.dsfield'], 6)
    await pingOk(tb.names.publicClient[0])
    const tcp = await probeEcho(tb, tb.names.publicClient[0], tb.addr.target, echo.port, {proto: 'tcp'})
    expect(tcp).toMatchObject({ok: true, peer: {address: tb.addr.nodeEgress}})
    // Two marked pings: DF set and TOS 0x28, then DF clear and TOS 0x48.
    for (const [df, tos] of [['do', '0x28'], ['dont', '0x48']]) {
      const r = await tb.exec(tb.names.publicClient[0], 'ping', ['-c', '2', '-i', '0.2', '-W', '2', '-M', df, '-Q', tos, tb.addr.target])
      expect(r.code, r.stdout).toBe(0)
    }
    const lines = await wire.lines
    // RFC 2003: outer protocol 4 around the untouched inner packet; the outer TTL is fresh (64).
    expect(lines.some((l) => l.startsWith(`${tb.addr.publicClient[0]},10.99.0.2\t${tb.addr.nodeWan},${tb.addr.target}\t4,1\t64,`))).toBe(true)
    // RFC 2003 3.1: the outer header copies the inner TOS and DF (the client's requests here).
    const requests = lines.map((l) => l.split('\t')).filter((f) => f[0] === `${tb.addr.publicClient[0]},10.99.0.2`)
    const yes = (v: string) => v === '1' || v === 'True'
    const marked = (tos: string) => requests.filter((f) => f[5] === `${tos},${tos}`)
    expect(marked('0x28').length).toBeGreaterThanOrEqual(2)
    expect(marked('0x48').length).toBeGreaterThanOrEqual(2)
    for (const f of marked('0x28')) expect(f[4].split(',').map(yes)).toEqual([true, true])
    for (const f of marked('0x48')) expect(f[4].split(',').map(yes)).toEqual([false, false])
    alice.child.kill('SIGTERM')
    node.child.kill('SIGTERM')
    expect(await alice.exited).toBe(0)
    expect(await node.exited).toBe(0)
  })
})
