#!/usr/bin/env node
// Failover time per transport (issue #16, docs/failover.md): kill -9 of a client's current node
// to the first ping answered through the other one.
//
//   node bench/failover.mjs [--runs 20] [--transports tls,gre,ipip,ipsec-over-gre] [--interval 0.1] [--json out.json] [--logs DIR]
// Environment equivalents: BENCH_FAILOVER_RUNS, BENCH_FAILOVER_TRANSPORTS, BENCH_JSON (suffixed
// -failover), BENCH_LOGS.
//
// The setup is test/integration/failover.test.ts's: for each transport, a fresh testbed with two
// nodes and one client namespace, the real `agent up` on both nodes and a client (alice) that
// lists both (`nodes: [node1, node2]`, the default `selection`). A `ping -n -D -i 0.1` to the
// target runs in the client's namespace the whole time (--interval: another interval, for a finer
// look). Each run:
//   1. the client is stable: `agent status --json` says connected, and then 1 s of pings in a
//      row were answered;
//   2. the node that is current at that moment is killed with SIGKILL (it alternates: a node
//      that comes back as near as the other does not win the client back, by design), at a
//      random point between two pings;
//   3. the figure is the time from the kill to the reply of the first ping answered through the
//      other node: the first one sent (its receive time from `ping -D` minus its RTT) after the
//      kill and after the client noticed the loss (its log line "lost ...; failing over", ms
//      timestamps), so no ping that slipped through the dying node counts. Pings go every
//      100 ms, so the resolution is ~100 ms: the path may be back up to 100 ms before the next
//      ping leaves. Lost: the pings between the last answered before the kill and that one that
//      never got an answer. Also from the client's log: when it said "connected to node" again
//      (over datagrams, once a keepalive was answered, checked 250 ms after the welcome: data
//      flows before that);
//   4. the killed node is started again (`agent up`, which reclaims what the killed instance
//      left), and must be up before the next run.
// Target: at most 2 s, every run. All processes share this VM.
import {mkdirSync, writeFileSync} from 'node:fs'
import {join} from 'node:path'
import {parseArgs} from 'node:util'
import {execFileSync} from 'node:child_process'
import {cleanupStale, createFleet} from '../dist/testbed/index.js'
import {percentile} from './lib/stats.mjs'

const {values: flags} = parseArgs({options: {runs: {type: 'string'}, transports: {type: 'string'}, interval: {type: 'string'}, json: {type: 'string'}, logs: {type: 'string'}}})
const env = process.env
const ALL = ['tls', 'gre', 'ipip', 'ipsec-over-gre']
const runs = Number(flags.runs ?? env.BENCH_FAILOVER_RUNS ?? 20)
const transports = (flags.transports ?? env.BENCH_FAILOVER_TRANSPORTS ?? ALL.join(',')).split(',')
const jsonOut = flags.json ?? (env.BENCH_JSON ? env.BENCH_JSON.replace(/(\.json)?$/, '-failover.json') : undefined)
const logsDir = flags.logs ?? env.BENCH_LOGS
const PING_INTERVAL_S = Number(flags.interval ?? 0.1)
if (!Number.isInteger(runs) || runs < 1 || runs > 100) throw new Error(`--runs must be 1 to 100, got ${runs}`)
if (!(PING_INTERVAL_S >= 0.01 && PING_INTERVAL_S <= 1)) throw new Error(`--interval must be 0.01 to 1 (seconds), got ${flags.interval}`)
for (const t of transports) if (!ALL.includes(t)) throw new Error(`unknown transport ${JSON.stringify(t)}: ${ALL.join(', ')}`)

const log = (m) => console.error(`[bench:failover] ${m}`)
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
const TARGET_MS = 2000
/** Pings answered in a row (1 s of them), after status says connected, before a node is killed. */
const STABLE_PINGS = Math.ceil(1 / PING_INTERVAL_S)
/** How long a run may take to get pings through again before it counts as failed. */
const RECOVER_TIMEOUT_MS = 15_000
/** How long the client may take to be connected and stable again. */
const STABLE_TIMEOUT_MS = 30_000
const PREFIX = 'fob'

async function until(what, fn, timeoutMs) {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const v = await fn()
    if (v !== undefined) return v
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}`)
    await sleep(50)
  }
}

/** A `ping -D` kept running; its replies as {seq, t (ms since epoch, received), rtt (ms)}. */
function startPing(tb, ns) {
  const child = tb.spawn(ns, 'ping', ['-n', '-D', '-i', String(PING_INTERVAL_S), tb.addr.target], {stdio: ['ignore', 'pipe', 'pipe']})
  const replies = []
  let buf = ''
  child.stdout.on('data', (b) => {
    buf += b
    let i
    while ((i = buf.indexOf('\n')) >= 0) {
      const m = /^\[(\d+\.\d+)\] \d+ bytes from \S+ icmp_seq=(\d+) ttl=\d+ time=([\d.]+) ms/.exec(buf.slice(0, i))
      if (m) replies.push({seq: Number(m[2]), t: Number(m[1]) * 1000, rtt: Number(m[3])})
      buf = buf.slice(i + 1)
    }
  })
  return {child, replies}
}

/** The time (ms since epoch) of the first line matching `re` in an agent's output from `from` on. */
function logTime(output, from, re) {
  const m = re.exec(output.slice(from))
  return m ? {t: Date.parse(m[1]), m} : null
}

async function bench(transport) {
  const fleet = await createFleet({prefix: PREFIX, clients: 1, nodes: 2, transport})
  const {tb} = fleet
  const ns = tb.names.client[0]
  const out = {transport, runs: [], errors: []}
  const nodes = []
  let client
  let ping
  try {
    nodes.push(await fleet.startNode({node: 1}), await fleet.startNode({node: 2}))
    client = await fleet.startClient('alice', 0, {nodes: [1, 2]})
    ping = startPing(tb, ns)
    const status = async () => {
      const r = await fleet.cli(ns, ['status', '--json'])
      if (r.code !== 0) throw new Error(`agent status: ${r.stderr}`)
      return JSON.parse(r.stdout)[0]
    }
    /** Connected (per status), then STABLE_PINGS answered in a row after that: the report. */
    const stable = async (not) =>
      until(
        'the client connected and pings flowing',
        async () => {
          const s = await status()
          const cur = s.selection?.current
          if (s.state !== 'connected' || cur == null || cur === not) return undefined
          const since = Date.now()
          const seq0 = ping.replies.at(-1)?.seq ?? 0
          await until(`${STABLE_PINGS} pings answered`, async () => (ping.replies.filter((r) => r.t > since).length >= STABLE_PINGS ? true : undefined), 5_000).catch(() => {})
          const after = ping.replies.filter((r) => r.t > since)
          // In a row: no gap in the sequence numbers since the last reply before `since`.
          const inRow = after.length >= STABLE_PINGS && after.every((r, i) => r.seq === (i === 0 ? seq0 : after[i - 1].seq) + 1)
          return inRow ? s : undefined
        },
        STABLE_TIMEOUT_MS,
      )
    let report = await stable()
    log(`${transport}: client on ${report.selection.current}, ${report.selection.candidates.length} nodes; ${runs} runs`)
    for (let run = 1; run <= runs; run++) {
      const victimName = report.selection.current
      const survivor = victimName === 'node1' ? 'node2' : 'node1'
      const k = victimName === 'node1' ? 1 : 2
      const victim = nodes[k - 1]
      const switches0 = report.selection.switches
      // At a random point between two pings: `stable` returns just after a reply (it polls every
      // 50 ms), so without this the next ping would always leave 50 to 100 ms after the kill,
      // after the path was back, and no run would ever lose one.
      await sleep(Math.random() * PING_INTERVAL_S * 1000)
      const lastBefore = ping.replies.at(-1)
      const from = client.output.length
      const killedAt = Date.now()
      process.kill(victim.pid, 'SIGKILL')
      const r = {run, victim: victimName, to: survivor, ms: null, lost: null}
      const noticedLine = /^(\S+) \S+ +\S+: connection to node \S+ \(\S+\) lost \((.*)\); failing over to (\S+)/m
      try {
        // Sent after the kill, and after the client noticed (ms in its log: from the next ms on).
        const after = () => Math.max(killedAt, (logTime(client.output, from, noticedLine)?.t ?? 0) + 1)
        const resumed = await until('a ping answered through the other node', async () => ping.replies.find((x) => x.seq > lastBefore.seq && x.t - x.rtt >= after()), RECOVER_TIMEOUT_MS)
        r.ms = resumed.t - killedAt
        r.resumedSeq = resumed.seq
        r.lastSeqBefore = lastBefore.seq
        // Replies after the kill to pings sent before the client noticed (through the dying node,
        // or held somewhere until the new one was up): not counted as the failover's end.
        r.answeredBetween = ping.replies.filter((x) => x.t > killedAt && x.seq < resumed.seq).length
      } catch (e) {
        out.errors.push(`run ${run}: ${e.message}`)
      }
      await victim.exited
      const t0 = Date.now()
      nodes[k - 1] = await fleet.startNode({node: k})
      r.restartMs = Date.now() - t0
      const noticed = logTime(client.output, from, noticedLine)
      const connected = logTime(client.output, from, /^(\S+) \S+ +\S+: connected to node (\S+) as/m)
      r.noticedMs = noticed ? noticed.t - killedAt : null
      r.reason = noticed?.m[2] ?? null
      r.connectedMs = connected ? connected.t - killedAt : null
      try {
        report = await stable(victimName)
      } catch (e) {
        out.errors.push(`run ${run}: ${e.message}`)
        out.runs.push(r)
        log(`${transport}: run ${run}: the client did not settle on ${survivor}; giving up on ${transport}. Client output tail:\n${client.output.split('\n').slice(-20).join('\n')}`)
        break
      }
      if (report.selection.current !== survivor) out.errors.push(`run ${run}: the client is on ${report.selection.current}, not ${survivor}`)
      // Oldest first (the last SWITCHES_KEPT moves).
      const move = report.selection.recent.at(-1)
      if (report.selection.switches !== switches0 + 1 || move?.from !== victimName || move?.to !== survivor) {
        out.errors.push(`run ${run}: expected one move ${victimName} -> ${survivor}, status shows ${report.selection.switches - switches0} (${JSON.stringify(move)})`)
      }
      // Late replies had the restart and the settling to come in: what is still missing was lost.
      if (r.resumedSeq !== undefined) {
        const answered = new Set(ping.replies.map((x) => x.seq))
        r.lost = 0
        for (let s = r.lastSeqBefore + 1; s < r.resumedSeq; s++) if (!answered.has(s)) r.lost++
      }
      out.runs.push(r)
      const f = (x) => (x == null ? '—' : `${x.toFixed(0)} ms`)
      log(`${transport} run ${run}/${runs}: killed ${victimName}; pings through ${survivor} after ${f(r.ms)}${r.ms > TARGET_MS ? ' (OVER 2 s)' : ''}, ${r.lost ?? '?'} lost${r.answeredBetween ? ` (${r.answeredBetween} answered after the kill but sent before the client noticed)` : ''}; client noticed +${f(r.noticedMs)}, connected +${f(r.connectedMs)}; ${victimName} back in ${f(r.restartMs)}`)
    }
  } catch (e) {
    out.errors.push(e.message.slice(0, 2000))
    if (client) log(`${transport}: client output tail:\n${client.output.split('\n').slice(-20).join('\n')}`)
  } finally {
    if (logsDir) {
      mkdirSync(logsDir, {recursive: true})
      if (client) writeFileSync(join(logsDir, `failover-${transport}-client.log`), client.output)
      for (const [i, n] of nodes.entries()) writeFileSync(join(logsDir, `failover-${transport}-node${i + 1}.log`), n.output)
    }
    if (ping) await tb.stop(ping.child, 2000).catch(() => {})
    await tb.destroy().catch((e) => log(`teardown: ${e.message}`))
  }
  return out
}

// The testbed removes itself on SIGINT (src/testbed/cleanup.ts: its namespaces and processes,
// synchronously); this only says so and exits as interrupted.
process.once('SIGINT', () => {
  log('interrupted: removing the testbed')
  process.exit(130)
})

const stale = await cleanupStale(PREFIX)
if (stale.namespaces.length) log(`removed leftovers of earlier runs: ${stale.namespaces.join(', ')}`)
let commit = null
try {
  commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], {encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore']}).trim()
} catch {
  // Not a checkout.
}
const started = Date.now()
const results = []
for (const t of transports) {
  const t0 = Date.now()
  const r = await bench(t)
  r.seconds = (Date.now() - t0) / 1000
  const ms = r.runs.map((x) => x.ms).filter((x) => x !== null)
  const lost = r.runs.map((x) => x.lost).filter((x) => x !== null)
  const pick = (k) => r.runs.map((x) => x[k]).filter((x) => x !== null && x !== undefined)
  r.summary = {
    runs: r.runs.length,
    measured: ms.length,
    p50: percentile(ms, 50),
    max: ms.length ? Math.max(...ms) : NaN,
    min: ms.length ? Math.min(...ms) : NaN,
    mean: ms.length ? ms.reduce((a, b) => a + b, 0) / ms.length : NaN,
    over: r.runs.filter((x) => x.ms === null || x.ms > TARGET_MS).length,
    lostP50: percentile(lost, 50),
    lostMax: lost.length ? Math.max(...lost) : NaN,
    noticedP50: percentile(pick('noticedMs'), 50),
    noticedMax: pick('noticedMs').length ? Math.max(...pick('noticedMs')) : NaN,
    connectedP50: percentile(pick('connectedMs'), 50),
    connectedMax: pick('connectedMs').length ? Math.max(...pick('connectedMs')) : NaN,
  }
  results.push(r)
  log(`${t}: done in ${r.seconds.toFixed(0)} s: p50 ${r.summary.p50?.toFixed(0)} ms, max ${r.summary.max?.toFixed(0)} ms${r.errors.length ? `; ${r.errors.length} error(s)` : ''}`)
}
const totalSeconds = (Date.now() - started) / 1000

const f0 = (x) => (x === null || x === undefined || Number.isNaN(x) ? '—' : x.toFixed(0))
const lines = [
  `kill -9 of the client's current node to the first ping answered through the other node (sent after the kill and after the client noticed it); ping every ${PING_INTERVAL_S * 1000} ms, so ~${PING_INTERVAL_S * 1000} ms resolution. ` +
    `${runs} runs per transport, each on the node current at the time, the killed node started again between runs. Client noticed / connected: its log lines "lost ...; failing over" and "connected to node", from the kill.`,
  '',
  '| transport | runs | p50 (ms) | max (ms) | min (ms) | mean (ms) | over 2 s | pings lost per run (p50 / max) | client noticed, p50 / max (ms) | client connected, p50 / max (ms) |',
  '|---|---|---|---|---|---|---|---|---|---|',
]
for (const r of results) {
  const s = r.summary
  lines.push(
    `| ${r.transport} | ${s.measured}${s.runs < runs ? ` of ${runs}` : ''} | ${f0(s.p50)} | ${f0(s.max)} | ${f0(s.min)} | ${f0(s.mean)} | ${s.over === 0 && s.runs === runs ? '0' : `**${s.over + runs - s.runs}**`} | ${f0(s.lostP50)} / ${f0(s.lostMax)} | ${f0(s.noticedP50)} / ${f0(s.noticedMax)} | ${f0(s.connectedP50)} / ${f0(s.connectedMax)} |`,
  )
}
for (const r of results) for (const x of r.runs.filter((x) => x.ms === null || x.ms > TARGET_MS)) lines.push(`- ${r.transport} run ${x.run} (${x.victim} killed): ${x.ms === null ? 'no ping answered' : `${f0(x.ms)} ms`}; client noticed +${f0(x.noticedMs)} ms (${x.reason}), connected +${f0(x.connectedMs)} ms`)
for (const r of results) for (const e of r.errors) lines.push(`- error: ${r.transport}: ${e}`)
lines.push('', `Total ${totalSeconds.toFixed(0)} s.`)
console.log(lines.join('\n'))
const result = {bench: 'failover', commit, runs, totalSeconds, results}
console.log(JSON.stringify(result))
if (jsonOut) writeFileSync(jsonOut, JSON.stringify(result, null, 2))
process.exitCode = results.some((r) => r.errors.length > 0) ? 1 : 0
