#!/usr/bin/env node
// Aggregate throughput of 4 clients at once against one node (issue #6), per transport.
//
//   node bench/aggregate.mjs [--transports gre,ipip,ipsec-over-gre,tls] [--seconds 10] [--repeat 1]
// Environment equivalents: BENCH_AGG_TRANSPORTS, BENCH_SECONDS, BENCH_REPEAT.
//
// A fresh namespace testbed per transport with 4 clients behind the NAT, each a real `agent up`
// (alice, bob, carol, dave), one node, and 4 iperf3 servers on the target. The 4 iperf3 clients
// (one TCP stream each) run at the same time; the figure is the sum of what the servers
// received, the median of --repeat runs. The node runs one worker (the only mode there is:
// multi-queue workers are not built yet, see docs/design/native-fast-path.md).
import {parseArgs} from 'node:util'
import {createTestbed, prepareFleet} from '../dist/testbed/index.js'
import {startLogged} from './lib/proc.mjs'
import {median} from './lib/stats.mjs'
import {cpuSeconds} from './lib/measure.mjs'

const {values: flags} = parseArgs({options: {transports: {type: 'string'}, seconds: {type: 'string'}, repeat: {type: 'string'}}})
const transports = (flags.transports ?? process.env.BENCH_AGG_TRANSPORTS ?? 'gre,ipip,ipsec-over-gre,tls').split(',').map((s) => s.trim()).filter(Boolean)
const seconds = Number(flags.seconds ?? process.env.BENCH_SECONDS ?? 10)
const repeat = Number(flags.repeat ?? process.env.BENCH_REPEAT ?? 1)
const CLIENTS = ['alice', 'bob', 'carol', 'dave']
const log = (m) => console.error(`[bench:aggregate] ${m}`)

async function measure(transport) {
  const tb = await createTestbed({prefix: 'agg', clients: CLIENTS.length})
  const procs = []
  try {
    const fleet = await prepareFleet(tb, {transport, keepalive: 10, extraClients: CLIENTS.slice(2)})
    const node = await fleet.startNode()
    procs.push(node.child)
    for (const [i, name] of CLIENTS.entries()) procs.push((await fleet.startClient(name, i)).child)
    for (let i = 0; i < CLIENTS.length; i++) {
      const {child} = await startLogged(tb, tb.names.target, 'iperf3', ['-s', '-p', String(5201 + i), '--forceflush'], {name: `iperf3-${i}`, ready: /Server listening/})
      procs.push(child)
    }
    const runs = []
    let nodeCpu = 0
    for (let r = 0; r < repeat; r++) {
      await new Promise((res) => setTimeout(res, 1000))
      const cpu0 = cpuSeconds(node.pid)
      const t0 = Date.now()
      const results = await Promise.all(
        CLIENTS.map((_, i) =>
          tb.exec(tb.names.client[i], 'iperf3', ['-c', tb.addr.target, '-p', String(5201 + i), '-t', String(seconds), '-J'], {timeoutMs: (seconds + 30) * 1000}),
        ),
      )
      nodeCpu = ((cpuSeconds(node.pid) - cpu0) / ((Date.now() - t0) / 1000)) * 100
      const each = results.map((x) => {
        const j = JSON.parse(x.stdout)
        if (j.error) throw new Error(`iperf3: ${j.error}`)
        return j.end.sum_received.bits_per_second / 1e6
      })
      const sum = each.reduce((a, b) => a + b, 0)
      log(`${transport}: ${sum.toFixed(0)} Mbit/s (${each.map((x) => x.toFixed(0)).join(' + ')}), node CPU ${nodeCpu.toFixed(0)}%`)
      runs.push({sum, each, nodeCpu})
    }
    const sums = runs.map((x) => x.sum)
    return {transport, mbps: median(sums), runs}
  } catch (e) {
    return {transport, error: e instanceof Error ? e.message : String(e)}
  } finally {
    for (const p of procs.reverse()) await tb.stop(p).catch(() => {})
    await tb.destroy()
  }
}

const rows = []
for (const t of transports) rows.push(await measure(t))
console.log(`\n4 clients behind the NAT, one TCP stream each, ${seconds} s, median of ${repeat}; node with 1 worker\n`)
console.log('| transport | aggregate (Mbit/s) | per client (Mbit/s) | node CPU (% of a core) |\n| --- | --- | --- | --- |')
for (const r of rows) {
  if (r.error) console.log(`| ${r.transport} | FAILED: ${r.error} | | |`)
  else {
    const mid = r.runs.find((x) => x.sum === r.mbps) ?? r.runs[0]
    console.log(`| ${r.transport} | ${r.mbps.toFixed(0)} | ${mid.each.map((x) => x.toFixed(0)).join(', ')} | ${mid.nodeCpu.toFixed(0)} |`)
  }
}
if (rows.some((r) => r.error)) process.exitCode = 1
