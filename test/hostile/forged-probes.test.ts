/**
 * A stranger sends probe-shaped packets (probe-packet.ts) at a node's UDP port and, over TCP,
 * at its control port: random tickets, MACs that do not verify. None is answered, each is
 * counted, and a client weighing the node sees no change in its choice.
 */
import {join} from 'node:path'
import {afterAll, beforeAll, describe, expect, inject, it} from 'vitest'
import {createFleet, NODE_PORT, ROOT, type Fleet} from '../../src/testbed/index.js'
import type {StatusReport} from '../../src/core/status/report.js'

const isRoot = process.getuid?.() === 0
const FLOOD = join(ROOT, 'dist/testbed/attacks/datagram-flood.js')
let fleet: Fleet

beforeAll(async () => {
  fleet = await createFleet({prefix: 'fprobe', clients: 1, publicClients: 1, nodes: 2, transport: 'gre', dataDir: inject('agentDataDir')})
})

afterAll(async () => {
  await fleet?.tb.destroy()
})

async function report(ns: string): Promise<StatusReport> {
  const r = await fleet.cli(ns, ['status', '--json'])
  expect(r.code, r.stderr).toBe(0)
  return (JSON.parse(r.stdout) as StatusReport[])[0]
}

describe.skipIf(!isRoot)('forged probes', () => {
  it('are not answered, are counted, and change no client choice', async () => {
    const {tb} = fleet
    await fleet.startNode({node: 1})
    await fleet.startNode({node: 2})
    await fleet.startClient('alice', 0, {nodes: [1, 2], extra: 'selection: {switchAfterSeconds: 2, probeOthersSeconds: 1}\n'})
    const before = (await report(tb.names.client[0])).selection!
    const udp = await tb.exec(tb.names.publicClient[0], process.execPath, [FLOOD, 'probe', tb.addr.nodeWan, '4754', '--pps', '2000', '--seconds', '3'], {timeoutMs: 15_000})
    expect(udp.code, udp.stderr).toBe(0)
    expect(JSON.parse(udp.stdout)).toMatchObject({sent: 6000, replies: 0})
    const tcp = await tb.exec(tb.names.publicClient[0], process.execPath, [FLOOD, 'probe', tb.addr.nodeWan, String(NODE_PORT), '--tcp', '--pps', '50', '--seconds', '2'], {
      timeoutMs: 15_000,
    })
    expect(tcp.code, tcp.stderr).toBe(0)
    expect(JSON.parse(tcp.stdout)).toMatchObject({sent: 100, replies: 0})

    const node = await report(tb.names.node)
    // Each forged one was either refused after its (failed) check or over the sender's budget.
    expect(node.counters.probesRefused + node.counters.probesOverRate).toBeGreaterThanOrEqual(6100)
    // The client's own probes are still answered, and its choice is what it was.
    expect(node.counters.probesAnswered).toBeGreaterThan(0)
    const after = (await report(tb.names.client[0])).selection!
    expect(after.current).toBe(before.current)
    expect(after.switches).toBe(0)
    expect(after.candidates.every((c) => c.rttMs !== null && c.loss === 0)).toBe(true)
  })
})
