/**
 * Forged keepalives at an ipip node, from a stranger on its public side who knows the tunnel
 * pool: 50 a second for every pool address, for longer than the idle timeout. The real binary,
 * in namespaces.
 */
import {afterAll, beforeAll, describe, expect, inject, it} from 'vitest'
import {join} from 'node:path'
import {type Fleet, createFleet, ROOT} from '../../src/testbed/index.js'
import {peers as peersOf, pingOk as pingFrom, sleep} from '../integration/datagram-helpers.js'

const FLOOD = join(ROOT, 'dist/testbed/attacks/datagram-flood.js')
const IDLE_TIMEOUT = 10
const POOL = {start: '10.99.0.2', end: '10.99.0.254', size: 253}

let fleet: Fleet

beforeAll(async () => {
  fleet = await createFleet({prefix: 'hka', clients: 2, publicClients: 1, transport: 'ipip', keepalive: 2, idleTimeout: IDLE_TIMEOUT, dataDir: inject('agentDataDir')})
})

afterAll(async () => {
  await fleet?.tb.destroy()
})

describe('forged keepalive flood on ipip', () => {
  it('keeps an idle client, lets a new one in and still follows a NAT rebinding', async () => {
    const {tb} = fleet
    const node = await fleet.startNode()
    const alice = await fleet.startClient('alice', 0)
    const mark = node.output.length
    const seconds = IDLE_TIMEOUT + 4
    const child = tb.spawn(
      tb.names.publicClient[0],
      process.execPath,
      [FLOOD, 'keepalive', tb.addr.nodeWan, '4755', '--pool', `${POOL.start}-${POOL.end}`, '--node-address', '10.99.0.1', '--pps', String(50 * POOL.size), '--seconds', String(seconds)],
      {stdio: ['ignore', 'pipe', 'pipe']},
    )
    let out = ''
    child.stdout!.on('data', (b: Buffer) => (out += b.toString()))
    const flooded = new Promise<number | null>((r) => child.once('exit', r))

    // A new client comes up during the flood.
    await sleep(1_000)
    const bob = await fleet.startClient('bob', 1)
    // Alice's NAT moves her to another port (a range that does not hold her port now): her
    // next keepalive still moves her session.
    const now = Number((await peersOf(fleet, tb.names.node)).find((p) => p.name === 'alice')!.endpoint.split(':')[1])
    const range = now >= 41000 && now <= 41999 ? [43000, 43999] : [41000, 41999]
    const rule = ['-o', tb.ifaces.natWan, '-p', 'udp', '-s', tb.addr.client[0], '-j', 'MASQUERADE', '--to-ports', range.join('-')]
    await tb.exec(tb.names.nat, 'iptables', ['-w', '-t', 'nat', '-I', 'POSTROUTING', '1', ...rule], {check: true})
    try {
      const moved = node.output.length
      await tb.flushNatConntrack()
      await node.waitFor(new RegExp(`client alice moved from 198\\.51\\.100\\.2:${now} to 198\\.51\\.100\\.2:${String(range[0]).slice(0, 2)}\\d{3}`), 12_000, moved)
    } finally {
      await tb.exec(tb.names.nat, 'iptables', ['-w', '-t', 'nat', '-D', 'POSTROUTING', ...rule])
    }
    expect(await flooded).toBe(0)
    const report = JSON.parse(out.trim()) as {sent: number; seconds: number}
    // The flood was what the issue describes, for longer than the idle timeout.
    expect(report.sent).toBeGreaterThan(50 * POOL.size * IDLE_TIMEOUT)
    expect(report.seconds).toBeGreaterThan(IDLE_TIMEOUT)

    // Nobody was expired or lost: alice (idle but for keepalives) and bob are still there.
    const since = node.output.slice(mark)
    expect(since).not.toMatch(/no packets for/)
    expect(since).not.toMatch(/client (alice|bob) \S+ disconnected/)
    expect(alice.output).not.toMatch(/reconnecting|connection lost/i)
    await pingFrom(fleet, tb.names.client[0])
    await pingFrom(fleet, tb.names.client[1])
    // The flood reached alice's session (her address's share of it was verified and refused)
    // and spent none of her own budget; the rest named nobody.
    const st = await fleet.cli(tb.names.node, ['status', '--json'])
    const status = (JSON.parse(st.stdout) as {counters: Record<string, number>; peers: {name: string; drops?: Record<string, number>}[]}[])[0]
    const aliceDrops = status.peers.find((p) => p.name === 'alice')?.drops ?? {}
    expect(aliceDrops.authentication).toBeGreaterThan(40 * IDLE_TIMEOUT)
    expect(aliceDrops['keepalive-rate'] ?? 0).toBe(0)
    expect(status.counters.unknownSession).toBeGreaterThan(report.sent / 2)
    bob.child.kill('SIGTERM')
    alice.child.kill('SIGTERM')
    expect(await Promise.all([alice.exited, bob.exited])).toEqual([0, 0])
  }, 60_000)
})
