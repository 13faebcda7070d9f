#!/usr/bin/env node
// Aggregate throughput of 4 clients at once against one node (issue #6), per transport.
//
//   node bench/aggregate.mjs [--transports gre,ipip,ipsec-over-gre,tls] [--workers 1,2] [--seconds 10] [--repeat 1]
// Environment equivalents: BENCH_AGG_TRANSPORTS, BENCH_AGG_WORKERS, BENCH_SECONDS, BENCH_REPEAT.
//
// A fresh namespace testbed per transport and worker count with 4 clients behind the NAT, each
// a real `agent up` (alice, bob, carol, dave), one node (`workers: n`), and 4 iperf3 servers
// on the target. The 4 iperf3 clients (one TCP stream each) run at the same time; the figure
// is the sum of what the servers received, the median of --repeat runs. Each client's namespace
// picks only source ports that the node steers to worker (client index % workers), so with 2
// workers two clients are on each in every run (real clients' NAT-assigned ports spread at
// random). tls
// and ipsec-over-gre run on one worker whatever is asked (their sessions live on the main
// thread): their row for 2 says so instead of measuring the same thing again.
import {readdirSync, readFileSync} from 'node:fs'
import {parseArgs} from 'node:util'
import {createTestbed, prepareFleet, useLocalPortsForLane} from '../dist/testbed/index.js'
import {startLogged} from './lib/proc.mjs'
import {median} from './lib/stats.mjs'
import {CLK_TCK, cpuSeconds, hostTicks} from './lib/measure.mjs'

const {values: flags} = parseArgs({options: {transports: {type: 'string'}, workers: {type: 'string'}, seconds: {type: 'string'}, repeat: {type: 'string'}}})
const workerCounts = (flags.workers ?? process.env.BENCH_AGG_WORKERS ?? '1,2').split(',').map(Number)
const transports = (flags.transports ?? process.env.BENCH_AGG_TRANSPORTS ?? 'gre,ipip,ipsec-over-gre,tls').split(',').map((s) => s.trim()).filter(Boolean)
const seconds = Number(flags.seconds ?? process.env.BENCH_SECONDS ?? 10)
const repeat = Number(flags.repeat ?? process.env.BENCH_REPEAT ?? 1)
const CLIENTS = ['alice', 'bob', 'carol', 'dave']
const log = (m) => console.error(`[bench:aggregate] ${m}`)

/** user+sys seconds of each thread of `pid` by name ("node", "agent-worker"...), summed per name. */
function threadCpu(pid) {
  const out = {}
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8')
      const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'))
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      out[name] = (out[name] ?? 0) + (Number(f[11]) + Number(f[12])) / CLK_TCK
    } catch {}
  }
  return out
}

async function measure(transport, workers) {
  const tb = await createTestbed({prefix: 'agg', clients: CLIENTS.length})
  const procs = []
  try {
    const fleet = await prepareFleet(tb, {transport, keepalive: 10, extraClients: CLIENTS.slice(2), workers})
    // Clients spread evenly over the workers asked for, each from its own port range.
    for (let i = 0; i < CLIENTS.length; i++) await useLocalPortsForLane(tb, tb.names.client[i], i, i % workers, workers)
    const node = await fleet.startNode()
    const lanes = Number(/(\d+) worker\(s\)/.exec(node.output)?.[1] ?? 1)
    // A transport that runs on one thread (tls, ipsec-over-gre) whatever is asked: its
    // 1-worker row is the figure.
    if (lanes < workers) return {transport, workers, single: /running 1: (.*)/.exec(node.output)?.[1] ?? 'runs on one worker'}
    procs.push(node.child)
    for (const [i, name] of CLIENTS.entries()) procs.push((await fleet.startClient(name, i)).child)
    for (let i = 0; i < CLIENTS.length; i++) {
      const {child} = await startLogged(tb, tb.names.target, 'iperf3', ['-s', '-p', String(5201 + i), '--forceflush'], {name: `iperf3-${i}`, ready: /Server listening/})
      procs.push(child)
    }
    const runs = []
    let nodeCpu = 0
    let workerCpu = 0
    let hostBusy = 0
    for (let r = 0; r < repeat; r++) {
      await new Promise((res) => setTimeout(res, 1000))
      const cpu0 = cpuSeconds(node.pid)
      const threads0 = threadCpu(node.pid)
      const host0 = hostTicks()
      const t0 = Date.now()
      const results = await Promise.all(
        CLIENTS.map((_, i) =>
          tb.exec(tb.names.client[i], 'iperf3', ['-c', tb.addr.target, '-p', String(5201 + i), '-t', String(seconds), '-J'], {timeoutMs: (seconds + 30) * 1000}),
        ),
      )
      const elapsed = (Date.now() - t0) / 1000
      nodeCpu = ((cpuSeconds(node.pid) - cpu0) / elapsed) * 100
      workerCpu = (((threadCpu(node.pid)['agent-worker'] ?? 0) - (threads0['agent-worker'] ?? 0)) / elapsed) * 100
      const host1 = hostTicks()
      hostBusy = ((host1.busy - host0.busy) / Math.max(1, host1.total - host0.total)) * 100
      const each = results.map((x) => {
        const j = JSON.parse(x.stdout)
        if (j.error) throw new Error(`iperf3: ${j.error}`)
        return j.end.sum_received.bits_per_second / 1e6
      })
      const sum = each.reduce((a, b) => a + b, 0)
      log(`${transport}, ${lanes} worker(s): ${sum.toFixed(0)} Mbit/s (${each.map((x) => x.toFixed(0)).join(' + ')}), node CPU ${nodeCpu.toFixed(0)}% (worker threads ${workerCpu.toFixed(0)}%), host ${hostBusy.toFixed(0)}% busy`)
      runs.push({sum, each, nodeCpu, workerCpu, hostBusy})
    }
    const sums = runs.map((x) => x.sum)
    return {transport, workers: lanes, mbps: median(sums), runs}
  } catch (e) {
    return {transport, workers, error: e instanceof Error ? e.message : String(e)}
  } finally {
    for (const p of procs.reverse()) await tb.stop(p).catch(() => {})
    await tb.destroy()
  }
}

const rows = []
for (const t of transports) {
  for (const w of workerCounts) rows.push(await measure(t, w))
}
console.log(`\n4 clients behind the NAT, one TCP stream each, ${seconds} s, median of ${repeat}\n`)
console.log('| transport | workers | aggregate (Mbit/s) | vs 1 worker | per client (Mbit/s) | node CPU (% of a core) | of which worker threads | host busy (% of all CPUs) |\n| --- | --- | --- | --- | --- | --- | --- | --- |')
for (const r of rows) {
  if (r.error) console.log(`| ${r.transport} | ${r.workers} | FAILED: ${r.error} | | | | | |`)
  else if (r.single) console.log(`| ${r.transport} | ${r.workers} | runs 1: ${r.single} | | | | | |`)
  else {
    const mid = r.runs.find((x) => x.sum === r.mbps) ?? r.runs[0]
    const one = rows.find((x) => x.transport === r.transport && x.workers === 1 && !x.error)
    const ratio = one === undefined || one === r ? '—' : `${(r.mbps / one.mbps).toFixed(2)}×`
    console.log(`| ${r.transport} | ${r.workers} | ${r.mbps.toFixed(0)} | ${ratio} | ${mid.each.map((x) => x.toFixed(0)).join(', ')} | ${mid.nodeCpu.toFixed(0)} | ${mid.workerCpu.toFixed(0)} | ${mid.hostBusy.toFixed(0)} |`)
  }
}
if (rows.some((r) => r.error)) process.exitCode = 1
