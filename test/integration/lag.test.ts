/**
 * The testbed's packet-level egress lag (no netem on this kernel): everything one node exchanges
 * with the target, ICMP echo and a TCP SYN answered by RST included, gains the set round trip,
 * the other node's path does not, the delay changes live and keeps order, and stop() and the
 * testbed's destroy() leave nothing behind.
 */
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {
  type EgressLag,
  type Testbed,
  createTestbed,
  runScript,
  spawnScript,
  startEchoServer,
  startEgressLag,
  waitForOutput,
} from '../../src/testbed/index.js'
import {run} from '../../src/testbed/run.js'

const isRoot = process.getuid?.() === 0
const DELAY = 30

// Round trips from this namespace to the target: TCP connects to a closed port (the SYN is
// answered by RST), or UDP datagrams to the echo server; prints them (ms) as JSON.
const RTTS = `
import dgram from 'node:dgram'
import net from 'node:net'
const {host, port, proto, count} = JSON.parse(process.argv[1])
const out = []
for (let i = 0; i < count; i++) {
  const t0 = performance.now()
  if (proto === 'rst') {
    const code = await new Promise((r) => net.connect(port, host).on('connect', () => r('connected')).on('error', (e) => r(e.code)))
    if (code !== 'ECONNREFUSED') throw new Error('expected ECONNREFUSED, got ' + code)
  } else {
    const u = dgram.createSocket('udp4')
    await new Promise((r) => { u.once('message', r); u.send('x', port, host) })
    u.close()
  }
  out.push(performance.now() - t0)
}
console.log(JSON.stringify(out))
`

// Numbered datagrams to the echo server, one every ms; prints `sending` first, then each
// reply's number and round trip (ms), in arrival order, as JSON.
const BURST = `
import dgram from 'node:dgram'
const {host, port, count} = JSON.parse(process.argv[1])
const u = dgram.createSocket('udp4')
const sent = [], got = []
const done = () => { console.log(JSON.stringify(got)); process.exit(0) }
u.on('message', (m) => { const i = Number(m.toString().split(' ').pop()); got.push([i, performance.now() - sent[i]]); if (got.length === count) done() })
setTimeout(done, 5000)
await new Promise((r) => u.bind(0, r))
console.log('sending')
for (let i = 0; i < count; i++) { sent[i] = performance.now(); u.send(String(i), port, host); await new Promise((r) => setTimeout(r, 1)) }
`

// Sends `bytes` to the echo server over TCP and reads them back; prints the time (ms).
const BULK = `
import net from 'node:net'
const {host, port, bytes} = JSON.parse(process.argv[1])
const t0 = performance.now()
const s = net.connect(port, host)
let n = 0, head = true
s.on('data', (d) => {
  if (head) { const i = d.indexOf(10); if (i < 0) return; d = d.subarray(i + 1); head = false }
  n += d.length
  if (n >= bytes) { console.log(JSON.stringify(performance.now() - t0)); process.exit(0) }
})
s.write(Buffer.alloc(bytes, 7))
`

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]

describe.skipIf(!isRoot)('egress lag', () => {
  let tb: Testbed
  let lag: EgressLag | undefined
  const ECHO = 7777

  /** Median ping round trip, ms, from node k (1-based) to the target. */
  async function ping(k: number, count = 5): Promise<number> {
    const r = await tb.exec(tb.names.nodes[k - 1], 'ping', ['-n', '-q', '-c', String(count), '-i', '0.05', '-W', '2', tb.addr.target], {timeoutMs: 10_000})
    expect(r.code, r.stdout + r.stderr).toBe(0)
    const m = /= ([\d.]+)\/([\d.]+)\//.exec(r.stdout)
    expect(m, r.stdout).not.toBeNull()
    return Number(m![2])
  }

  /** Median round trip, ms, from `ns` (node k's namespace when a number) to the target. */
  async function rtts(k: number | string, proto: 'rst' | 'udp', count = 5): Promise<number> {
    const port = proto === 'rst' ? 9 : ECHO
    const ns = typeof k === 'number' ? tb.names.nodes[k - 1] : k
    const r = await runScript(tb, ns, RTTS, {host: tb.addr.target, port, proto, count}, {timeoutMs: 10_000})
    expect(r.code, r.stderr).toBe(0)
    return median(JSON.parse(r.stdout.trim()) as number[])
  }

  /** What of ours is left in the target namespace: devices, rules, routes of any table. */
  async function leftovers(): Promise<string> {
    const out = await Promise.all([
      tb.exec(tb.names.target, 'ip', ['-br', 'link'], {check: true}),
      tb.exec(tb.names.target, 'ip', ['rule'], {check: true}),
      tb.exec(tb.names.target, 'ip', ['route', 'show', 'table', 'all'], {check: true}),
    ])
    return out
      .flatMap((r) => r.stdout.split('\n'))
      .filter((l) => /lag|100\d/.test(l))
      .join('\n')
  }

  beforeAll(async () => {
    tb = await createTestbed({prefix: 'lag', clients: 0, publicClients: 1, nodes: 2})
    await startEchoServer(tb, tb.names.target, {port: ECHO})
    // A bridge port just made may drop the first ARP request (a second is a second later), so
    // the base figures are taken on warm paths.
    for (const ns of tb.names.nodes) await tb.exec(ns, 'ping', ['-n', '-q', '-c', '1', '-W', '3', tb.addr.target])
  })
  afterAll(async () => {
    await lag?.stop()
    await tb?.destroy()
  })

  it('refuses a node or a delay out of range', async () => {
    await expect(startEgressLag(tb, 0, {delayMs: 10})).rejects.toThrow(/node must be an integer 1\.\.2/)
    await expect(startEgressLag(tb, 3, {delayMs: 10})).rejects.toThrow(/node must be an integer 1\.\.2/)
    for (const d of [-1, 10_001, Number.NaN]) await expect(startEgressLag(tb, 2, {delayMs: d})).rejects.toThrow(/delayMs must be .* 0\.\.10000/)
    expect(await leftovers()).toBe('')
  })

  it("adds its delay to node 2's ping, TCP RST and UDP, not node 1's, and changes it live", async () => {
    const base1 = await ping(1)
    const base2 = await ping(2)
    const baseRst = await rtts(2, 'rst')
    expect(base1).toBeLessThan(10)
    expect(base2).toBeLessThan(10)
    lag = await startEgressLag(tb, 2, {delayMs: DELAY})
    await expect(startEgressLag(tb, 2, {delayMs: 5})).rejects.toThrow(/already has one/)

    const lagged = {ping: await ping(2), rst: await rtts(2, 'rst'), udp: await rtts(2, 'udp'), node1: await ping(1)}
    console.log(`egress lag ${DELAY} ms: node 2 ping ${base2} -> ${lagged.ping} ms, RST ${baseRst.toFixed(2)} -> ${lagged.rst.toFixed(2)} ms, UDP ${lagged.udp.toFixed(2)} ms; node 1 ping ${base1} -> ${lagged.node1} ms`)
    for (const v of [lagged.ping, lagged.rst, lagged.udp]) {
      expect(v).toBeGreaterThanOrEqual(DELAY)
      expect(v).toBeLessThan(DELAY + 15)
    }
    expect(lagged.node1).toBeLessThan(10)
    // Forwarding is on for the lag's device alone, not for the whole target.
    const fwd = await tb.exec(tb.names.target, 'sysctl', ['-n', 'net.ipv4.ip_forward', `net.ipv4.conf.${lag.device}.forwarding`], {check: true})
    expect(fwd.stdout.split('\n').slice(0, 2)).toEqual(['0', '1'])

    await lag.setDelay(0)
    expect(lag.delayMs).toBe(0)
    const zero = {ping: await ping(2), rst: await rtts(2, 'rst')}
    await lag.setDelay(60)
    const sixty = await ping(2, 3)
    console.log(`setDelay: 0 ms -> ping ${zero.ping} ms, RST ${zero.rst.toFixed(2)} ms; 60 ms -> ping ${sixty} ms`)
    expect(zero.ping).toBeLessThan(10)
    expect(zero.rst).toBeLessThan(10)
    expect(sixty).toBeGreaterThanOrEqual(60)
    expect(sixty).toBeLessThan(80)
    await expect(lag.setDelay(-5)).rejects.toThrow(/0\.\.10000/)
  })

  it("delays the client traffic node 2 forwards with SNAT", async () => {
    // Node 2 as a plain SNAT router for the public client (the agent's tunnels end the same way).
    const [client] = tb.names.publicClient
    await tb.sysctl(tb.names.nodes[1], {'net.ipv4.ip_forward': 1})
    await tb.exec(tb.names.nodes[1], 'iptables', ['-w', '-t', 'nat', '-A', 'POSTROUTING', '-o', tb.ifaces.nodeEgress, '-j', 'MASQUERADE'], {check: true})
    await tb.exec(client, 'ip', ['route', 'add', `${tb.addr.target}/32`, 'via', tb.addr.nodesWan[1]], {check: true})
    await lag!.setDelay(0)
    const direct = await rtts(client, 'udp')
    await lag!.setDelay(DELAY)
    const lagged = await rtts(client, 'udp')
    console.log(`public client via node 2 (SNAT), UDP: ${direct.toFixed(2)} -> ${lagged.toFixed(2)} ms`)
    expect(direct).toBeLessThan(10)
    expect(lagged).toBeGreaterThanOrEqual(DELAY)
    expect(lagged).toBeLessThan(DELAY + 15)
  })

  it('carries full-size TCP segments through the delay', async () => {
    const r = await runScript(tb, tb.names.nodes[1], BULK, {host: tb.addr.target, port: ECHO, bytes: 4 << 20}, {timeoutMs: 10_000})
    expect(r.code, r.stderr).toBe(0)
    console.log(`4 MiB echoed over TCP from node 2 at ${DELAY} ms: ${Number(r.stdout).toFixed(0)} ms`)
  })

  it('keeps order when the delay shrinks under traffic', async () => {
    await lag!.setDelay(80)
    const count = 200
    const child = spawnScript(tb, tb.names.nodes[1], BURST, {host: tb.addr.target, port: ECHO, count})
    let out = ''
    child.stdout!.on('data', (b: Buffer) => (out += b.toString()))
    const exited = new Promise((r) => child.once('exit', r))
    await waitForOutput(child, /sending/, 5000)
    await new Promise((r) => setTimeout(r, 50))
    await lag!.setDelay(0)
    await exited
    const got = JSON.parse(out.split('\n').find((l) => l.startsWith('['))!) as [number, number][]
    const order = got.map(([i]) => i)
    const rtt = got.map(([, ms]) => ms)
    console.log(`80 -> 0 ms under a burst: ${got.length}/${count} back, first ${rtt[0].toFixed(1)} ms, last ${rtt.at(-1)!.toFixed(1)} ms`)
    expect(got.length).toBeGreaterThan(count * 0.95)
    expect(order).toEqual([...order].sort((a, b) => a - b))
    // The change fell inside the burst: the first replies were held, the last were not.
    expect(rtt[0]).toBeGreaterThanOrEqual(75)
    // Well under the 80 ms held before (a busy machine adds some ms of its own).
    expect(rtt.at(-1)!).toBeLessThan(40)
  })

  it('stop() removes its device, rule and routes and the path is direct again', async () => {
    await lag!.stop()
    await lag!.stop()
    expect(lag!.child.exitCode !== null || lag!.child.signalCode !== null).toBe(true)
    lag = undefined
    expect(await leftovers()).toBe('')
    expect(await ping(2)).toBeLessThan(10)
    // And a new one on the same node starts again.
    lag = await startEgressLag(tb, 2, {delayMs: 20})
    expect(await ping(2, 3)).toBeGreaterThanOrEqual(20)
  })

  it('the testbed destroys cleanly with a lag still running', async () => {
    const child = lag!.child
    lag = undefined
    await tb.destroy()
    expect(child.exitCode !== null || child.signalCode !== null).toBe(true)
    const ns = await run('ip', ['netns', 'list'])
    for (const n of tb.names.all) expect(ns.stdout).not.toContain(n)
  })
})
