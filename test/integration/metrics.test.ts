/**
 * The Prometheus endpoint with the real binary in namespaces (gre transport): a scrape taken
 * during traffic passes `promtool check metrics` and agrees with `agent status --json`; with
 * per-peer labels off, the series are the same for one client and for three; a reload cannot
 * change the metrics settings; a port already taken stops the start and leaves nothing behind.
 * Every request goes to 127.0.0.1 inside the namespace the testbed made.
 */
import {afterAll, afterEach, beforeAll, describe, expect, inject, it} from 'vitest'
import {execFileSync} from 'node:child_process'
import {readFileSync, writeFileSync} from 'node:fs'
import {type AgentProcess, type Fleet, agentTraces, createFleet, probeEcho, startEchoServer, type EchoServer} from '../../src/testbed/index.js'
import type {StatusReport} from '../../src/core/status/report.js'
import {MIN_RENDER_INTERVAL_MS} from '../../src/core/metrics/server.js'

let fleet: Fleet
let echo: EchoServer
const NODE_METRICS = 9469
const CLIENT_METRICS = 9470

beforeAll(async () => {
  fleet = await createFleet({prefix: 'mtr', clients: 3, publicClients: 1, transport: 'gre', keepalive: 2, dataDir: inject('agentDataDir'), extraClients: ['carol']})
  echo = await startEchoServer(fleet.tb, fleet.tb.names.target)
})

afterAll(async () => {
  await fleet?.tb.destroy()
})

/** The node's config with `metrics` as given, under a name of its own. */
function nodeConfig(name: string, metrics: string): string {
  const file = fleet.nodeConfig.replace(/\.yaml$/, `-${name}.yaml`)
  writeFileSync(file, `${readFileSync(fleet.nodeConfig, 'utf8')}metrics: ${metrics}\n`)
  return file
}

/** When each endpoint last answered: a scrape within MIN_RENDER_INTERVAL_MS would get that body again. */
const lastScrape = new Map<string, number>()

/**
 * GET http://127.0.0.1:port/metrics from inside `ns` (Node's fetch, no curl needed), once the
 * endpoint's previous body has expired, so the scrape reads the agent as it is now.
 */
async function scrape(ns: string, port: number): Promise<string> {
  const key = `${ns}:${port}`
  const wait = (lastScrape.get(key) ?? 0) + MIN_RENDER_INTERVAL_MS + 100 - Date.now()
  if (wait > 0) await new Promise((r) => setTimeout(r, wait))
  try {
    return await scrapeNow(ns, port)
  } finally {
    lastScrape.set(key, Date.now())
  }
}

async function scrapeNow(ns: string, port: number): Promise<string> {
  const script = `fetch('http://127.0.0.1:${port}/metrics').then(async (r) => { if (r.status !== 200) throw new Error('HTTP ' + r.status); process.stdout.write(await r.text()) })`
  const r = await fleet.tb.exec(ns, process.execPath, ['-e', script], {timeoutMs: 15_000})
  expect(r.code, r.stderr).toBe(0)
  return r.stdout
}

async function status(ns: string): Promise<StatusReport> {
  const r = await fleet.cli(ns, ['status', '--json'])
  expect(r.code, r.stderr).toBe(0)
  return (JSON.parse(r.stdout) as StatusReport[])[0]
}

/** promtool's lint of one scrape, given on stdin: throws with its complaints. */
function promtool(text: string): void {
  execFileSync('promtool', ['check', 'metrics'], {input: text, stdio: ['pipe', 'pipe', 'pipe'], timeout: 30_000})
}

interface Sample {
  name: string
  labels: string
  value: number
}

function samples(text: string): Sample[] {
  return text
    .split('\n')
    .filter((l) => l !== '' && !l.startsWith('#'))
    .map((l) => {
      const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)$/.exec(l)
      if (!m) throw new Error(`bad sample line: ${l}`)
      return {name: m[1], labels: m[2] ?? '', value: Number(m[3])}
    })
}

const sum = (s: Sample[], name: string, labels = '') => s.filter((x) => x.name === name && x.labels.includes(labels)).reduce((a, x) => a + x.value, 0)

/** Traffic through the tunnel from a client namespace: pings and a TCP echo. */
async function traffic(index: number): Promise<void> {
  const {tb} = fleet
  const ping = await tb.exec(tb.names.client[index], 'ping', ['-c', '20', '-i', '0.05', '-W', '2', tb.addr.target])
  expect(ping.code, ping.stdout).toBe(0)
  expect(await probeEcho(tb, tb.names.client[index], tb.addr.target, echo.port, {proto: 'tcp'})).toMatchObject({ok: true})
}

/**
 * Each total of the scrape lies between the same total read from status before and after it
 * (keepalives keep counting meanwhile), and equals it when nothing moved.
 */
function between(before: StatusReport, scraped: Sample[], after: StatusReport): void {
  const pairs = [
    ['agent_rx_packets_total', 'rxPackets'],
    ['agent_tx_packets_total', 'txPackets'],
    ['agent_rx_bytes_total', 'rxBytes'],
    ['agent_tx_bytes_total', 'txBytes'],
  ] as const
  for (const [name, key] of pairs) {
    const v = sum(scraped, name, `transport="gre"`)
    expect(v, name).toBeGreaterThanOrEqual(before.totals![key])
    expect(v, name).toBeLessThanOrEqual(after.totals![key])
    if (before.totals![key] === after.totals![key]) expect(v, name).toBe(before.totals![key])
  }
  for (const [reason, n] of Object.entries(after.totals!.drops)) {
    const v = sum(scraped, 'agent_drops_total', `reason="${reason}"`)
    expect(v, reason).toBeGreaterThanOrEqual(before.totals!.drops[reason] ?? 0)
    expect(v, reason).toBeLessThanOrEqual(n)
  }
  for (const [result, n] of Object.entries(after.events!.handshakes)) {
    const v = sum(scraped, 'agent_handshakes_total', `result="${result}"`)
    expect(v, result).toBeGreaterThanOrEqual(before.events!.handshakes[result])
    expect(v, result).toBeLessThanOrEqual(n)
  }
}

describe('metrics endpoint', () => {
  let node: AgentProcess
  /** Agents a test started: whatever it left running (a failure half-way) stops after it. */
  const running: AgentProcess[] = []
  const track = (p: AgentProcess) => (running.push(p), p)
  afterEach(async () => {
    for (const p of running.splice(0)) if (p.child.exitCode === null && p.child.signalCode === null) await fleet.tb.stop(p.child)
  })

  it('serves, during traffic, scrapes that promtool accepts and that agree with agent status', async () => {
    const {tb} = fleet
    node = await fleet.startNode({config: nodeConfig('metrics', '{}')})
    // Kept for the next test (the reload), which stops it.
    expect(node.output).toMatch(/metrics on http:\/\/127\.0\.0\.1:9469\/metrics/)
    const alice = track(await fleet.startClient('alice', 0, {extra: 'metrics: {}\n'}))
    expect(alice.output).toMatch(/metrics on http:\/\/127\.0\.0\.1:9470\/metrics/)
    await traffic(0)

    // A scrape while packets flow: the text must lint clean whatever moment it was taken at.
    const flowing = tb.exec(tb.names.client[0], 'ping', ['-c', '30', '-i', '0.02', tb.addr.target])
    promtool(await scrape(tb.names.node, NODE_METRICS))
    promtool(await scrape(tb.names.client[0], CLIENT_METRICS))
    await flowing

    for (const [ns, port] of [
      [tb.names.node, NODE_METRICS],
      [tb.names.client[0], CLIENT_METRICS],
    ] as const) {
      const before = await status(ns)
      const text = await scrape(ns, port)
      const after = await status(ns)
      promtool(text)
      const s = samples(text)
      expect(before.totals!.rxPackets, ns).toBeGreaterThan(20)
      between(before, s, after)
      expect(sum(s, 'agent_handshakes_total', 'result="ok"')).toBeGreaterThanOrEqual(1)
      expect(sum(s, 'agent_sessions')).toBe(1)
      expect(sum(s, 'agent_info', `role="${before.role}"`)).toBe(1)
      expect(s.some((x) => x.name === 'process_cpu_seconds_total')).toBe(true)
      // Per peer (on by default): the one peer's series add up to the totals' order.
      expect(sum(s, 'agent_peer_rx_packets_total', 'peer=')).toBeGreaterThan(20)
    }
    const n = samples(await scrape(tb.names.node, NODE_METRICS))
    expect(sum(n, 'agent_roster_peers')).toBe(3)
    expect(n.some((x) => x.name === 'agent_firewall_apply_seconds' && x.value > 0)).toBe(true)
    expect(sum(n, 'agent_admission_applies_total', 'result="ok"')).toBeGreaterThanOrEqual(1)

    // Counters never go back when a client leaves.
    const was = sum(n, 'agent_rx_packets_total')
    alice.child.kill('SIGTERM')
    expect(await alice.exited).toBe(0)
    const gone = samples(await scrape(tb.names.node, NODE_METRICS))
    expect(sum(gone, 'agent_rx_packets_total')).toBeGreaterThanOrEqual(was)
    expect(sum(gone, 'agent_sessions')).toBe(0)
    expect(gone.some((x) => x.labels.includes('peer="alice"'))).toBe(false)
  })

  it('refuses a reload that changes the metrics settings, naming the field', async () => {
    track(node)
    const r = await fleet.cli(fleet.tb.names.node, ['reload', '--config', nodeConfig('metrics-off', '{perPeer: false}')])
    expect(r.code).not.toBe(0)
    expect(r.stderr + r.stdout).toMatch(/metrics\.perPeer cannot change while the agent runs/)
    const s = samples(await scrape(fleet.tb.names.node, NODE_METRICS))
    expect(sum(s, 'agent_reloads_total', 'result="refused"')).toBe(1)
    node.child.kill('SIGTERM')
    expect(await node.exited).toBe(0)
  })

  it('with perPeer off, serves the same series for one client as for three', async () => {
    const {tb} = fleet
    node = track(await fleet.startNode({config: nodeConfig('aggregate', '{perPeer: false}')}))
    const series = async () => {
      const text = await scrape(tb.names.node, NODE_METRICS)
      promtool(text)
      const s = samples(text)
      expect(s.filter((x) => x.labels.includes('peer='))).toEqual([])
      // Drops appear by reason as they happen, not by peer: compared apart.
      return s.filter((x) => x.name.startsWith('agent_') && x.name !== 'agent_drops_total').map((x) => `${x.name}${x.labels}`).sort()
    }
    const clients: AgentProcess[] = [track(await fleet.startClient('alice', 0))]
    await traffic(0)
    const one = await series()
    expect(sum(samples(await scrape(tb.names.node, NODE_METRICS)), 'agent_sessions')).toBe(1)
    clients.push(track(await fleet.startClient('bob', 1)), track(await fleet.startClient('carol', 2)))
    await Promise.all([traffic(0), traffic(1), traffic(2)])
    const three = await series()
    expect(sum(samples(await scrape(tb.names.node, NODE_METRICS)), 'agent_sessions')).toBe(3)
    expect(three).toEqual(one)
    for (const c of clients) c.child.kill('SIGTERM')
    for (const c of clients) expect(await c.exited).toBe(0)
    node.child.kill('SIGTERM')
    expect(await node.exited).toBe(0)
  })

  it('does not start when its port is taken, and leaves nothing behind', async () => {
    const {tb} = fleet
    // The node of the first test, if a failure there left it running, holds the port.
    if (node.child.exitCode === null && node.child.signalCode === null) await tb.stop(node.child)
    const holder = tb.spawn(tb.names.node, process.execPath, ['-e', `require('node:net').createServer().listen(${NODE_METRICS}, '127.0.0.1', () => console.log('held'))`], {stdio: ['ignore', 'pipe', 'pipe']})
    try {
      await new Promise<void>((resolve, reject) => {
        holder.stdout!.on('data', (b: Buffer) => b.toString().includes('held') && resolve())
        holder.once('exit', (code) => reject(new Error(`port holder exited ${code}`)))
      })
      const failed = await fleet.startNode({config: nodeConfig('metrics', '{}')}).then(
        () => null,
        (e: Error) => e.message,
      )
      expect(failed).toMatch(/metrics: cannot listen on 127\.0\.0\.1:9469: the address is already in use/)
      expect(await agentTraces(tb, tb.names.node)).toEqual([])
      expect((await fleet.cli(tb.names.node, ['status', '--json'])).stdout.trim()).toMatch(/^\[\]$|no agent/)
    } finally {
      holder.kill('SIGTERM')
    }
  })
})
