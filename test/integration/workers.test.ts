/**
 * The node's workers with the real binary: `workers: 3` gives the node two more threads, each
 * with its own TUN queue and UDP socket, and the kernel steers each client endpoint to one of
 * the three by (source address ^ source port) % 3. The clients' namespaces are left only the
 * source ports that steer to a chosen worker (both sit behind one NAT address, which keeps
 * ports), so alice lands on worker 2 and bob on worker 1 in every run, and the test checks
 * that status names those workers and that they, and no other, carried each client's packets
 * both ways, byte for byte.
 */
import {afterAll, describe, expect, inject, it} from 'vitest'
import {readFileSync, writeFileSync} from 'node:fs'
import {join} from 'node:path'
import {type Fleet, createFleet, portsForLane, useLocalPortsForLane, waitForOutput} from '../../src/testbed/index.js'
import {laneFor} from '../../src/core/carrier/datagram.js'
import {ipv4ToNumber} from '../../src/core/net/ipv4.js'

interface Lane {
  txPackets: number
  rxPackets: number
  handedOff: number
  handoffDrops: number
}
interface NodeStatus {
  counters: Record<string, number>
  workers?: Lane[]
  peers: {name: string; endpoint: string; worker?: number; rxPackets: number; txPackets: number; path: string}[]
}

async function status(fleet: Fleet): Promise<NodeStatus> {
  const r = await fleet.cli(fleet.tb.names.node, ['status', '--json'])
  expect(r.code, r.stderr).toBe(0)
  return JSON.parse(r.stdout)[0]
}

const TRANSFER = join(import.meta.dirname, '..', 'fixtures', 'tcp', 'transfer.mjs')
const TRANSFER_PORT = 5201

/** 4 MiB each way over TCP from client `index`, every byte checked at the other end. */
async function bulk(fleet: Fleet, index: number): Promise<void> {
  const {tb} = fleet
  for (const dir of ['up', 'down']) {
    const r = await tb.exec(tb.names.client[index], process.execPath, [TRANSFER, 'client', tb.addr.target, String(TRANSFER_PORT), dir, String(4 << 20)], {timeoutMs: 90_000})
    expect(JSON.parse(r.stdout), `${dir}: ${r.stdout}${r.stderr}`).toMatchObject({ok: true, bytes: 4 << 20})
  }
}

const fleets: Fleet[] = []
afterAll(async () => {
  await Promise.all(fleets.map((f) => f.tb.destroy()))
})

const LANES = 3
const PLACE = {alice: 2, bob: 1}

/** alice (client 1) on worker 2 and bob (client 2) on worker 1 of a node with 3. */
async function upTwo(prefix: string, transport: string) {
  const fleet = await createFleet({prefix, clients: 2, transport, dataDir: inject('agentDataDir'), workers: LANES})
  fleets.push(fleet)
  const {tb} = fleet
  await useLocalPortsForLane(tb, tb.names.client[0], 0, PLACE.alice, LANES)
  await useLocalPortsForLane(tb, tb.names.client[1], 1, PLACE.bob, LANES)
  const server = tb.spawn(tb.names.target, process.execPath, [TRANSFER, 'server', String(TRANSFER_PORT)], {stdio: ['ignore', 'pipe', 'pipe']})
  await waitForOutput(server, /listening/, 10_000)
  const node = await fleet.startNode()
  expect(node.output).toMatch(/3 worker\(s\)/)
  await fleet.startClient('alice', 0)
  await fleet.startClient('bob', 1)
  return {fleet, node}
}

/** The lane status predicts for each peer, from its endpoint as the node sees it. */
function predicted(s: NodeStatus): Map<string, number> {
  const out = new Map<string, number>()
  for (const p of s.peers) {
    const [addr, port] = p.endpoint.split(':')
    const lane = laneFor(ipv4ToNumber(addr), Number(port), LANES)
    expect(p.worker, `${p.name} at ${p.endpoint}`).toBe(lane)
    out.set(p.name, lane)
  }
  return out
}

describe.each(['gre', 'ipip'])('workers: %s', (transport) => {
  it('steers each client to the worker status names, which carries its packets both ways', async () => {
    const {fleet} = await upTwo(`wk${transport.slice(0, 2)}`, transport)
    const {tb} = fleet
    // Until both have sent a keepalive the node does not know their endpoints.
    let s = await status(fleet)
    for (let i = 0; i < 50 && s.peers.filter((p) => p.worker !== undefined).length < 2; i++) {
      await new Promise((r) => setTimeout(r, 200))
      s = await status(fleet)
    }
    expect(s.workers).toHaveLength(LANES)
    const lanes = predicted(s)
    expect(lanes.get('alice')).toBe(PLACE.alice)
    expect(lanes.get('bob')).toBe(PLACE.bob)

    for (const [index, name] of [[0, 'alice'], [1, 'bob']] as const) {
      const before = (await status(fleet)).workers!
      const r = await tb.exec(tb.names.client[index], 'ping', ['-c', '50', '-i', '0.01', '-W', '2', tb.addr.target])
      expect(r.code, r.stdout + r.stderr).toBe(0)
      const after = (await status(fleet)).workers!
      const lane = lanes.get(name)!
      // Echo requests in from the client and replies back out, both on its lane. The first
      // reply of a flow may leave by the other: the kernel can send it into the TUN device
      // (within the write of the request) before it has noted which queue wrote that flow.
      const replies = Number(/(\d+) received/.exec(r.stdout)?.[1])
      expect(replies, r.stdout).toBeGreaterThanOrEqual(45)
      expect(after[lane].rxPackets - before[lane].rxPackets, name).toBeGreaterThanOrEqual(50)
      expect(after[lane].txPackets - before[lane].txPackets, name).toBeGreaterThanOrEqual(replies - 1)
      for (let other = 0; other < LANES; other++) {
        if (other === lane) continue
        expect(after[other].rxPackets - before[other].rxPackets, `${name} on ${other}`).toBeLessThan(5)
        expect(after[other].txPackets - before[other].txPackets, `${name} on ${other}`).toBeLessThan(5)
      }
    }

    // Bulk TCP from both at once: each on its own thread, nothing lost or reordered.
    await Promise.all([bulk(fleet, 0), bulk(fleet, 1)])
    const end = await status(fleet)
    for (const w of end.workers!) expect(w.handoffDrops).toBe(0)
    expect(end.counters.fastPathTunGsoPackets).toBeGreaterThan(0)
    // Every packet each client sent reached it: the peers' counters include the worker's.
    for (const p of end.peers) expect(p.rxPackets, p.name).toBeGreaterThan(2000)
  })
})

describe('workers: what a worker hands to the main thread', () => {
  it('hands unknown datagrams to JavaScript whichever socket they reach', async () => {
    const {fleet} = await upTwo('wkunk', 'gre')
    const before = await status(fleet)
    // From 64 source ports that steer to worker 2 (through the NAT, which keeps them).
    const ports = portsForLane(fleet.tb, 2, LANES, 64)
    const script = `
      const dgram = require('node:dgram')
      const [host, port, ports] = process.argv.slice(1)
      const junk = Buffer.from('2000080000abcdef4500001c', 'hex') // GRE with a key no session has
      let left = 64
      for (const p of JSON.parse(ports)) {
        const s = dgram.createSocket('udp4')
        s.bind(p, () => s.send(junk, +port, host, () => { s.close(); if (--left === 0) process.exit(0) }))
      }
    `
    await fleet.tb.exec(fleet.tb.names.client[0], process.execPath, ['-e', script, fleet.tb.addr.nodeWan, '4754', JSON.stringify(ports)], {check: true})
    let after = await status(fleet)
    for (let i = 0; i < 20 && after.counters.unknownSession - before.counters.unknownSession < 64; i++) {
      await new Promise((r) => setTimeout(r, 100))
      after = await status(fleet)
    }
    expect(after.counters.unknownSession - before.counters.unknownSession).toBe(64)
    expect(after.workers![2].handedOff - before.workers![2].handedOff).toBeGreaterThanOrEqual(64)
  })

  it('hands TUN packets for no client to JavaScript whichever queue they come out of', async () => {
    const {fleet} = await upTwo('wknop', 'gre')
    const before = await status(fleet)
    // 64 flows from the node itself into its TUN, to a tunnel address no client has: the kernel
    // spreads them over the queues by flow.
    const script = `
      const dgram = require('node:dgram')
      const s = dgram.createSocket('udp4')
      let left = 64
      for (let p = 20000; p < 20064; p++) s.send(Buffer.from('x'), p, '10.99.0.77', () => { if (--left === 0) s.close() })
    `
    await fleet.tb.exec(fleet.tb.names.node, process.execPath, ['-e', script], {check: true})
    let after = await status(fleet)
    for (let i = 0; i < 20 && after.counters.noPeer - before.counters.noPeer < 64; i++) {
      await new Promise((r) => setTimeout(r, 100))
      after = await status(fleet)
    }
    expect(after.counters.noPeer - before.counters.noPeer).toBe(64)
    const handed = after.workers!.map((w, i) => w.handedOff - before.workers![i].handedOff)
    expect(handed[1] + handed[2], JSON.stringify(handed)).toBeGreaterThan(0)
  })
})

describe('workers: when the TUN device goes', () => {
  it('stops the workers before their queues close, and the node ends with a clear error', async () => {
    const {fleet, node} = await upTwo('wkdel', 'gre')
    const {tb} = fleet
    // Traffic on both threads while the device is deleted under them.
    const load = Promise.all([0, 1].map((i) => tb.exec(tb.names.client[i], 'ping', ['-c', '200', '-i', '0.005', '-W', '1', tb.addr.target])))
    await new Promise((r) => setTimeout(r, 300))
    await tb.exec(tb.names.node, 'ip', ['link', 'del', 'agtun0'], {check: true})
    await load
    expect(await node.exited, node.output).toBe(1)
    expect(node.child.signalCode).toBeNull()
    expect(node.output).toMatch(/TUN device agtun0 failed|fast path worker failed/)
  })
})

describe('workers: the port', () => {
  it('a second node on the same UDP port is refused, as without SO_REUSEPORT', async () => {
    const fleet = await createFleet({prefix: 'wkport', clients: 1, transport: 'gre', dataDir: inject('agentDataDir'), workers: 2})
    fleets.push(fleet)
    await fleet.startNode()
    // Another instance: its own name, TUN device, subnet and TCP port, but gre's UDP port.
    const other = join(fleet.tb.dir, 'configs', 'node2.yaml')
    const text = readFileSync(fleet.nodeConfig, 'utf8')
      .replace('name: node1', 'name: node2')
      .replace('interface: agtun0', 'interface: agtun1')
      .replace('10.99.0.0/24', '10.98.0.0/24')
      .replace('port: 4443', 'port: 4444')
      .replace(/\n {2}- name: bob\n {4}address: 10\.99\.0\.50/, '\n  - name: bob')
    writeFileSync(other, text)
    const r = await fleet.cli(fleet.tb.names.node, ['up', '--config', other])
    expect(r.code).not.toBe(0)
    expect(r.stderr + r.stdout).toMatch(/UDP port 4754 on 0\.0\.0\.0 is already in use/)
    // Nothing of it is left: no second TUN device.
    const links = await fleet.tb.exec(fleet.tb.names.node, 'ip', ['-o', 'link', 'show', 'type', 'tun'])
    expect(links.stdout).not.toMatch(/agtun1/)
    expect((await status(fleet)).workers).toHaveLength(2)
  })
})

describe('workers: where there can be only one', () => {
  it('a tls node asked for 2 runs 1 and says why', async () => {
    const fleet = await createFleet({prefix: 'wktls', clients: 1, transport: 'tls', dataDir: inject('agentDataDir'), workers: 2})
    fleets.push(fleet)
    const node = await fleet.startNode()
    expect(node.output).toMatch(/workers: 2 asked for, running 1: the tls carrier runs on one/)
    expect(node.output).toMatch(/1 worker\(s\)/)
    const s = await status(fleet)
    expect(s.workers).toBeUndefined()
  })

  it('an ipsec-over-gre node asked for 2 runs 1 and says why, and carries traffic', async () => {
    const fleet = await createFleet({prefix: 'wkesp', clients: 1, transport: 'ipsec-over-gre', dataDir: inject('agentDataDir'), workers: 2})
    fleets.push(fleet)
    const node = await fleet.startNode()
    expect(node.output).toMatch(/workers: 2 asked for, running 1: workers carry plain gre and ipip packets; ipsec-over-gre's ESP state lives on the main thread/)
    await fleet.startClient('alice', 0)
    const r = await fleet.tb.exec(fleet.tb.names.client[0], 'ping', ['-c', '3', '-i', '0.2', '-W', '2', fleet.tb.addr.target])
    expect(r.code, r.stdout + r.stderr).toBe(0)
    expect((await status(fleet)).workers).toBeUndefined()
  })
})
