#!/usr/bin/env node
// The cost of the Prometheus endpoint (issue #17, docs/metrics.md).
//
//   node bench/metrics.mjs [--only scrape|throughput] [--peers 10000] [--scrapes 20]
//                          [--repeat 5] [--seconds 10] [--json out.json]
//
// scrape: the node's real registry and collectors (src/core/metrics) over a real DataPath holding
//   --peers fake peers with counts (src/testbed/metrics-fake.ts), per-peer labels on and off:
//   the median and worst time of one whole scrape (collect + exposition text), its size, and
//   its series count. In process: no HTTP, no namespace.
// throughput: a real node and client (gre transport, GRE-in-UDP) in a namespace testbed, the
//   node and the client with `metrics: {}`; iperf3 -P 1 from the client to the target for
//   --seconds, --repeat times without scrapes and --repeat times with a scraper in each
//   namespace GETting /metrics every second, interleaved so drift hits both alike. Medians.
import {writeFileSync, readFileSync} from 'node:fs'
import {parseArgs} from 'node:util'
import {performance} from 'node:perf_hooks'
import {createTestbed, cleanupStale, fakeNodeMetrics, prepareFleet} from '../dist/testbed/index.js'
import {iperf, startIperfServer} from './lib/measure.mjs'
import {median} from './lib/stats.mjs'

const {values: flags} = parseArgs({
  options: {
    only: {type: 'string'},
    peers: {type: 'string'},
    scrapes: {type: 'string'},
    repeat: {type: 'string'},
    seconds: {type: 'string'},
    json: {type: 'string'},
  },
})
const only = flags.only
if (only !== undefined && only !== 'scrape' && only !== 'throughput') throw new Error(`--only must be scrape or throughput, got ${only}`)
const peers = Number(flags.peers ?? 10_000)
const scrapes = Number(flags.scrapes ?? 20)
const repeat = Number(flags.repeat ?? 5)
const seconds = Number(flags.seconds ?? 10)
for (const [k, v, max] of [['peers', peers, 60_000], ['scrapes', scrapes, 1000], ['repeat', repeat, 50], ['seconds', seconds, 120]]) {
  if (!Number.isInteger(v) || v < 1 || v > max) throw new Error(`--${k} must be a whole number from 1 to ${max}, got ${v}`)
}
const log = (m) => console.error(`[bench:metrics] ${m}`)
const result = {}

if (only !== 'throughput') {
  result.scrape = []
  for (const perPeer of [true, false]) {
    const t0 = performance.now()
    const {metrics} = fakeNodeMetrics(peers, perPeer)
    const setupMs = performance.now() - t0
    for (let i = 0; i < 2; i++) await metrics.render() // warm-up: JIT, label caches
    const times = []
    let text = ''
    for (let i = 0; i < scrapes; i++) {
      const s = performance.now()
      text = await metrics.render()
      times.push(performance.now() - s)
    }
    const series = text.split('\n').filter((l) => l !== '' && !l.startsWith('#')).length
    const row = {perPeer, peers, scrapes, medianMs: median(times), maxMs: Math.max(...times), bytes: Buffer.byteLength(text), series, setupMs}
    result.scrape.push(row)
    log(`scrape, ${peers} peers, perPeer ${perPeer}: median ${row.medianMs.toFixed(1)} ms (max ${row.maxMs.toFixed(1)}), ${(row.bytes / 1024).toFixed(1)} KiB, ${series} series`)
  }
}

if (only !== 'scrape') {
  await cleanupStale('mbench')
  const tb = await createTestbed({prefix: 'mbench', clients: 1})
  const children = []
  try {
    const fleet = await prepareFleet(tb, {transport: 'gre', keepalive: 10})
    const nodeConfig = fleet.nodeConfig.replace(/\.yaml$/, '-metrics.yaml')
    writeFileSync(nodeConfig, `${readFileSync(fleet.nodeConfig, 'utf8')}metrics: {}\n`)
    const node = await fleet.startNode({config: nodeConfig})
    children.push(node.child)
    const client = await fleet.startClient('alice', 0, {extra: 'metrics: {}\n'})
    children.push(client.child)
    const ping = await tb.exec(tb.names.client[0], 'ping', ['-n', '-c', '3', '-i', '0.2', '-W', '2', tb.addr.target])
    if (!/ [1-3] received/.test(ping.stdout)) throw new Error(`target unreachable through the tunnel:\n${ping.stdout}`)
    children.push(await startIperfServer(tb))
    const pids = [node.pid, client.pid]

    const SCRAPE_MS = 1100
    // A scraper per namespace: GET /metrics every 1.1 s, counting answers and bytes. Not every
    // 1 s: the endpoint serves a body again for 1 s after its render ends (metrics.md), so a
    // GET a second would be answered from that cache about every other time, rendering less.
    const scraper = (ns, port) => {
      const script = `let n = 0, bytes = 0, bad = 0
setInterval(async () => {
  try { const r = await fetch('http://127.0.0.1:${port}/metrics'); const t = await r.text(); if (r.status === 200) { n++; bytes += t.length } else bad++ } catch { bad++ }
}, ${SCRAPE_MS})
process.on('SIGTERM', () => { console.log(JSON.stringify({n, bytes, bad})); process.exit(0) })
setTimeout(() => process.exit(2), ${(seconds + 60) * 1000})`
      const child = tb.spawn(ns, process.execPath, ['-e', script], {stdio: ['ignore', 'pipe', 'inherit']})
      let out = ''
      child.stdout.on('data', (b) => (out += b))
      const done = new Promise((resolve) => child.once('exit', () => resolve(out.trim() === '' ? null : JSON.parse(out))))
      return {child, stop: () => (child.kill('SIGTERM'), done)}
    }

    const runs = {without: [], with: []}
    const scraped = []
    for (let i = 0; i < repeat; i++) {
      // Alternate which comes first, so a drift of the machine does not favour one.
      for (const mode of i % 2 === 0 ? ['without', 'with'] : ['with', 'without']) {
        await new Promise((r) => setTimeout(r, 1000))
        const s = mode === 'with' ? [scraper(tb.names.node, 9469), scraper(tb.names.client[0], 9470)] : []
        const r = await iperf(tb, tb.names.client[0], {seconds, streams: 1, pids})
        const counts = await Promise.all(s.map((x) => x.stop()))
        if (mode === 'with') {
          scraped.push(counts)
          if (counts.some((c) => c === null || c.n < Math.floor((seconds * 1000) / SCRAPE_MS) - 1 || c.bad > 0)) throw new Error(`scrapes did not all answer: ${JSON.stringify(counts)}`)
        }
        runs[mode].push(r.mbps)
        log(`${mode} scrapes (${i + 1}/${repeat}): ${r.mbps.toFixed(0)} Mbit/s${mode === 'with' ? `, ${counts.map((c) => c.n).join('+')} scrapes` : ''}`)
      }
    }
    const w = median(runs.with)
    const wo = median(runs.without)
    result.throughput = {seconds, repeat, withoutMbps: wo, withMbps: w, ratio: w / wo, runs, scraped}
    log(`throughput, 1 stream, median of ${repeat}: ${wo.toFixed(0)} Mbit/s without scrapes, ${w.toFixed(0)} with one every ${SCRAPE_MS / 1000} s (${((w / wo - 1) * 100).toFixed(1)}%)`)
  } finally {
    for (const c of children.reverse()) await tb.stop(c).catch(() => {})
    await tb.destroy()
  }
}

console.log(JSON.stringify(result, null, 2))
if (flags.json) writeFileSync(flags.json, JSON.stringify(result, null, 2) + '\n')
