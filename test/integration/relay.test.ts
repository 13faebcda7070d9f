/**
 * The testbed's user-space delay relay (no netem on this kernel): UDP and TCP through it gain
 * the set delay each way, UDP loses the set share, and both change live.
 */
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {type DelayRelay, type EchoServer, type Testbed, createTestbed, runScript, startDelayRelay, startEchoServer} from '../../src/testbed/index.js'

let tb: Testbed
let echo: EchoServer
let relay: DelayRelay

// Round trips to the echo server at host:port, one after another; prints them (ms) as JSON.
const RTTS = `
import dgram from 'node:dgram'
import net from 'node:net'
const {host, port, proto, count} = JSON.parse(process.argv[1])
const out = []
if (proto === 'udp') {
  const u = dgram.createSocket('udp4')
  await new Promise((r) => u.bind(0, '127.0.0.1', r))
  for (let i = 0; i < count; i++) {
    const t0 = performance.now()
    const got = await Promise.race([new Promise((r) => { u.once('message', () => r(true)); u.send('x', port, host) }), new Promise((r) => setTimeout(() => r(false), 500))])
    out.push(got ? performance.now() - t0 : null)
  }
  u.close()
} else {
  const s = net.connect(port, host)
  await new Promise((r) => s.once('connect', r))
  let buf = ''
  s.on('data', (d) => (buf += d))
  while (!buf.includes('\\n')) await new Promise((r) => setTimeout(r, 1))
  for (let i = 0; i < count; i++) {
    const t0 = performance.now()
    const want = buf.length + 2
    s.write('y\\n')
    while (buf.length < want) await new Promise((r) => setImmediate(r))
    out.push(performance.now() - t0)
  }
  s.destroy()
}
console.log(JSON.stringify(out))
`

async function rtts(proto: 'udp' | 'tcp', port: number, count = 5): Promise<(number | null)[]> {
  const r = await runScript(tb, tb.names.target, RTTS, {host: '127.0.0.1', port, proto, count}, {timeoutMs: 20_000})
  expect(r.code, r.stderr).toBe(0)
  return JSON.parse(r.stdout.trim())
}

const median = (xs: (number | null)[]) => {
  const s = xs.filter((x): x is number => x !== null).sort((a, b) => a - b)
  return s[Math.floor(s.length / 2)]
}

beforeAll(async () => {
  tb = await createTestbed({prefix: 'rly', clients: 0})
  echo = await startEchoServer(tb, tb.names.target, {port: 7777})
  relay = await startDelayRelay(tb, tb.names.target, {listen: {host: '127.0.0.1', port: 7800}, to: {host: '127.0.0.1', port: echo.port}, delayMs: 20})
})

afterAll(async () => {
  await tb?.destroy()
})

describe('delay relay', () => {
  it('adds its delay each way to UDP and TCP, and changes it live', async () => {
    expect(median(await rtts('udp', echo.port))).toBeLessThan(10)
    const udp = median(await rtts('udp', relay.port))
    const tcp = median(await rtts('tcp', relay.port))
    expect(udp).toBeGreaterThanOrEqual(40)
    expect(tcp).toBeGreaterThanOrEqual(40)
    await relay.setPath({delayMs: 0})
    expect(median(await rtts('udp', relay.port))).toBeLessThan(20)
  })

  it('drops the set share of UDP datagrams', async () => {
    await relay.setPath({delayMs: 0, loss: 1})
    expect((await rtts('udp', relay.port, 3)).every((x) => x === null)).toBe(true)
    await relay.setPath({loss: 0})
    expect((await rtts('udp', relay.port, 3)).every((x) => x !== null)).toBe(true)
  })
})
