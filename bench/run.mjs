#!/usr/bin/env node
// Throughput / latency / CPU benchmark of every known path on the namespace testbed.
//
//   npm run bench                        (builds first; needs root, see bench/setup.sh)
//   node bench/run.mjs [--seconds 10] [--repeat 1] [--paths direct,openvpn-udp] [--json out.json]
//
// Environment equivalents: BENCH_SECONDS, BENCH_REPEAT, BENCH_PATHS, BENCH_JSON, BENCH_PINGS,
// BENCH_PING_INTERVAL, BENCH_LOGS (keep process logs there), BENCH_WAIT_IDLE (seconds to wait
// for other work on the machine to finish first). Each path runs in a fresh testbed of its own, so nothing carries over.
// Progress goes to stderr, the Markdown report to stdout.
import {execFileSync} from 'node:child_process'
import {cpSync, mkdirSync, readdirSync, readFileSync, writeFileSync} from 'node:fs'
import {join} from 'node:path'
import os from 'node:os'
import {parseArgs} from 'node:util'
import {cleanupStale, createTestbed} from '../dist/testbed/index.js'
import {hostBusyOver, iperf, pingRtt, startIperfServer, txBytes} from './lib/measure.mjs'
import {median} from './lib/stats.mjs'
import direct from './paths/direct.mjs'
import {openvpnTcp, openvpnUdp} from './paths/openvpn.mjs'
import {wireguardGo} from './paths/wireguard.mjs'
import {agentGre, agentGreIp, agentIpip, agentIpipIp, agentIpsec, agentTls} from './paths/agent.mjs'

/** @typedef {import('./paths/types.mjs').BenchPath} BenchPath */

/** Reference paths: the ceiling and the OpenVPN baselines agent transports are compared with. */
const BASELINE_PATHS = [direct, openvpnTcp, openvpnUdp, wireguardGo]

// Agent transports: each compared with the OpenVPN of the same carrier, in the same run.
/** @type {BenchPath[]} */
const AGENT_PATHS = [agentTls, agentGre, agentGreIp, agentIpip, agentIpipIp, agentIpsec]
// ═══════════════════════════════════════════════════════════════════════════════════════════════

const ALL_PATHS = [...BASELINE_PATHS, ...AGENT_PATHS]

const {values: flags} = parseArgs({
  options: {
    seconds: {type: 'string'},
    repeat: {type: 'string'},
    paths: {type: 'string'},
    json: {type: 'string'},
    pings: {type: 'string'},
    'ping-interval': {type: 'string'},
    logs: {type: 'string'},
    'wait-idle': {type: 'string'},
  },
})
const env = process.env
const num = (v, d) => (v === undefined || v === '' ? d : Number(v))
const cfg = {
  seconds: num(flags.seconds ?? env.BENCH_SECONDS, 10),
  repeat: num(flags.repeat ?? env.BENCH_REPEAT, 1),
  pings: num(flags.pings ?? env.BENCH_PINGS, 200),
  pingInterval: num(flags['ping-interval'] ?? env.BENCH_PING_INTERVAL, 0.02),
  paths: (flags.paths ?? env.BENCH_PATHS ?? '').split(',').map((s) => s.trim()).filter(Boolean),
  json: flags.json ?? env.BENCH_JSON,
  /** Directory to keep each path's process logs in (they go away with the testbed otherwise). */
  logs: flags.logs ?? env.BENCH_LOGS,
  /** Wait up to this many seconds for the machine to be idle (<10% busy) before starting. */
  waitIdle: num(flags['wait-idle'] ?? env.BENCH_WAIT_IDLE, 0),
}
for (const k of ['seconds', 'repeat', 'pings', 'pingInterval']) {
  if (!(cfg[k] > 0)) throw new Error(`bench: ${k} must be a positive number, got ${cfg[k]}`)
}
const unknown = cfg.paths.filter((p) => !ALL_PATHS.some((x) => x.name === p))
if (unknown.length) throw new Error(`bench: unknown path(s) ${unknown.join(', ')}; known: ${ALL_PATHS.map((p) => p.name).join(', ')}`)
const selected = cfg.paths.length ? ALL_PATHS.filter((p) => cfg.paths.includes(p.name)) : ALL_PATHS

const log = (msg) => process.stderr.write(`[bench] ${msg}\n`)

function firstLine(cmd, args) {
  try {
    return execFileSync(cmd, args, {stdio: ['ignore', 'pipe', 'pipe']}).toString().split('\n')[0].trim()
  } catch {
    return 'not installed'
  }
}

function machine() {
  const model = /model name\s*:\s*(.*)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? 'unknown'
  return {
    nproc: os.availableParallelism(),
    cpu: model,
    kernel: os.release(),
    node: process.version,
    openvpn: firstLine('openvpn', ['--version']),
    iperf3: firstLine('iperf3', ['--version']),
  }
}

/** Measure one path in a fresh testbed; failures are reported in the row, not thrown. */
/**
 * How busy the machine is with work that is not ours (2 s sample), waiting up to cfg.waitIdle
 * seconds in all for it to drop under 10%: on a shared machine others' tests skew every figure.
 */
let idleDeadline
async function waitIdle(what) {
  idleDeadline ??= Date.now() + cfg.waitIdle * 1000
  let busy = await hostBusyOver(2000)
  while (busy > 10 && Date.now() < idleDeadline) {
    log(`machine ${busy.toFixed(0)}% busy before ${what}, waiting for it to be idle`)
    busy = await hostBusyOver(5000)
  }
  if (busy > 10) log(`warning: the machine is ${busy.toFixed(0)}% busy before ${what}; figures will be low and noisy`)
  return busy
}

async function measure(path) {
  const res = {name: path.name, carrier: path.carrier, baseline: path.baseline, from: path.from ?? 'nat', info: []}
  res.othersBusyPercent = await waitIdle(path.name)
  const tb = await createTestbed({prefix: 'bench', clients: 1, publicClients: 1})
  const ctx = {
    client: path.from === 'public' ? tb.names.publicClient[0] : tb.names.client[0],
    clientAddr: path.from === 'public' ? tb.addr.publicClient[0] : tb.addr.client[0],
    log,
  }
  try {
    log(`${path.name}: setting up in ${tb.id}`)
    await path.setup(tb, ctx)
    // The path must really work, and really go where it claims, before anything is measured.
    const up = await tb.exec(ctx.client, 'ping', ['-n', '-c', '3', '-i', '0.2', '-W', '2', tb.addr.target])
    if (!/ [1-3] received/.test(up.stdout)) throw new Error(`target unreachable after setup:\n${up.stdout}`)
    if (path.tunnelDevice) {
      const route = await tb.exec(ctx.client, 'ip', ['route', 'get', tb.addr.target], {check: true})
      if (!route.stdout.includes(`dev ${path.tunnelDevice}`)) throw new Error(`route to the target is not via ${path.tunnelDevice}: ${route.stdout}`)
    }
    const pids = path.pids?.() ?? []
    await startIperfServer(tb)

    log(`${path.name}: ${cfg.pings} pings every ${cfg.pingInterval}s`)
    res.rtt = await pingRtt(tb, ctx.client, {count: cfg.pings, intervalS: cfg.pingInterval})
    delete res.rtt.samples

    const tx0 = path.tunnelDevice ? await txBytes(tb, ctx.client, path.tunnelDevice) : 0
    let sent = 0
    for (const streams of [1, 4]) {
      const runs = []
      for (let i = 0; i < cfg.repeat; i++) {
        // A pause lets the previous run's queued data drain out of the tunnel first.
        await new Promise((res) => setTimeout(res, 1000))
        log(`${path.name}: iperf3 -P ${streams}, ${cfg.seconds}s (${i + 1}/${cfg.repeat})`)
        const r = await iperf(tb, ctx.client, {seconds: cfg.seconds, streams, pids})
        const retried = r.attempts > 1 ? ` (after ${r.attempts - 1} rejected start(s))` : ''
        log(`${path.name}:   ${r.mbps.toFixed(1)} Mbit/s${r.cpuPercent === null ? '' : `, CPU ${r.cpuPercent.toFixed(0)}%`}${retried}`)
        runs.push(r)
        sent += r.bytes
      }
      const mbps = median(runs.map((r) => r.mbps))
      const cpu = pids.length ? median(runs.map((r) => r.cpuPercent)) : null
      const hostBusyPercent = median(runs.map((r) => r.hostBusyPercent))
      res[`tcp${streams}`] = {mbps, cpuPercent: cpu, cpuPer100Mbps: cpu === null ? null : cpu / (mbps / 100), hostBusyPercent, runs}
    }
    if (path.tunnelDevice) {
      const tunnelled = (await txBytes(tb, ctx.client, path.tunnelDevice)) - tx0
      if (tunnelled < 0.9 * sent) throw new Error(`only ${tunnelled} bytes left by ${path.tunnelDevice} for ${sent} bytes of iperf3 payload`)
    }
  } catch (e) {
    res.error = e instanceof Error ? e.message : String(e)
    log(`${path.name}: FAILED: ${res.error}`)
  } finally {
    try {
      await path.teardown(tb, ctx)
      res.info = path.info?.() ?? []
    } catch (e) {
      log(`${path.name}: teardown: ${e instanceof Error ? e.message : e}`)
    }
    if (cfg.logs) {
      const dst = join(cfg.logs, path.name)
      mkdirSync(dst, {recursive: true})
      for (const f of readdirSync(tb.dir).filter((f) => f.endsWith('.log'))) cpSync(join(tb.dir, f), join(dst, f))
    }
    await tb.destroy()
  }
  return res
}

const f1 = (x) => (x === null || x === undefined || Number.isNaN(x) ? '—' : x.toFixed(1))
const f0 = (x) => (x === null || x === undefined || Number.isNaN(x) ? '—' : x.toFixed(0))
const f3 = (x) => (x === null || x === undefined || Number.isNaN(x) ? '—' : x.toFixed(3))

function ratio(results, r, key) {
  if (!r.baseline || r.error) return '—'
  if (r.baseline === r.name) return 'baseline'
  const b = results.find((x) => x.name === r.baseline)
  if (!b || b.error || !b[key]) return 'n/a'
  return `${(r[key].mbps / b[key].mbps).toFixed(2)}×`
}

function table(results) {
  const head = [
    'path', 'carrier', 'TCP 1 stream (Mbit/s)', 'vs baseline', 'TCP 4 streams (Mbit/s)', 'vs baseline',
    'RTT p50 (ms)', 'RTT p99 (ms)', 'ping loss', 'CPU, 1 stream (% of a core)', 'CPU % per 100 Mbit/s',
    `host busy, 1 stream (% of ${os.availableParallelism()} CPUs)`,
  ]
  const rows = results.map((r) =>
    r.error
      ? [r.name, r.carrier, `FAILED: ${r.error.split('\n')[0].slice(0, 80)}`, '', '', '', '', '', '', '', '', '']
      : [
          r.name, r.carrier,
          f0(r.tcp1.mbps), ratio(results, r, 'tcp1'),
          f0(r.tcp4.mbps), ratio(results, r, 'tcp4'),
          f3(r.rtt.p50), f3(r.rtt.p99), `${(r.rtt.loss * 100).toFixed(1)}%`,
          f0(r.tcp1.cpuPercent), f1(r.tcp1.cpuPer100Mbps), f0(r.tcp1.hostBusyPercent),
        ],
  )
  return [head, head.map(() => '---'), ...rows].map((cells) => `| ${cells.join(' | ')} |`).join('\n')
}

const m = machine()
const stale = await cleanupStale('bench')
if (stale.namespaces.length) log(`removed leftovers of earlier runs: ${stale.namespaces.join(', ')}`)
log(`paths: ${selected.map((p) => p.name).join(', ')}; ${cfg.seconds}s per iperf3 run, ${cfg.repeat} run(s) each`)
const busyBefore = await waitIdle('the bench')
const started = Date.now()
const results = []
for (const p of selected) results.push(await measure(p))
const busyAfter = await hostBusyOver(2000)

const out = [
  `Machine: ${m.nproc} CPUs (${m.cpu}), kernel ${m.kernel}, node ${m.node}`,
  `${m.openvpn}; ${m.iperf3}`,
  `Machine busy with other work: ${busyBefore.toFixed(0)}% before, ${busyAfter.toFixed(0)}% after the run (2 s samples; should be ~0).`,
  `iperf3 TCP client1 -> 203.0.113.10, ${cfg.seconds}s per run, median of ${cfg.repeat}; ${cfg.pings} pings every ${cfg.pingInterval}s (idle); ` +
    `CPU = user+sys of the path's processes (both ends) during the 1-stream run; host busy = whole machine, iperf3 and kernel included. Total ${((Date.now() - started) / 1000).toFixed(0)}s.`,
  '',
  table(results),
  '',
  ...results.flatMap((r) => r.info.map((l) => `- ${l}`)),
  ...results.filter((r) => r.othersBusyPercent > 10).map((r) => `- ${r.name}: the machine was ${r.othersBusyPercent.toFixed(0)}% busy with other work when it started`),
]
console.log(out.join('\n'))
if (cfg.json) writeFileSync(cfg.json, JSON.stringify({machine: m, config: cfg, results}, null, 2))
process.exitCode = results.some((r) => r.error) ? 1 : 0
