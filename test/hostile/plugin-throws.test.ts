/**
 * A transport plugin with a bug (test/fixtures/plugins/throwtest: its decap throws on some
 * input) must cost the packet that found the bug, not the node. The real binary, linked plugin.
 */
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {mkdtempSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join, resolve} from 'node:path'
import {type Fleet, agentCli, createFleet} from '../../src/testbed/index.js'
import {peers, pingOk} from '../integration/datagram-helpers.js'

const plugin = resolve(import.meta.dirname, '../fixtures/plugins/throwtest')
let fleet: Fleet
let dataDir: string

beforeAll(async () => {
  dataDir = mkdtempSync(join(tmpdir(), `agent-throwtest-${process.pid}-`))
  const linked = await agentCli(['plugins', 'link', plugin, '--no-install'], {...process.env, AGENT_DATA_DIR: dataDir})
  expect(linked.code, linked.stderr).toBe(0)
  fleet = await createFleet({prefix: 'hpt', clients: 1, transport: 'throwtest', keepalive: 2, dataDir})
})

afterAll(async () => {
  await fleet?.tb.destroy()
  if (dataDir) rmSync(dataDir, {recursive: true, force: true})
})

describe('a plugin that throws on a packet', () => {
  it('the node logs it, drops the packet and keeps serving', async () => {
    const {tb} = fleet
    const node = await fleet.startNode()
    await fleet.startClient('alice', 0)
    await pingOk(fleet, tb.names.client[0])
    const [alice] = await peers(fleet, tb.names.node)
    // 50 payloads that make the plugin throw, with alice's session id.
    const script = `
      const s = require('node:dgram').createSocket('udp4'); const b = Buffer.alloc(24); b.writeUInt32BE(+process.argv[2], 0); b[4] = 0xee
      let n = 0; const next = () => n++ < 50 ? s.send(b, 4798, process.argv[1], next) : s.close(); next()`
    await tb.exec(tb.names.client[0], process.execPath, ['-e', script, tb.addr.nodeWan, String(alice.sessionId)], {check: true})
    await node.waitFor(/transport throwtest failed on a packet of alice: throwtest: cannot parse this; dropped it/, 5_000)
    // Still serving, the same session, and the log said it a bounded number of times.
    await pingOk(fleet, tb.names.client[0])
    expect(node.child.exitCode).toBeNull()
    expect(node.output.match(/client alice connected/g)).toHaveLength(1)
    expect(node.output.match(/failed on a packet of alice/g)!.length).toBeLessThanOrEqual(10)
    const status = JSON.parse((await fleet.cli(tb.names.node, ['status', '--json'])).stdout)[0]
    expect(status.counters.transportErrors).toBe(50)
  })
})
