#!/usr/bin/env node
// A node with a roster of thousands (issue #13): rosters of 1, 1,000, 5,000 and 10,000 connected
// clients, one after the other in the same run, each against a cold node (a fresh `agent up`
// on a fresh testbed).
//
//   node bench/scale.mjs [--rosters 1,1000,5000,10000] [--concurrency 128] [--seconds 5]
//                        [--repeat 5] [--pings 200] [--ping-interval 0.01] [--json out.json] [--logs DIR]
//                        [--cache bench/.cache] [--profile DIR]
// Environment equivalents: BENCH_SCALE_ROSTERS, BENCH_SCALE_CONCURRENCY, BENCH_SCALE_SECONDS, BENCH_SCALE_REPEAT,
// BENCH_SCALE_PINGS, BENCH_SCALE_PING_INTERVAL, BENCH_JSON (suffixed -scale), BENCH_LOGS,
// BENCH_SCALE_CACHE, BENCH_SCALE_PROFILE. A roster of 1 is always measured, first and again last:
// it is the baseline, and its data path figures pool both runs, so drift during the run is not read as a cost of N.
//
// The node: tls, tunnel subnet 10.96.0.0/18, `clients: any`, `pki: {bundle, crl}`. The clients:
// N simulated ones (bench/idle/simulate.mjs: the real control channel with the core's code,
// mutual TLS with a certificate each, hello, welcome, native records, keepalives) in the first
// client namespace, --concurrency handshakes in flight, and one real `agent up` client in the
// second, connected after all N. Certificates come from a cache (bench/scale/pki-cache.mjs).
// For each roster size:
//   1. connect storm: from the first connection to the last welcome (as the simulator times
//      it), with the node's and the simulator's CPU over it
//   2. the node's VmRSS and VmHWM once all are welcomed
//   3. `agent status --json`: the CLI's wall time, and the status socket query alone
//   4. reload adding one listed client: `agent reload --config` wall time, the node's apply
//      time (the socket request alone), and `agent --version` (CLI start-up)
//   5. revoking one simulated client with `agent pki revoke`: from the CRL file's write (its
//      mtime) to the client being told it is refused, its connection closed, and its address
//      gone from the ipset (`ipset test` in the node's namespace every 10 ms)
//   6. the real client's data path: iperf3 TCP, one stream, and ping p50 (medians of --repeat
//      runs of each), compared with roster 1 (measured before 5, with all N connected)
// and, along the way: the storm's pace and the node's memory every 1,000 welcomes, where the
// node's resident memory is (/proc/<pid>/smaps), and how long the node takes to stop (SIGTERM
// until it exited, everything removed) with all N still connected.
// --profile DIR: instead, the largest roster's connect storm only, with the node and the
// simulator under --cpu-prof, the node under --trace-gc, and a heap snapshot of the node after
// the storm, summarized (top self and inclusive time over the storm, heap by constructor).
// The certificate cache is built on the first run (about 75 s for 10,000 on 2 vCPUs).
import {copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync} from 'node:fs'
import {execFileSync} from 'node:child_process'
import {createInterface} from 'node:readline'
import os, {tmpdir} from 'node:os'
import {join} from 'node:path'
import {parseArgs} from 'node:util'
import {issueCrl} from '../dist/core/pki/revocation.js'
import {queryStatus, requestReload} from '../dist/core/status/server.js'
import {AgentProcess, admittedAddresses, agentCli, agentEnv, BIN, cleanupStale, createTestbed, NODE_PORT} from '../dist/testbed/index.js'
import {CLK_TCK, cpuSeconds, hostBusyOver, hostTicks, iperf, pingRtt, startIperfServer, txBytes} from './lib/measure.mjs'
import {median} from './lib/stats.mjs'
import {REAL_CLIENT, scalePki, SIM_PAD, SIM_PREFIX, simName} from './scale/pki-cache.mjs'
import {summarizeCpuProfile, summarizeHeapSnapshot} from './scale/profiles.mjs'

const {values: flags} = parseArgs({
  options: {
    rosters: {type: 'string'},
    concurrency: {type: 'string'},
    seconds: {type: 'string'},
    repeat: {type: 'string'},
    pings: {type: 'string'},
    'ping-interval': {type: 'string'},
    json: {type: 'string'},
    logs: {type: 'string'},
    cache: {type: 'string'},
    profile: {type: 'string'},
  },
})
const env = process.env
const num = (v, d) => (v === undefined || v === '' ? d : Number(v))
const cfg = {
  rosters: [...new Set([1, ...(flags.rosters ?? env.BENCH_SCALE_ROSTERS ?? '1,1000,5000,10000').split(',').map((s) => Number(s.trim()))])],
  concurrency: num(flags.concurrency ?? env.BENCH_SCALE_CONCURRENCY, 128),
  seconds: num(flags.seconds ?? env.BENCH_SCALE_SECONDS, 5),
  repeat: num(flags.repeat ?? env.BENCH_SCALE_REPEAT, 5),
  pings: num(flags.pings ?? env.BENCH_SCALE_PINGS, 200),
  pingInterval: num(flags['ping-interval'] ?? env.BENCH_SCALE_PING_INTERVAL, 0.01),
  json: flags.json ?? (env.BENCH_JSON ? env.BENCH_JSON.replace(/(\.json)?$/, '-scale.json') : undefined),
  logs: flags.logs ?? env.BENCH_LOGS,
  cache: flags.cache ?? env.BENCH_SCALE_CACHE ?? join(import.meta.dirname, '.cache'),
  profile: flags.profile ?? env.BENCH_SCALE_PROFILE,
}
/** A /18 has 16,382 hosts, one of them the node. */
const MAX_ROSTER = 16000
for (const n of cfg.rosters) if (!Number.isInteger(n) || n < 1 || n > MAX_ROSTER) throw new Error(`--rosters: whole numbers 1 to ${MAX_ROSTER}, got ${n}`)
for (const k of ['concurrency', 'seconds', 'repeat', 'pings', 'pingInterval']) if (!(cfg[k] > 0)) throw new Error(`--${k} must be positive, got ${cfg[k]}`)
if (cfg.profile !== undefined) cfg.rosters = [Math.max(...cfg.rosters)]

const SUBNET = '10.96.0.0/18'
const SET = 'agent-node1'
const SIMULATE = join(import.meta.dirname, 'idle', 'simulate.mjs')
/** Descriptors for the node and the simulator: a tls session holds up to 3 at the node (control-server.ts). */
const NOFILE = 65536
/** SIGTERM to SIGKILL for the node: its shutdown with N clients is measured. */
const NODE_STOP_TIMEOUT_MS = 300_000
const log = (m) => console.error(`[bench:scale] ${m}`)
const hr = () => process.hrtime.bigint()
const msSince = (t0) => Number(hr() - t0) / 1e6
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

/** VmRSS, VmHWM, RssAnon, RssFile of a process, in MiB. */
function memory(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const kb = (key) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) / 1024
  return {rss: kb('VmRSS'), hwm: kb('VmHWM'), anon: kb('RssAnon'), file: kb('RssFile')}
}

/**
 * Where a process's resident memory is, from /proc/<pid>/smaps, in MiB: the brk heap (glibc's
 * main malloc arena: what C and C++ code of the main thread allocates, OpenSSL and the native
 * records included), other anonymous mappings (V8's heap pages, other threads' arenas, large
 * mallocs), and file-backed pages (the node binary, libraries).
 */
function smapsSplit(pid) {
  const out = {brkHeap: 0, otherAnon: 0, file: 0}
  let kind = null
  for (const line of readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    const head = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ (\d+)\s*(.*)$/.exec(line)
    if (head) {
      const path = head[2]
      kind = path === '[heap]' ? 'brkHeap' : path === '' || path.startsWith('[anon') ? 'otherAnon' : path.startsWith('/') ? 'file' : null
      continue
    }
    const rss = /^Rss:\s+(\d+) kB/.exec(line)
    if (rss && kind !== null) out[kind] += Number(rss[1]) / 1024
  }
  return out
}

/**
 * V8's heap as --trace-gc prints it ("Mark-Compact 210.1 (260.3) -> 150.2 (255.0) MB, 80.1 / 0.0 ms"):
 * after the last GC, used and committed MB; the most committed; how many GCs and their pauses.
 */
function traceGc(output) {
  const re = /(Scavenge|Mark-Compact|Mark-sweep)(?: \(reduce\))?\s+[\d.]+ \(([\d.]+)\) -> ([\d.]+) \(([\d.]+)\) MB, (?:pooled: [\d.]+ MB, )?([\d.]+) \/ ([\d.]+) ms/g
  let last = null
  let maxCommitted = 0
  let scavenges = 0
  let markCompacts = 0
  let pauseMs = 0
  for (const m of output.matchAll(re)) {
    if (m[1] === 'Scavenge') scavenges++
    else markCompacts++
    maxCommitted = Math.max(maxCommitted, Number(m[2]), Number(m[4]))
    pauseMs += Number(m[5])
    last = m
  }
  return last === null ? null : {lastUsed: Number(last[3]), lastCommitted: Number(last[4]), maxCommitted, scavenges, markCompacts, pauseMs}
}

/** user+sys seconds of a process's main thread (the event loop: named like the process) and of all its threads. */
function cpuSplit(pid) {
  const all = cpuSeconds(pid)
  try {
    const stat = readFileSync(`/proc/${pid}/task/${pid}/stat`, 'utf8')
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return {all, main: (Number(f[11]) + Number(f[12])) / CLK_TCK}
  } catch {
    return {all, main: 0}
  }
}

/** Lines of a child's stdout, kept, with waiting for one that matches (past or future). */
class Lines {
  lines = []
  waiters = new Set()
  constructor(stream) {
    createInterface({input: stream}).on('line', (line) => {
      this.lines.push(line)
      for (const w of this.waiters) {
        const m = w.re.exec(line)
        if (m) w.done(m)
      }
    })
  }
  wait(re, timeoutMs, what = String(re)) {
    for (const line of this.lines) {
      const m = re.exec(line)
      if (m) return Promise.resolve(m)
    }
    return new Promise((resolve, reject) => {
      const w = {re, done: (m) => (this.waiters.delete(w), clearTimeout(timer), resolve(m))}
      const timer = setTimeout(() => (this.waiters.delete(w), reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`))), timeoutMs)
      this.waiters.add(w)
    })
  }
}

/** Raise this process's descriptor limit; the node and the simulator, its children, inherit it. */
function raiseFdLimit() {
  try {
    execFileSync('prlimit', ['--pid', String(process.pid), `--nofile=${NOFILE}:${NOFILE}`], {stdio: ['ignore', 'ignore', 'pipe']})
  } catch (e) {
    // Without CAP_SYS_RESOURCE (or in a sandbox that forbids it) the hard limit stays: the
    // soft one can still be raised to it.
    const hard = /Max open files\s+\d+\s+(\d+)/.exec(readFileSync(`/proc/${process.pid}/limits`, 'utf8'))?.[1]
    try {
      if (hard !== undefined) execFileSync('prlimit', ['--pid', String(process.pid), `--nofile=${hard}:${hard}`], {stdio: 'ignore'})
    } catch {}
    log(`could not raise the descriptor limit to ${NOFILE} (${String(e.stderr ?? e.message).trim().split('\n')[0]}): it is ${limitOf(process.pid)}`)
  }
}
function limitOf(pid) {
  return /Max open files\s+(\d+)/.exec(readFileSync(`/proc/${pid}/limits`, 'utf8'))?.[1] ?? '?'
}

function machine() {
  const model = /model name\s*:\s*(.*)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? 'unknown'
  return {nproc: os.availableParallelism(), cpu: model, memMiB: Math.round(os.totalmem() / 2 ** 20), kernel: os.release(), node: process.version}
}

function nodeConfig(file, tb, pkiDir, crl, listed = []) {
  const clients = listed.length === 0 ? 'clients: any' : `clients:\n  - any\n${listed.map((c) => `  - {name: ${c.name}, address: ${c.address}}`).join('\n')}`
  writeFileSync(
    file,
    `role: node
name: node1
transport: tls
listen: {address: 0.0.0.0, port: ${NODE_PORT}}
tunnel: {interface: agtun0, subnet: ${SUBNET}}
egress: {interface: ${tb.ifaces.nodeEgress}}
pki: {bundle: ${pkiDir}/node1.pem, crl: ${crl}}
${clients}
transports:
  tls: {keepalive: 10}
`,
  )
}

function clientConfig(file, tb, pkiDir) {
  writeFileSync(
    file,
    `role: client
name: ${REAL_CLIENT}
transport: tls
node: {host: ${tb.addr.nodeWan}, port: ${NODE_PORT}, name: node1}
routes: [${tb.addr.target}/32]
tunnel: {interface: agtun0}
pki: {bundle: ${pkiDir}/${REAL_CLIENT}.pem}
reconnect: {minSeconds: 0.2, maxSeconds: 1}
`,
  )
}

/** Free addresses of the pool, from its top down, that no connected client holds (static ones for the reloads). */
function freeAddresses(admitted, count) {
  const held = new Set(admitted)
  const out = []
  // 10.96.63.254 is the /18's last host.
  for (let host = 63 * 256 + 254; out.length < count; host--) {
    const a = `10.96.${host >> 8}.${host & 255}`
    if (!held.has(a)) out.push(a)
  }
  return out
}

/** Everything for one roster size; failures are kept in the result, not thrown. */
async function measureRoster(n, pki, dataDir) {
  const res = {roster: n, concurrency: Math.min(cfg.concurrency, n), errors: []}
  // Other work on the machine skews every figure (2 s sample, before anything of ours runs).
  res.othersBusyPercent = await hostBusyOver(2000)
  if (res.othersBusyPercent > 10) log(`roster ${n}: warning: the machine is ${res.othersBusyPercent.toFixed(0)}% busy with other work`)
  const tb = await createTestbed({prefix: 'scale', clients: 2})
  const nodeNs = tb.names.node
  const simNs = tb.names.client[0]
  const realNs = tb.names.client[1]
  const runDir = (ns) => join(tb.nsDir(ns), 'run')
  const cli = async (ns, args, timeoutMs = 120_000) => {
    const t0 = hr()
    const r = await tb.exec(ns, process.execPath, [BIN, ...args], {env: agentEnv(runDir(ns), dataDir), timeoutMs})
    return {...r, ms: msSince(t0)}
  }
  const startAgent = (ns, args, nodeFlags = []) =>
    new AgentProcess(tb.spawn(ns, process.execPath, [...nodeFlags, BIN, ...args], {env: agentEnv(runDir(ns), dataDir), stdio: ['ignore', 'pipe', 'pipe']}))
  let node
  let sim
  let real
  let simErr = ''
  const profDir = cfg.profile
  try {
    log(`roster ${n}: testbed ${tb.id}`)
    // 10,000 connections from one address to one port need 10,000 source ports (28,232 by default).
    await tb.sysctl(simNs, {'net.ipv4.ip_local_port_range': '10000 65000'})

    // The admin side of revocation: a copy of the CA and of the victim's certificate, and the
    // CRL the node enforces (empty at first), so the cached PKI is never written to.
    const victimIndex = Math.floor(n / 2)
    const victim = simName(victimIndex)
    const admin = join(tb.dir, 'admin')
    mkdirSync(admin)
    for (const f of ['ca.crt', 'ca.key', `${victim}.crt`]) copyFileSync(join(pki, f), join(admin, f))
    const crl = join(admin, 'crl.pem')
    await issueCrl({dir: admin})
    const configs = join(tb.dir, 'configs')
    mkdirSync(configs)
    const config = join(configs, 'node1.yaml')
    nodeConfig(config, tb, pki, crl)

    // (--cpu-prof is not allowed in NODE_OPTIONS: flags of the node's own command line.)
    const nodeFlags = profDir === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${profDir}`, `--cpu-prof-name=node-${n}.cpuprofile`, '--heapsnapshot-signal=SIGUSR2', `--diagnostic-dir=${profDir}`, '--trace-gc']
    node = startAgent(nodeNs, ['up', '--config', config], nodeFlags)
    await node.waitFor(/node node1 up/, 30_000)
    res.nodeFdLimit = Number(limitOf(node.pid))
    res.rssNoClients = memory(node.pid)
    log(`roster ${n}: node pid ${node.pid} up, RSS ${res.rssNoClients.rss.toFixed(1)} MiB, descriptor limit ${res.nodeFdLimit}`)

    // 1. The connect storm.
    const simArgs = [SIMULATE, pki, String(n), tb.addr.nodeWan, String(NODE_PORT), '--prefix', SIM_PREFIX, '--pad', String(SIM_PAD)]
    const step = n >= 2000 ? 1000 : 0
    simArgs.push('--concurrency', String(res.concurrency), '--retries', '3', '--report-close', '--progress', String(step))
    const simFlags = profDir === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${profDir}`, `--cpu-prof-name=simulator-${n}.cpuprofile`]
    sim = tb.spawn(simNs, process.execPath, [...simFlags, ...simArgs], {stdio: ['ignore', 'pipe', 'pipe']})
    sim.stderr.on('data', (d) => (simErr = (simErr + d).slice(-20_000)))
    const simLines = new Lines(sim.stdout)
    // Every 1,000 welcomes: how long the last 1,000 took, and the node's memory and CPU then.
    res.stormSteps = []
    let lastStep = null
    createInterface({input: sim.stdout}).on('line', (line) => {
      const w = /^welcomed (\d+) (\d+)$/.exec(line)
      if (w === null) return
      const now = {welcomed: Number(w[1]), ms: Number(w[2]), cpu: cpuSplit(node.pid), t: hr()}
      const mem = memory(node.pid)
      const dt = lastStep === null ? null : Number(now.t - lastStep.t) / 1e9
      res.stormSteps.push({
        welcomed: now.welcomed,
        seconds: now.ms / 1000,
        stepSeconds: lastStep === null ? now.ms / 1000 : (now.ms - lastStep.ms) / 1000,
        nodeMainThreadPercent: dt === null ? null : ((now.cpu.main - lastStep.cpu.main) / dt) * 100,
        rssMiB: mem.rss,
        hwmMiB: mem.hwm,
      })
      lastStep = now
    })
    const simExit = new Promise((_, reject) => sim.once('exit', (code) => reject(new Error(`the simulator exited (${code}): ${simErr.trim().slice(-2000)}`))))
    simExit.catch(() => {})
    await Promise.race([simLines.wait(/^starting \d+/, 120_000), simExit])
    const cpu0 = {node: cpuSplit(node.pid), sim: cpuSplit(sim.pid), host: hostTicks(), t: hr()}
    const stormStartUs = Number(cpu0.t / 1000n)
    const m = await Promise.race([simLines.wait(new RegExp(`^connected ${n} (\\d+) p50=(\\S+) p99=(\\S+) max=(\\S+) retries=(\\d+)`), Math.max(300_000, n * 60), 'all welcomed'), simExit])
    const cpu1 = {node: cpuSplit(node.pid), sim: cpuSplit(sim.pid), host: hostTicks(), t: hr()}
    const wall = Number(cpu1.t - cpu0.t) / 1e9
    res.storm = {
      seconds: Number(m[1]) / 1000,
      perClientMs: {p50: Number(m[2]), p99: Number(m[3]), max: Number(m[4])},
      retries: Number(m[5]),
      nodeCpuPercent: ((cpu1.node.all - cpu0.node.all) / wall) * 100,
      nodeMainThreadPercent: ((cpu1.node.main - cpu0.node.main) / wall) * 100,
      simCpuPercent: ((cpu1.sim.all - cpu0.sim.all) / wall) * 100,
      simMainThreadPercent: ((cpu1.sim.main - cpu0.sim.main) / wall) * 100,
      hostBusyPercent: ((cpu1.host.busy - cpu0.host.busy) / Math.max(1, cpu1.host.total - cpu0.host.total)) * 100,
    }
    const s = res.storm
    log(
      `roster ${n}: all welcomed in ${s.seconds.toFixed(1)} s (${res.concurrency} in flight; per client p50 ${s.perClientMs.p50} ms, p99 ${s.perClientMs.p99} ms; ` +
        `${s.retries} retries); CPU node ${s.nodeCpuPercent.toFixed(0)}% (main thread ${s.nodeMainThreadPercent.toFixed(0)}%), ` +
        `simulator ${s.simCpuPercent.toFixed(0)}% (main ${s.simMainThreadPercent.toFixed(0)}%), machine ${s.hostBusyPercent.toFixed(0)}% busy`,
    )

    // 2. The node's memory.
    res.rssWelcomed = memory(node.pid)
    res.smapsWelcomed = smapsSplit(node.pid)
    res.nodeFds = readdirSync(`/proc/${node.pid}/fd`).length
    const admitted = await admittedAddresses(tb, nodeNs)
    res.admitted = admitted.length
    if (admitted.length !== n) throw new Error(`the ipset holds ${admitted.length} addresses with ${n} clients welcomed`)
    for (const x of res.stormSteps) log(`roster ${n}:   ${x.welcomed} welcomed at ${x.seconds.toFixed(1)} s (last 1,000 in ${x.stepSeconds.toFixed(1)} s, node main thread ${f0(x.nodeMainThreadPercent)}%), RSS ${x.rssMiB.toFixed(0)} MiB, peak ${x.hwmMiB.toFixed(0)} MiB`)
    const sm = res.smapsWelcomed
    log(`roster ${n}: resident: brk heap (glibc main arena) ${sm.brkHeap.toFixed(1)} MiB, other anonymous ${sm.otherAnon.toFixed(1)} MiB, files ${sm.file.toFixed(1)} MiB`)
    log(`roster ${n}: RSS ${res.rssWelcomed.rss.toFixed(1)} MiB (anon ${res.rssWelcomed.anon.toFixed(1)}), peak ${res.rssWelcomed.hwm.toFixed(1)} MiB, ${res.nodeFds} descriptors, ${admitted.length} in ${SET}`)

    const sock = join(runDir(nodeNs), 'node1.sock')
    if (profDir !== undefined) {
      // V8's own heap over the storm, from --trace-gc: used and committed after each GC.
      res.gc = traceGc(node.output)
      if (res.gc !== null) log(`roster ${n}: V8 heap after the last GC ${res.gc.lastUsed} MB used of ${res.gc.lastCommitted} MB committed (most committed ${res.gc.maxCommitted} MB); ${res.gc.scavenges} scavenges, ${res.gc.markCompacts} mark-compacts, ${res.gc.pauseMs.toFixed(0)} ms of pauses`)
      // The heap as it is once all are welcomed; writing it blocks the node, so an answered
      // status query means it is done.
      const before = new Set(readdirSync(profDir))
      process.kill(node.pid, 'SIGUSR2')
      await sleep(500)
      await queryStatus(sock, 600_000)
      const snap = readdirSync(profDir).find((f) => f.endsWith('.heapsnapshot') && !before.has(f))
      res.profile = {dir: profDir, node: `node-${n}.cpuprofile`, simulator: `simulator-${n}.cpuprofile`, heapSnapshot: snap, storm: [stormStartUs, Number(cpu1.t / 1000n)]}
      return res
    }

    // 3. agent status, the CLI and the socket query alone.
    const queries = []
    let report
    for (let i = 0; i < 5; i++) {
      const t0 = hr()
      report = await queryStatus(sock, 60_000)
      queries.push(msSince(t0))
    }
    if (report.peers.length !== n) throw new Error(`the status socket lists ${report.peers.length} peers with ${n} welcomed`)
    const clis = []
    for (let i = 0; i < 3; i++) {
      const r = await cli(nodeNs, ['status', '--json'])
      const peers = r.code === 0 ? JSON.parse(r.stdout)[0]?.peers?.length : undefined
      if (peers !== n) throw new Error(`agent status --json (exit ${r.code}) lists ${peers} peers: ${r.stderr.trim().slice(0, 500)}`)
      clis.push(r.ms)
    }
    res.status = {peers: n, jsonBytes: JSON.stringify(report).length, socketMs: median(queries), socketRuns: queries, cliMs: median(clis), cliRuns: clis}
    log(`roster ${n}: agent status --json ${res.status.cliMs.toFixed(0)} ms (CLI), ${res.status.socketMs.toFixed(1)} ms (socket), ${(res.status.jsonBytes / 1024).toFixed(0)} KiB`)

    // 4. Reload: each adds one listed client with a static address no connected client holds.
    const added = freeAddresses(admitted, 6).map((address, i) => ({name: `added${i + 1}`, address}))
    const apply = []
    const reloadClis = []
    const versions = []
    const effects = []
    for (let i = 1; i <= 6; i++) {
      const file = join(configs, `node1-reload${i}.yaml`)
      nodeConfig(file, tb, pki, crl, added.slice(0, i))
      if (i <= 3) {
        const t0 = hr()
        const r = await requestReload(sock, file, 120_000)
        apply.push(msSince(t0))
        effects.push(...r.effects)
        if (!r.changed.includes('clients')) throw new Error(`reload ${i} changed ${r.changed.join(', ') || 'nothing'}`)
      } else {
        const r = await cli(nodeNs, ['reload', '--config', file])
        if (r.code !== 0) throw new Error(`agent reload failed (${r.code}): ${r.stderr.trim()}`)
        reloadClis.push(r.ms)
      }
    }
    for (let i = 0; i < 3; i++) {
      const r = await cli(nodeNs, ['--version'])
      if (r.code !== 0) throw new Error(`agent --version failed: ${r.stderr}`)
      versions.push(r.ms)
    }
    const afterReload = await queryStatus(sock, 60_000)
    res.reload = {
      applyMs: median(apply),
      applyRuns: apply,
      cliMs: median(reloadClis),
      cliRuns: reloadClis,
      cliStartupMs: median(versions),
      cliStartupRuns: versions,
      effects,
      connectedAfter: afterReload.roster?.connected,
      listedAfter: afterReload.roster?.listed,
    }
    if (afterReload.roster?.connected !== n) res.errors.push(`after the reloads ${afterReload.roster?.connected} connected, not ${n}`)
    log(`roster ${n}: reload ${res.reload.cliMs.toFixed(0)} ms (CLI), ${res.reload.applyMs.toFixed(1)} ms (node), agent --version ${res.reload.cliStartupMs.toFixed(0)} ms; effects: ${effects.join('; ') || 'none'}`)

    // What N idle clients cost in the background (their keepalives: one ping each per 10 s),
    // on the CPUs the data path then shares.
    const idle0 = {node: cpuSeconds(node.pid), sim: cpuSeconds(sim.pid), host: hostTicks(), t: hr()}
    await sleep(5000)
    const idleWall = msSince(idle0.t) / 1000
    const idleHost = hostTicks()
    res.idleCpu = {
      nodePercent: ((cpuSeconds(node.pid) - idle0.node) / idleWall) * 100,
      simPercent: ((cpuSeconds(sim.pid) - idle0.sim) / idleWall) * 100,
      hostBusyPercent: ((idleHost.busy - idle0.host.busy) / Math.max(1, idleHost.total - idle0.host.total)) * 100,
    }
    log(`roster ${n}: idle, CPU node ${res.idleCpu.nodePercent.toFixed(1)}%, simulator ${res.idleCpu.simPercent.toFixed(1)}%, machine ${res.idleCpu.hostBusyPercent.toFixed(1)}% busy`)

    // 6. (before the revocation, so that all N are connected) the real client, admitted last.
    const realConfig = join(configs, `${REAL_CLIENT}.yaml`)
    clientConfig(realConfig, tb, pki)
    // It is measured before the revocation, with all N still connected.
    const tReal = hr()
    real = startAgent(realNs, ['up', '--config', realConfig])
    await real.waitFor(/connected to node/, 120_000)
    const realConnectMs = msSince(tReal)
    const peersNow = (await queryStatus(sock, 60_000)).peers
    const realAddress = peersNow.find((p) => p.name === REAL_CLIENT)?.address
    const admittedNow = await admittedAddresses(tb, nodeNs)
    if (realAddress === undefined || !admittedNow.includes(realAddress)) throw new Error(`the real client (${realAddress}) is not in ${SET}`)
    const route = await tb.exec(realNs, 'ip', ['route', 'get', tb.addr.target], {check: true})
    if (!route.stdout.includes('dev agtun0')) throw new Error(`the real client's route to the target is not via agtun0: ${route.stdout}`)
    await startIperfServer(tb)
    const up = await tb.exec(realNs, 'ping', ['-n', '-c', '3', '-i', '0.2', '-W', '2', tb.addr.target])
    if (!/ [1-3] received/.test(up.stdout)) throw new Error(`the target is unreachable from the real client:\n${up.stdout}`)
    const tcps = []
    const rtts = []
    for (let i = 0; i < cfg.repeat; i++) {
      // A pause lets the previous run's queued data drain out of the tunnel first.
      await sleep(1000)
      const tx0 = await txBytes(tb, realNs, 'agtun0')
      const tcp = await iperf(tb, realNs, {seconds: cfg.seconds, streams: 1, pids: [node.pid]})
      const tunnelled = (await txBytes(tb, realNs, 'agtun0')) - tx0
      if (tunnelled < 0.9 * tcp.bytes) throw new Error(`only ${tunnelled} bytes left by agtun0 for ${tcp.bytes} bytes of iperf3 payload`)
      tcps.push(tcp)
      await sleep(500)
      const {samples, ...rtt} = await pingRtt(tb, realNs, {count: cfg.pings, intervalS: cfg.pingInterval})
      rtts.push(rtt)
    }
    const mid = (xs, k) => median(xs.map((x) => x[k]))
    res.dataPath = {
      realClientConnectMs: realConnectMs,
      realAddress,
      peers: peersNow.length,
      mbps: mid(tcps, 'mbps'),
      nodeCpuPercent: mid(tcps, 'cpuPercent'),
      hostBusyPercent: mid(tcps, 'hostBusyPercent'),
      rttP50: mid(rtts, 'p50'),
      rttP99: mid(rtts, 'p99'),
      loss: mid(rtts, 'loss'),
      runs: {tcp: tcps.map(({mbps, retransmits, cpuPercent, hostBusyPercent}) => ({mbps, retransmits, cpuPercent, hostBusyPercent})), rtt: rtts},
    }
    const tcp = {mbps: res.dataPath.mbps}
    const rtt = {p50: res.dataPath.rttP50, p99: res.dataPath.rttP99, loss: res.dataPath.loss}
    log(`roster ${n}: real client (${realAddress}, ${peersNow.length} peers) ${tcp.mbps.toFixed(0)} Mbit/s, RTT p50 ${rtt.p50} ms, p99 ${rtt.p99} ms, loss ${(rtt.loss * 100).toFixed(1)}%`)

    // 5. Revoke one connected simulated client.
    const victimAddress = peersNow.find((p) => p.name === victim)?.address
    if (victimAddress === undefined) throw new Error(`${victim} is not among the peers`)
    const poll = tb.spawn(nodeNs, 'bash', ['-c', `ipset -q test ${SET} ${victimAddress} || { echo absent; exit 1; }; echo polling; while ipset -q test ${SET} ${victimAddress}; do sleep 0.01; done; date +%s%3N`], {
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    const pollLines = new Lines(poll.stdout)
    await pollLines.wait(/^(polling|absent)$/, 10_000).then((x) => {
      if (x[1] === 'absent') throw new Error(`${victimAddress} (${victim}) was not in ${SET} before the revocation`)
    })
    const revokeCli = await cli(nodeNs, ['pki', 'revoke', victim, '--dir', admin])
    if (revokeCli.code !== 0) throw new Error(`agent pki revoke failed: ${revokeCli.stderr}`)
    const written = statSync(crl).mtimeMs
    const closed = Number((await simLines.wait(new RegExp(`^closed ${victim} (\\d+)`), 15_000, `${victim} closed`))[1])
    const refusedLine = simLines.lines.find((l) => l.startsWith(`refused ${victim} `))
    const gone = Number((await pollLines.wait(/^(\d{13})$/, 15_000, `${victimAddress} out of ${SET}`))[1])
    await sleep(1500)
    const afterRevoke = await queryStatus(sock, 60_000)
    const othersClosed = simLines.lines.filter((l) => /^closed /.test(l) && !l.startsWith(`closed ${victim} `))
    res.revocation = {
      victim,
      victimAddress,
      cliMs: revokeCli.ms,
      crlToRefusedMs: refusedLine === undefined ? null : Number(refusedLine.split(' ')[2]) - written,
      crlToClosedMs: closed - written,
      crlToIpsetMs: gone - written,
      closeReason: simLines.lines.find((l) => l.startsWith(`closed ${victim} `))?.split(' ').slice(3).join(' '),
      connectedAfter: afterRevoke.roster?.connected,
      othersClosed: othersClosed.length,
    }
    if (afterRevoke.roster?.connected !== n) res.errors.push(`after the revocation ${afterRevoke.roster?.connected} connected, expected ${n} (${n - 1} simulated + the real client)`)
    if (othersClosed.length > 0) res.errors.push(`${othersClosed.length} other simulated client(s) lost their connection: ${othersClosed.slice(0, 3).join('; ')}`)
    const r = res.revocation
    log(`roster ${n}: revoked ${victim}: CRL written -> refused ${r.crlToRefusedMs?.toFixed(0)} ms, closed ${r.crlToClosedMs.toFixed(0)} ms, out of the ipset ${r.crlToIpsetMs.toFixed(0)} ms (revoke CLI ${r.cliMs.toFixed(0)} ms)`)
  } catch (e) {
    res.errors.push(e instanceof Error ? e.message : String(e))
    log(`roster ${n}: FAILED: ${res.errors.at(-1)}`)
  } finally {
    if (real) await tb.stop(real.child, 10_000).catch(() => {})
    // The node first, with every simulated client still connected: how long a node with N
    // clients takes to stop (SIGTERM until it exited, everything removed).
    if (node) {
      const t0 = hr()
      await tb.stop(node.child, NODE_STOP_TIMEOUT_MS).catch(() => {})
      res.nodeStop = {ms: msSince(t0), killed: node.child.signalCode === 'SIGKILL', stopped: /stopped; everything it set up is removed/.test(node.output)}
      if (res.nodeStop.killed) res.errors.push(`the node did not stop within ${NODE_STOP_TIMEOUT_MS / 1000} s of SIGTERM and was killed`)
    }
    if (sim) await tb.stop(sim, 10_000).catch(() => {})
    if (node) {
      if (cfg.logs) {
        mkdirSync(cfg.logs, {recursive: true})
        writeFileSync(join(cfg.logs, `scale-${n}-node.log`), node.output)
        if (real) writeFileSync(join(cfg.logs, `scale-${n}-real.log`), real.output)
        writeFileSync(join(cfg.logs, `scale-${n}-simulator.log`), simErr)
      }
    }
    await tb.destroy().catch((e) => log(`roster ${n}: teardown: ${e.message}`))
  }
  return res
}

const f0 = (x) => (x === null || x === undefined || Number.isNaN(x) ? '—' : x.toFixed(0))
const f2 = (x) => (x === null || x === undefined || Number.isNaN(x) ? '—' : x.toFixed(2))
const f1 = (x) => (x === null || x === undefined || Number.isNaN(x) ? '—' : x.toFixed(1))
const f3 = (x) => (x === null || x === undefined || Number.isNaN(x) ? '—' : x.toFixed(3))
const table = (head, rows) => [head, head.map(() => '---'), ...rows].map((c) => `| ${c.join(' | ')} |`).join('\n')
const mb = (mib) => mib * 1.048576

function report(results, m, meta) {
  const ok = (r, k) => r[k] !== undefined
  // The roster of 1 is measured first and again last: its data path figures pool both, so a
  // machine that drifts during the run (this VM does, by a few %) does not read as a cost of N.
  const ones = results.filter((r) => r.roster === 1 && ok(r, 'dataPath'))
  const base = ones.length === 0 ? undefined : {
    dataPath: {
      mbps: median(ones.flatMap((r) => r.dataPath.runs.tcp.map((x) => x.mbps))),
      rttP50: median(ones.flatMap((r) => r.dataPath.runs.rtt.map((x) => x.p50))),
    },
  }
  const label = (r) => r.label ?? r.roster
  const out = []
  out.push(
    `Machine: ${m.nproc} CPUs (${m.cpu}), ${m.memMiB} MiB, kernel ${m.kernel}, node ${m.node}. tls, subnet ${SUBNET}, clients: any + pki.crl. ` +
      `Simulated clients with up to ${cfg.concurrency} handshakes in flight; real client: iperf3 1 stream ${cfg.seconds} s and ${cfg.pings} pings every ${cfg.pingInterval} s, median of ${cfg.repeat} runs. ` +
      `Total ${meta.totalSeconds.toFixed(0)} s${meta.pkiBuiltSeconds ? ` (of which ${meta.pkiBuiltSeconds.toFixed(0)} s issuing certificates into the cache)` : ''}.`,
    '',
    'Connect storm (cold node: all N welcomed, first connection to last welcome):',
    '',
    table(
      ['roster', 'all welcomed (s)', 'in flight', 'per client p50 / p99 (ms)', 'retries', 'node CPU (% of a core)', 'node main thread', 'simulator CPU', 'simulator main thread', `machine busy (% of ${m.nproc} CPUs)`],
      results.filter((r) => ok(r, 'storm')).map((r) => [
        label(r), f2(r.storm.seconds), r.concurrency, `${f1(r.storm.perClientMs.p50)} / ${f1(r.storm.perClientMs.p99)}`, r.storm.retries,
        // Over a storm shorter than a second the tick counts (10 ms) say nothing.
        ...(r.storm.seconds < 1 ? ['—', '—', '—', '—', '—'] : [f0(r.storm.nodeCpuPercent), f0(r.storm.nodeMainThreadPercent), f0(r.storm.simCpuPercent), f0(r.storm.simMainThreadPercent), f0(r.storm.hostBusyPercent)]),
      ]),
    ),
    '',
    'Node memory once all are welcomed (MiB; MB = 10^6 bytes in the targets):',
    '',
    table(
      ['roster', 'RSS, no client', 'VmRSS, all welcomed', 'of which anonymous', 'VmHWM (peak)', 'per client (KiB)', 'descriptors', `in ${SET}`],
      results.filter((r) => ok(r, 'rssWelcomed')).map((r) => [
        label(r), f1(r.rssNoClients.rss), `${f1(r.rssWelcomed.rss)} (${f0(mb(r.rssWelcomed.rss))} MB)`, f1(r.rssWelcomed.anon), `${f1(r.rssWelcomed.hwm)} (${f0(mb(r.rssWelcomed.hwm))} MB)`,
        r.roster < 100 ? '—' : f1(((r.rssWelcomed.rss - r.rssNoClients.rss) * 1024) / r.roster), r.nodeFds, r.admitted,
      ]),
    ),
  )
  if (results.some((r) => ok(r, 'status'))) {
    out.push(
      '',
      '`agent status --json` with N peers (median of 3 CLI runs, of 5 socket queries):',
      '',
      table(
        ['roster', 'CLI wall (ms)', 'socket query alone (ms)', 'JSON (KiB)'],
        results.filter((r) => ok(r, 'status')).map((r) => [label(r), f0(r.status.cliMs), f1(r.status.socketMs), f0(r.status.jsonBytes / 1024)]),
      ),
    )
  }
  if (results.some((r) => ok(r, 'reload'))) {
    out.push(
      '',
      'One reload adding a listed client (static address), N connected (medians of 3):',
      '',
      table(
        ['roster', '`agent reload` CLI wall (ms)', 'node apply, socket request (ms)', 'CLI start-up, `agent --version` (ms)', 'sessions cut or moved'],
        results.filter((r) => ok(r, 'reload')).map((r) => [label(r), f0(r.reload.cliMs), f1(r.reload.applyMs), f0(r.reload.cliStartupMs), r.reload.effects.length]),
      ),
    )
  }
  if (results.some((r) => ok(r, 'dataPath'))) {
    out.push(
      '',
      "A real client's data path, connected after all N (its address admitted last):",
      '',
      table(
        ['roster', 'peers', 'TCP 1 stream (Mbit/s)', 'its runs, lowest to highest', 'vs roster 1 (pooled)', 'RTT p50 (ms)', 'vs roster 1 (pooled)', 'RTT p99 (ms)', 'loss', 'node CPU, iperf3 (% of a core)', 'before, idle: node / simulator CPU (% of a core)'],
        results.filter((r) => ok(r, 'dataPath')).map((r) => [
          label(r), r.dataPath.peers, f0(r.dataPath.mbps),
          r.dataPath.runs.tcp.map((x) => x.mbps).sort((a, b) => a - b).map(f0).join(', '),
          base?.dataPath ? `${((r.dataPath.mbps / base.dataPath.mbps) * 100).toFixed(0)}%` : '—',
          f3(r.dataPath.rttP50), base?.dataPath ? `${((r.dataPath.rttP50 / base.dataPath.rttP50) * 100).toFixed(0)}%` : '—',
          f3(r.dataPath.rttP99), `${(r.dataPath.loss * 100).toFixed(1)}%`, f0(r.dataPath.nodeCpuPercent),
          r.idleCpu ? `${f1(r.idleCpu.nodePercent)} / ${f1(r.idleCpu.simPercent)}` : '—',
        ]),
      ),
    )
  }
  if (results.some((r) => ok(r, 'revocation'))) {
    out.push(
      '',
      'Revoking one connected client (`agent pki revoke`), from the CRL file written (its mtime) to:',
      '',
      table(
        ['roster', 'client told "refused" (ms)', 'its connection closed (ms)', `its address out of ${SET} (ms)`, '`agent pki revoke` CLI wall (ms)', 'connected after (N − 1 + the real client)'],
        results.filter((r) => ok(r, 'revocation')).map((r) => [
          label(r), f0(r.revocation.crlToRefusedMs), f0(r.revocation.crlToClosedMs), f0(r.revocation.crlToIpsetMs), f0(r.revocation.cliMs),
          `${r.revocation.connectedAfter}${r.revocation.othersClosed ? `, ${r.revocation.othersClosed} others lost` : ''}`,
        ]),
      ),
    )
  }
  if (results.some((r) => ok(r, 'nodeStop'))) {
    out.push(
      '',
      'Stopping the node (SIGTERM until it exited, everything it set up removed) with N clients connected:',
      '',
      table(
        ['roster', 'stop (s)', 'clean'],
        results.filter((r) => ok(r, 'nodeStop')).map((r) => [label(r), f1(r.nodeStop.ms / 1000), r.nodeStop.killed ? `**no**: killed after ${NODE_STOP_TIMEOUT_MS / 1000} s` : r.nodeStop.stopped ? 'yes' : 'exited without saying so']),
      ),
    )
  }
  for (const r of results.filter((r) => (r.stormSteps?.length ?? 0) > 0)) {
    out.push(
      '',
      `The storm of ${r.roster}, every 1,000 welcomes:`,
      '',
      table(
        ['welcomed', 'at (s)', 'last 1,000 took (s)', 'node main thread (% of a core)', 'node RSS (MiB)', 'node VmHWM (MiB)'],
        r.stormSteps.map((x) => [x.welcomed, f1(x.seconds), f1(x.stepSeconds), f0(x.nodeMainThreadPercent), f0(x.rssMiB), f0(x.hwmMiB)]),
      ),
    )
  }
  if (results.some((r) => ok(r, 'smapsWelcomed'))) {
    out.push(
      '',
      "Where the node's resident memory is once all are welcomed (MiB, /proc/<pid>/smaps):",
      '',
      table(
        ['roster', 'brk heap (glibc main arena: OpenSSL, native records, Node C++)', 'other anonymous (V8 heap, thread arenas, large mallocs)', 'files (binary, libraries)'],
        results.filter((r) => ok(r, 'smapsWelcomed')).map((r) => [label(r), f1(r.smapsWelcomed.brkHeap), f1(r.smapsWelcomed.otherAnon), f1(r.smapsWelcomed.file)]),
      ),
    )
  }
  const big = results.filter((r) => r.roster > 1 && (r.errors.length === 0 || ok(r, 'storm'))).sort((a, b) => a.roster - b.roster).at(-1)
  if (big !== undefined && big.roster > 1 && cfg.profile === undefined) {
    const t = (ok) => (ok === undefined ? 'not measured' : ok ? 'yes' : '**no**')
    const d = big.dataPath
    const b = base?.dataPath
    out.push(
      '',
      `Targets at ${big.roster}:`,
      '',
      table(['target', 'figure', 'met'], [
        ['throughput within 5% of roster 1 (its first and last runs pooled)', d && b ? `${f0(d.mbps)} vs ${f0(b.mbps)} Mbit/s (${((d.mbps / b.mbps - 1) * 100).toFixed(1)}%)` : '—', t(d && b ? d.mbps >= 0.95 * b.mbps : undefined)],
        ['RTT p50 within 5% of roster 1 (pooled likewise)', d && b ? `${f3(d.rttP50)} vs ${f3(b.rttP50)} ms (${((d.rttP50 / b.rttP50 - 1) * 100).toFixed(1)}%)` : '—', t(d && b ? d.rttP50 <= 1.05 * b.rttP50 : undefined)],
        ['all connected in ≤ 60 s', big.storm ? `${f1(big.storm.seconds)} s` : '—', t(big.storm ? big.storm.seconds <= 60 : undefined)],
        ['node RSS ≤ 300 MB', big.rssWelcomed ? `${f0(mb(big.rssWelcomed.rss))} MB (peak ${f0(mb(big.rssWelcomed.hwm))} MB)` : '—', t(big.rssWelcomed ? mb(big.rssWelcomed.rss) <= 300 : undefined)],
        ['a revocation applied in ≤ 1 s', big.revocation ? `refused ${f0(big.revocation.crlToRefusedMs)} ms, closed ${f0(big.revocation.crlToClosedMs)} ms, out of the ipset ${f0(big.revocation.crlToIpsetMs)} ms` : '—',
          t(big.revocation ? Math.max(big.revocation.crlToRefusedMs ?? Infinity, big.revocation.crlToIpsetMs) <= 1000 : undefined)],
        ['a reload applied in ≤ 1 s', big.reload ? `node ${f0(big.reload.applyMs)} ms; CLI ${f0(big.reload.cliMs)} ms (start-up ${f0(big.reload.cliStartupMs)} ms)` : '—', t(big.reload ? big.reload.applyMs <= 1000 : undefined)],
        ['`agent status` ≤ 1 s', big.status ? `CLI ${f0(big.status.cliMs)} ms (socket ${f0(big.status.socketMs)} ms)` : '—', t(big.status ? big.status.cliMs <= 1000 : undefined)],
      ]),
    )
  }
  for (const r of results) for (const e of r.errors) out.push(`- roster ${r.roster}: ${e}`)
  for (const r of results.filter((r) => r.othersBusyPercent > 10)) out.push(`- roster ${r.roster}: the machine was ${r.othersBusyPercent.toFixed(0)}% busy with other work when it started`)
  return out.join('\n')
}

function profileReport(r) {
  const p = r.profile
  const out = ['', `Profile of the ${r.roster}-client connect storm (${p.dir}):`]
  for (const who of ['node', 'simulator']) {
    const file = join(p.dir, p[who])
    let c
    try {
      c = summarizeCpuProfile(file, p.storm[0], p.storm[1])
    } catch (e) {
      out.push('', `${who}: no profile (${e.message})`)
      continue
    }
    const pc = (ms) => `${((ms / c.busyMs) * 100).toFixed(1)}%`
    out.push(
      '',
      `${who} (${file}): ${(c.totalMs / 1000).toFixed(1)} s of samples in the storm, ${(c.busyMs / 1000).toFixed(1)} s not idle. Top self time:`,
      '',
      table(['self', 'function'], c.self.slice(0, 25).map(([k, ms]) => [pc(ms), `\`${k}\``])),
      '',
      'By file (self time):',
      '',
      table(['self', 'file'], c.byFile.slice(0, 15).map(([k, ms]) => [pc(ms), `\`${k}\``])),
      '',
      "Inclusive time, the repository's own functions:",
      '',
      table(['inclusive', 'function'], c.inclusive.filter(([k]) => / (dist|bench)\//.test(k)).slice(0, 25).map(([k, ms]) => [pc(ms), `\`${k}\``])),
    )
  }
  if (p.heapSnapshot) {
    const h = summarizeHeapSnapshot(join(p.dir, p.heapSnapshot))
    out.push(
      '',
      `Node heap snapshot once all ${r.roster} were welcomed (${p.heapSnapshot}): ${(h.totalBytes / 2 ** 20).toFixed(1)} MiB of JS heap in ${h.nodes} objects; RSS then ${f1(r.rssWelcomed.rss)} MiB (anonymous ${f1(r.rssWelcomed.anon)}; brk heap ${f1(r.smapsWelcomed.brkHeap)}, other anonymous ${f1(r.smapsWelcomed.otherAnon)})` +
        (r.gc ? `; V8 heap (--trace-gc) after its last GC ${r.gc.lastUsed} MB used of ${r.gc.lastCommitted} MB committed, at most ${r.gc.maxCommitted} MB committed during the storm; ${r.gc.scavenges} scavenges and ${r.gc.markCompacts} mark-compacts, ${(r.gc.pauseMs / 1000).toFixed(1)} s of GC pauses.` : '.'),
      '',
      table(['MiB', 'count', 'type: constructor'], h.byName.slice(0, 25).map(([k, b, n]) => [(b / 2 ** 20).toFixed(2), n, `\`${k}\``])),
    )
  }
  return out.join('\n')
}

raiseFdLimit()
const m = machine()
const stale = await cleanupStale('scale')
if (stale.namespaces.length) log(`removed leftovers of earlier runs: ${stale.namespaces.join(', ')}`)
if (cfg.profile !== undefined) mkdirSync(cfg.profile, {recursive: true})
const started = Date.now()
const maxRoster = Math.max(...cfg.rosters)
log(`rosters ${cfg.rosters.join(', ')}; descriptor limit ${limitOf(process.pid)}; certificates from ${cfg.cache}`)
const pki = await scalePki(cfg.cache, maxRoster, log)
const dataDir = mkdtempSync(join(tmpdir(), 'bench-scale-data-'))
const results = []
try {
  const r = await agentCli(['plugins', 'install', 'tls'], {...process.env, AGENT_DATA_DIR: dataDir})
  if (r.code !== 0) throw new Error(`agent plugins install tls failed: ${r.stderr}`)
  for (const n of cfg.rosters) results.push(await measureRoster(n, pki.dir, dataDir))
  // The baseline once more, last: see report().
  if (cfg.profile === undefined && cfg.rosters.length > 1) results.push({...(await measureRoster(1, pki.dir, dataDir)), label: '1, again'})
} finally {
  rmSync(dataDir, {recursive: true, force: true})
}
const meta = {totalSeconds: (Date.now() - started) / 1000, pkiBuiltSeconds: pki.seconds}
let text = report(results, m, meta)
if (cfg.profile !== undefined && results[0]?.profile) text += '\n' + profileReport(results[0])
console.log('\n' + text)
if (cfg.json) writeFileSync(cfg.json, JSON.stringify({machine: m, config: cfg, meta, results}, null, 2))
process.exitCode = results.some((r) => r.errors.length > 0) ? 1 : 0
