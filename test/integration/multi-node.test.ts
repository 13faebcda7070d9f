/**
 * Several nodes in one testbed: each on the wan switch with its own public address and its own
 * egress link to the one target. A client of each node reaches the target, and the target sees
 * each node's own egress address (its SNAT source), so a test can tell which node carried a flow.
 */
import {afterAll, beforeAll, describe, expect, inject, it} from 'vitest'
import {createFleet, probeEcho, startEchoServer, type EchoServer, type Fleet} from '../../src/testbed/index.js'

const isRoot = process.getuid?.() === 0
let fleet: Fleet
let echo: EchoServer

beforeAll(async () => {
  fleet = await createFleet({prefix: 'mnode', clients: 2, nodes: 2, dataDir: inject('agentDataDir')})
  echo = await startEchoServer(fleet.tb, fleet.tb.names.target)
})

afterAll(async () => {
  await fleet?.tb.destroy()
})

describe.skipIf(!isRoot)('two nodes in one testbed', () => {
  it('gives each node its own namespace, wan and egress address', async () => {
    const {tb} = fleet
    expect(tb.names.nodes).toHaveLength(2)
    expect(tb.names.nodes[0]).toBe(tb.names.node)
    expect(tb.addr.nodesWan).toEqual([tb.addr.nodeWan, '198.51.100.3'])
    expect(tb.addr.nodesEgress).toEqual([tb.addr.nodeEgress, '203.0.113.2'])
    for (const [k, ns] of tb.names.nodes.entries()) {
      const a = await tb.exec(ns, 'ip', ['-4', '-br', 'addr'], {check: true})
      expect(a.stdout).toContain(`${tb.addr.nodesWan[k]}/24`)
      expect(a.stdout).toContain(`${tb.addr.nodesEgress[k]}/24`)
    }
    // Nodes reach each other on the wan switch (a fleet's nodes and its etcd will).
    const ping = await tb.exec(tb.names.nodes[1], 'ping', ['-n', '-c', '1', '-W', '2', tb.addr.nodeWan])
    expect(ping.code, ping.stdout).toBe(0)
  })

  it('a client of each node reaches the target, which sees that node egress address', async () => {
    const {tb} = fleet
    const nodes = [await fleet.startNode({node: 1}), await fleet.startNode({node: 2})]
    expect(nodes[1].output).toMatch(/node node2 up/)
    const alice = await fleet.startClient('alice', 0, {node: 1})
    const bob = await fleet.startClient('bob', 1, {node: 2})
    try {
      for (const proto of ['tcp', 'udp'] as const) {
        const a = await probeEcho(tb, tb.names.client[0], tb.addr.target, echo.port, {proto})
        expect(a, `alice ${proto}`).toMatchObject({ok: true, peer: {address: tb.addr.nodesEgress[0]}})
        const b = await probeEcho(tb, tb.names.client[1], tb.addr.target, echo.port, {proto})
        expect(b, `bob ${proto}`).toMatchObject({ok: true, peer: {address: tb.addr.nodesEgress[1]}})
      }
      // Each node knows only its own client.
      const s2 = await fleet.cli(tb.names.nodes[1], ['status', '--json'])
      expect(s2.code, s2.stderr).toBe(0)
      expect(JSON.parse(s2.stdout)[0].peers.map((p: {name: string}) => p.name)).toEqual(['bob'])
    } finally {
      for (const p of [alice, bob, ...nodes]) await fleet.tb.stop(p.child)
    }
  })
})
