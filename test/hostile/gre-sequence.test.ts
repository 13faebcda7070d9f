/**
 * gre with sequence numbers: a stranger who knows a client's GRE key (it travels in clear)
 * sends one packet with a far-ahead sequence number from its own address. The real binary.
 */
import {afterAll, beforeAll, describe, expect, inject, it} from 'vitest'
import {join} from 'node:path'
import {type Fleet, createFleet, ROOT} from '../../src/testbed/index.js'
import {peers as peersOf, pingOk as pingFrom} from '../integration/datagram-helpers.js'

const FLOOD = join(ROOT, 'dist/testbed/attacks/datagram-flood.js')
let fleet: Fleet

beforeAll(async () => {
  fleet = await createFleet({prefix: 'hgs', clients: 1, publicClients: 1, transport: 'gre', transportOptions: {sequence: true}, dataDir: inject('agentDataDir')})
})

afterAll(async () => {
  await fleet?.tb.destroy()
})

describe('gre sequence numbers', () => {
  it("one far-ahead sequence number from a stranger changes nothing for the client", async () => {
    const {tb} = fleet
    await fleet.startNode()
    await fleet.startClient('alice', 0)
    await pingFrom(fleet, tb.names.client[0])
    const alice = (await peersOf(fleet, tb.names.node)).find((p) => p.name === 'alice')!
    expect(alice.sessionId).toBeTypeOf('number')
    const r = await tb.exec(
      tb.names.publicClient[0],
      process.execPath,
      [FLOOD, 'gre', tb.addr.nodeWan, '4754', '--key', String(alice.sessionId), '--seq', String(0x7fff0000)],
      {timeoutMs: 10_000},
    )
    expect(r.code, r.stderr).toBe(0)
    expect(JSON.parse(r.stdout)).toMatchObject({sent: 1})
    // Had the stranger's number been taken, every packet of alice's would now be "too old".
    await pingFrom(fleet, tb.names.client[0])
    const after = (await peersOf(fleet, tb.names.node)).find((p) => p.name === 'alice')!
    expect(after.drops.replay ?? 0).toBe(0)
    expect(Object.values(after.drops).reduce((a, b) => a + b, 0)).toBe(1) // the stranger's packet, dropped
  })
})
