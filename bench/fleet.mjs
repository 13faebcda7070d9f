#!/usr/bin/env node
// A fleet on one etcd roster (docs/fleet.md): how fast a revocation reaches every node and
// watcher, and what a roster of 100,000 costs a node at start.
//
//   node bench/fleet.mjs [--revocations 100] [--watchers 50] [--roster 100000] [--json out.json] [--logs DIR]
// Environment equivalents: BENCH_FLEET_REVOCATIONS, BENCH_FLEET_WATCHERS, BENCH_FLEET_ROSTER,
// BENCH_JSON (suffixed -fleet), BENCH_LOGS. --roster 0 skips part 2.
//
// The setup is test/integration/fleet.test.ts's: a testbed with three nodes and a ctl
// namespace, a 3-member etcd there with client-certificate auth and users (startEtcd,
// enableAuth), the fleet set up with the real `agent fleet init`, `fleet node add node1..3` and
// `fleet operator add ops`, and each node's config with a `fleet:` section (its own etcd user).
//
// 1. Revocation propagation. The three real nodes (`agent up`, tls, tunnel subnet /21), each with
//    a real `agent up` client (alice, listed in the node's file: a bystander that must stay).
//    N victims (v000, v001...: certificates issued in-process into the fleet's CA, the code of
//    `agent pki issue`) are authorized in the fleet (the admin API behind `agent fleet client
//    add`) and each connected to all three nodes by simulated clients (bench/idle/simulate.mjs:
//    the real control channel, one mutual-TLS connection per client per node), and 50 watchers
//    (bench/fleet/watchers.mjs: one etcd connection and watch of the fleet prefix each, spread
//    over the members) follow the fleet. Then the victims are revoked one at a time with the
//    admin API behind `agent fleet revoke` (bench/fleet/driver.mjs), each once the previous one
//    has reached everybody. From the revocation's put returning to:
//      (a) each watcher seeing it (its clock when the watch event arrived)
//      (b) each node cutting the client (the timestamp of its log line "client vNNN (addr)
//          disconnected: client "vNNN" is revoked in the fleet")
//      (c) the simulated client being told it is refused, and its connection closing, on each
//          node (the client's clock)
//    After the last one, every victim's address is out of each node's admitted set (ipset) and
//    alice is still admitted and connected. All processes share one 2-core VM with etcd.
// 2. A roster of R (default 100,000) clients in etcd: the nodes stopped, the roster is cleared,
//    R entries (a pinned fingerprint each, no address) put in transactions of 128, 4 in flight;
//    then node1 is started with its fleet config: time from spawn to its "node node1 up" line
//    and to `agent status --json` showing fleet.clients R, and its VmRSS and VmHWM once up and
//    again 10 s later (the registry heartbeats: each one is a watch event for the node).
//
// Targets (the issue): (1) p99 under 1 s, aim 100 ms; (2) up within 10 s, RSS at most 300 MB.
import {mkdirSync, readFileSync, writeFileSync} from 'node:fs'
import {join} from 'node:path'
import {parseArgs} from 'node:util'
import {issue} from '../dist/core/pki/certs.js'
import {admittedAddresses, BIN, cleanupStale, createFleet, NODE_PORT, ROOT, waitForOutput} from '../dist/testbed/index.js'
import {startEtcd} from '../dist/testbed/etcd.js'
import {percentile} from './lib/stats.mjs'

const {values: flags} = parseArgs({
  options: {revocations: {type: 'string'}, watchers: {type: 'string'}, roster: {type: 'string'}, json: {type: 'string'}, logs: {type: 'string'}},
})
const env = process.env
const cfg = {
  revocations: Number(flags.revocations ?? env.BENCH_FLEET_REVOCATIONS ?? 100),
  watchers: Number(flags.watchers ?? env.BENCH_FLEET_WATCHERS ?? 50),
  roster: Number(flags.roster ?? env.BENCH_FLEET_ROSTER ?? 100_000),
  json: flags.json ?? (env.BENCH_JSON ? env.BENCH_JSON.replace(/(\.json)?$/, '-fleet.json') : undefined),
  logs: flags.logs ?? env.BENCH_LOGS,
}
if (!Number.isInteger(cfg.revocations) || cfg.revocations < 1 || cfg.revocations > 1000) throw new Error(`--revocations must be 1 to 1000, got ${cfg.revocations}`)
if (!Number.isInteger(cfg.watchers) || cfg.watchers < 1 || cfg.watchers > 200) throw new Error(`--watchers must be 1 to 200, got ${cfg.watchers}`)
if (!Number.isInteger(cfg.roster) || cfg.roster < 0 || cfg.roster > 1_000_000) throw new Error(`--roster must be 0 to 1000000, got ${cfg.roster}`)
const log = (m) => console.error(`[bench:fleet] ${m}`)
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
const now = () => performance.timeOrigin + performance.now()

const PREFIX = '/agent/bench'
const SUBNET = '10.99.0.0/21'
/** How long one revocation may take to reach everybody before the bench gives up on it. */
const REACH_TIMEOUT_MS = 5_000
/** Pause between one revocation reaching everybody and the next. */
const GAP_MS = 50
const BATCH = 128
const IN_FLIGHT = 4
const pad = 3
const victim = (i) => `v${String(i).padStart(pad, '0')}`

/** VmRSS and VmHWM of a process, in MiB. */
function memory(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const kb = (key) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN)
  return {rss: kb('VmRSS') / 1024, hwm: kb('VmHWM') / 1024}
}

/** Calls `onLine` for every complete line a stream gives. */
function lines(stream, onLine) {
  let buf = ''
  stream.on('data', (b) => {
    buf += b
    let i
    while ((i = buf.indexOf('\n')) >= 0) {
      onLine(buf.slice(0, i))
      buf = buf.slice(i + 1)
    }
  })
}

/** A child speaking one JSON line per command (bench/fleet/driver.mjs). */
function rpc(child) {
  const waiting = []
  lines(child.stdout, (l) => waiting.shift()?.(JSON.parse(l)))
  return (cmd) =>
    new Promise((resolve, reject) => {
      waiting.push((r) => (r.ok ? resolve(r) : reject(new Error(`driver ${cmd.op}: ${r.error}`))))
      child.stdin.write(JSON.stringify(cmd) + '\n')
    })
}

const stats = (xs) => ({n: xs.length, p50: percentile(xs, 50), p99: percentile(xs, 99), max: xs.length ? Math.max(...xs) : NaN, min: xs.length ? Math.min(...xs) : NaN})

const stale = await cleanupStale('fbn')
if (stale.namespaces.length) log(`removed leftovers of earlier runs: ${stale.namespaces.join(', ')}`)
const started = Date.now()
const result = {config: cfg, errors: []}
const fleet = await createFleet({prefix: 'fbn', nodes: 3, ctl: true, clients: 3, transport: 'tls'})
const {tb} = fleet
const children = []
const nodes = []
let etcd
try {
  etcd = await startEtcd(tb, {members: 3})
  await etcd.enableAuth()
  const access = async (user) => {
    const c = await etcd.clientCert(user)
    const file = join(etcd.dir, `fleet-${user}.yaml`)
    writeFileSync(file, `endpoints: [${etcd.endpoints.join(', ')}]\nca: ${c.ca}\ncert: ${c.cert}\nkey: ${c.key}\nprefix: ${PREFIX}\n`)
    return file
  }
  const fleetCli = async (config, args) => {
    const r = await tb.exec(tb.names.ctl, process.execPath, [BIN, 'fleet', ...args, '--config', config], {timeoutMs: 30_000})
    if (r.code !== 0) throw new Error(`agent fleet ${args.join(' ')}: ${r.stderr}${r.stdout}`)
    return r.stdout
  }
  const root = await access('root')
  await fleetCli(root, ['init'])
  // The watchers read as a node does: a node user of their own.
  for (const n of ['node1', 'node2', 'node3', 'watchers']) await fleetCli(root, ['node', 'add', n])
  await fleetCli(root, ['operator', 'add', 'ops'])

  const fleetConfig = async (k) => {
    const creds = await etcd.clientCert(`node${k}`)
    const base = readFileSync(fleet.nodeConfigs[k - 1], 'utf8').replace('subnet: 10.99.0.0/24', `subnet: ${SUBNET}`)
    const file = fleet.nodeConfigs[k - 1].replace(/\.yaml$/, '-fleet.yaml')
    writeFileSync(file, `${base}fleet:\n  endpoints: [${etcd.endpoints.join(', ')}]\n  ca: ${creds.ca}\n  cert: ${creds.cert}\n  key: ${creds.key}\n  prefix: ${PREFIX}\n  advertise: ${tb.addr.nodesWan[k - 1]}\n`)
    return file
  }
  const configs = []
  for (let k = 1; k <= 3; k++) configs.push(await fleetConfig(k))

  // The victims' certificates, in the fleet's CA (fleet.pki), as `agent pki issue` makes them.
  const names = Array.from({length: cfg.revocations}, (_, i) => victim(i))
  let t = Date.now()
  let nextIssue = 0
  await Promise.all(Array.from({length: 8}, async () => {
    while (nextIssue < names.length) await issue({dir: fleet.pki, name: names[nextIssue++], node: false})
  }))
  log(`issued ${names.length} client certificates in ${((Date.now() - t) / 1000).toFixed(1)} s`)

  const scriptEnv = {cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe']}
  const ops = await etcd.clientCert('ops')
  const driverProc = tb.spawn(tb.names.ctl, process.execPath, [join(ROOT, 'bench/fleet/driver.mjs'), JSON.stringify({etcd: {endpoints: etcd.endpoints, ...ops}, prefix: PREFIX})], scriptEnv)
  children.push(driverProc)
  let driverErr = ''
  driverProc.stderr.on('data', (b) => (driverErr += b))
  const driver = rpc(driverProc)
  await driver({op: 'add', names})

  // ---- Part 1: revocation propagation ----
  for (let k = 1; k <= 3; k++) nodes.push(await fleet.startNode({node: k, config: configs[k - 1]}))
  const cuts = nodes.map(() => new Map()) // name -> epoch ms of the node's log line
  for (const [i, n] of nodes.entries()) {
    const onLine = (l) => {
      const m = /^(\S+) info {2}node\d: client (\S+) \(\S+\) disconnected: client "\S+" is revoked in the fleet/.exec(l)
      if (m) cuts[i].set(m[2], Date.parse(m[1]))
    }
    lines(n.child.stdout, onLine)
    lines(n.child.stderr, onLine)
  }
  const alices = []
  for (let k = 1; k <= 3; k++) alices.push(await fleet.startClient('alice', k - 1, {node: k}))

  const watchersCreds = await etcd.clientCert('watchers')
  const watchersProc = tb.spawn(tb.names.ctl, process.execPath, [join(ROOT, 'bench/fleet/watchers.mjs'), JSON.stringify({etcd: {endpoints: etcd.endpoints, ...watchersCreds}, prefix: PREFIX, count: cfg.watchers})], scriptEnv)
  children.push(watchersProc)
  const seen = new Map() // name -> [epoch ms per watcher seen]
  let watchersErr = ''
  watchersProc.stderr.on('data', (b) => (watchersErr += b))
  lines(watchersProc.stdout, (l) => {
    const m = /^seen (\d+) (\S+) (\S+)$/.exec(l)
    if (m) (seen.get(m[2]) ?? seen.set(m[2], []).get(m[2])).push(Number(m[3]))
  })
  await waitForOutput(watchersProc, /ready \d+/, 60_000).catch((e) => {
    throw new Error(`watchers not ready: ${e.message}\n${watchersErr}`)
  })

  // name -> epoch ms the simulated client was told it is refused, and saw its connection close
  const refused = nodes.map(() => new Map())
  const closed = nodes.map(() => new Map())
  const sims = []
  for (let k = 1; k <= 3; k++) {
    const sim = tb.spawn(
      tb.names.client[k - 1],
      process.execPath,
      [join(ROOT, 'bench/idle/simulate.mjs'), fleet.pki, String(names.length), tb.addr.nodesWan[k - 1], String(NODE_PORT), '--prefix', 'v', '--pad', String(pad), '--report-close', '--node-name', `node${k}`, '--concurrency', '16'],
      {stdio: ['ignore', 'pipe', 'pipe']},
    )
    children.push(sim)
    sims.push(sim)
    let err = ''
    sim.stderr.on('data', (b) => (err += b))
    lines(sim.stdout, (l) => {
      const m = /^(refused|closed) (\S+) (\d+)/.exec(l)
      const into = m?.[1] === 'refused' ? refused : closed
      if (m && !into[k - 1].has(m[2])) into[k - 1].set(m[2], Number(m[3]))
    })
    await waitForOutput(sim, new RegExp(`connected ${names.length}\\b`), 120_000).catch((e) => {
      throw new Error(`simulated clients on node${k} did not all connect: ${e.message}\n${err}`)
    })
  }
  const status = async (k) => {
    const r = await fleet.cli(tb.names.nodes[k - 1], ['status', '--json'])
    if (r.code !== 0) throw new Error(`agent status on node${k}: ${r.stderr}`)
    return JSON.parse(r.stdout)[0]
  }
  const victimAddress = []
  for (let k = 1; k <= 3; k++) {
    const peers = (await status(k)).peers
    const at = new Map(peers.map((p) => [p.name, p.address]))
    const missing = names.filter((n) => !at.has(n))
    if (missing.length) throw new Error(`node${k} does not list ${missing.length} victims as peers (${missing.slice(0, 3).join(', ')}...)`)
    victimAddress.push(at)
  }
  result.nodesBefore = nodes.map((n) => memory(n.pid))
  log(`${names.length} victims connected to each of 3 nodes, alice on each, ${cfg.watchers} watchers; revoking one at a time`)

  const rev = []
  const t1 = Date.now()
  for (const name of names) {
    const r = await driver({op: 'revoke', name})
    const deadline = Date.now() + REACH_TIMEOUT_MS
    const reached = () => (seen.get(name)?.length ?? 0) >= cfg.watchers && cuts.every((c) => c.has(name)) && refused.every((c) => c.has(name))
    while (!reached() && Date.now() < deadline) await sleep(5)
    rev.push({
      name,
      putMs: r.t1 - r.t0,
      watchers: (seen.get(name) ?? []).map((x) => x - r.t1),
      nodes: cuts.map((c) => (c.has(name) ? c.get(name) - r.t1 : null)),
      t1: r.t1,
      refused: refused.map((c) => (c.has(name) ? c.get(name) - r.t1 : null)),
    })
    if (!reached()) result.errors.push(`${name}: not seen by all within ${REACH_TIMEOUT_MS} ms (watchers ${seen.get(name)?.length ?? 0}/${cfg.watchers}, nodes ${cuts.filter((c) => c.has(name)).length}/3, clients told ${refused.filter((c) => c.has(name)).length}/3)`)
    await sleep(GAP_MS)
  }
  const revSeconds = (Date.now() - t1) / 1000
  // The closes come the node's linger (500 ms) after the refusal: read them once all are in.
  await sleep(1_000)
  for (const r of rev) r.clients = closed.map((c) => (c.has(r.name) ? c.get(r.name) - r.t1 : null))
  // Admission: no victim's address left in any node's set; alice's still there, and connected.
  const admission = []
  for (let k = 1; k <= 3; k++) {
    const admitted = new Set(await admittedAddresses(tb, tb.names.nodes[k - 1]))
    const left = names.filter((n) => admitted.has(victimAddress[k - 1].get(n)))
    const st = await status(k)
    const alice = st.peers.find((p) => p.name === 'alice')
    admission.push({node: `node${k}`, victimsStillAdmitted: left.length, aliceAdmitted: alice !== undefined && admitted.has(alice.address), peers: st.peers.map((p) => p.name)})
    if (left.length) result.errors.push(`node${k}: ${left.length} revoked victims still in the admitted set (${left.slice(0, 3).join(', ')})`)
    if (!(alice !== undefined && admitted.has(alice.address))) result.errors.push(`node${k}: alice (a bystander) is no longer admitted`)
    if (st.peers.some((p) => names.includes(p.name))) result.errors.push(`node${k}: a revoked victim is still a peer`)
  }
  for (const [i, a] of alices.entries()) if (a.child.exitCode !== null) result.errors.push(`alice on node${i + 1} exited`)
  const allWatchers = rev.flatMap((r) => r.watchers)
  const perNode = [0, 1, 2].map((k) => rev.map((r) => r.nodes[k]).filter((x) => x !== null))
  const perClient = [0, 1, 2].map((k) => rev.map((r) => r.clients[k]).filter((x) => x !== null))
  const perRefused = [0, 1, 2].map((k) => rev.map((r) => r.refused[k]).filter((x) => x !== null))
  result.revocation = {
    count: names.length,
    seconds: revSeconds,
    put: stats(rev.map((r) => r.putMs)),
    watchers: stats(allWatchers),
    lastWatcher: stats(rev.map((r) => Math.max(...r.watchers))),
    nodes: stats(perNode.flat()),
    perNode: perNode.map(stats),
    lastNode: stats(rev.filter((r) => r.nodes.every((x) => x !== null)).map((r) => Math.max(...r.nodes))),
    clientsRefused: stats(perRefused.flat()),
    clientsClosed: stats(perClient.flat()),
    admission: admission.map(({peers, ...a}) => a),
    nodesAfter: nodes.map((n) => memory(n.pid)),
    raw: rev,
  }
  log(`revocations: watchers p50 ${result.revocation.watchers.p50.toFixed(1)} p99 ${result.revocation.watchers.p99.toFixed(1)} ms; nodes p50 ${result.revocation.nodes.p50.toFixed(1)} p99 ${result.revocation.nodes.p99.toFixed(1)} ms`)

  // ---- Part 2: a roster of R in etcd, one node starting on it ----
  for (const s of sims) await tb.stop(s, 5_000).catch(() => {})
  await tb.stop(watchersProc, 5_000).catch(() => {})
  for (const a of alices) await tb.stop(a.child, 10_000).catch(() => {})
  for (const n of nodes) await tb.stop(n.child, 15_000).catch(() => {})
  if (cfg.roster > 0) {
    await driver({op: 'clear'})
    const b = await driver({op: 'bulk', count: cfg.roster, batch: BATCH, inFlight: IN_FLIGHT, pad: String(cfg.roster - 1).length})
    const counts = await driver({op: 'count'})
    if (counts.clients !== cfg.roster) throw new Error(`the fleet holds ${counts.clients} clients after the bulk put, expected ${cfg.roster}`)
    log(`put ${cfg.roster} clients in ${(b.ms / 1000).toFixed(1)} s`)
    const dbSize = (await etcd.etcdctl(['endpoint', 'status', '-w', 'json'], {endpoints: [etcd.endpoints[0]]})).stdout
    const spawned = Date.now()
    let node
    const r = {roster: cfg.roster, putSeconds: b.ms / 1000, etcdDbBytes: JSON.parse(dbSize)[0]?.Status?.dbSize}
    try {
      node = await fleet.startNode({node: 1, config: configs[0]})
      nodes.push(node)
      const upLine = /^(\S+) \S+ +node1: node node1 up/m.exec(node.output)
      r.upMs = Date.parse(upLine[1]) - spawned
      r.memUp = memory(node.pid)
      // A node that cannot list the fleet still comes up (fleet.unreachable: start) on its file's roster.
      r.unreachableAtStart = /fleet: etcd unreachable at start \(([^\n]*)\)/.exec(node.output)?.[1]
      try {
        for (;;) {
          const st = await status(1)
          if (st.fleet?.clients === cfg.roster) break
          if (Date.now() - spawned > 60_000) throw new Error(`node1's status shows fleet.clients ${st.fleet?.clients} after 60 s, expected ${cfg.roster}${r.unreachableAtStart ? `; at start: ${r.unreachableAtStart}` : ''}`)
          await sleep(100)
        }
        r.statusMs = Date.now() - spawned
      } finally {
        r.memStatus = memory(node.pid)
        await sleep(10_000)
        r.memLater = memory(node.pid)
        r.cpuSecondsTotal = cpuSeconds(node.pid)
      }
    } catch (e) {
      result.errors.push(`roster ${cfg.roster}: ${e.message.slice(0, 2000)}`)
    }
    result.roster = r
  }
  if (cfg.logs) {
    mkdirSync(cfg.logs, {recursive: true})
    for (const [i, n] of nodes.entries()) writeFileSync(join(cfg.logs, `fleet-node-${i + 1}.log`), n.output)
    writeFileSync(join(cfg.logs, 'fleet-driver.log'), driverErr)
  }
} catch (e) {
  result.errors.push(e.message.slice(0, 4000))
  for (const [i, n] of nodes.entries()) log(`node ${i + 1} output tail:\n${n.output.split('\n').slice(-20).join('\n')}`)
} finally {
  for (const c of children) await tb.stop(c, 5_000).catch(() => {})
  for (const n of nodes) await tb.stop(n.child, 15_000).catch(() => {})
  await tb.destroy().catch((e) => log(`teardown: ${e.message}`))
}
result.totalSeconds = (Date.now() - started) / 1000

/** utime + stime of a process, in seconds. */
function cpuSeconds(pid) {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')
  return (Number(f[11]) + Number(f[12])) / 100
}

const f0 = (x) => (x === null || x === undefined || Number.isNaN(x) ? '—' : x.toFixed(0))
const f1 = (x) => (x === null || x === undefined || Number.isNaN(x) ? '—' : x.toFixed(1))
const table = (head, rows) => [head, head.map(() => '---'), ...rows].map((c) => `| ${c.join(' | ')} |`).join('\n')
const mb = (mib) => mib * 1.048576
const out = []
const rv = result.revocation
if (rv) {
  out.push(
    `${rv.count} revocations (\`agent fleet revoke\`'s admin API), one at a time, of clients connected to each of 3 nodes (simulated, one mutual-TLS control connection per node); ` +
      `${cfg.watchers} watchers of the fleet prefix (one etcd connection each); 3-member etcd; all on one ${readFileSync('/proc/cpuinfo', 'utf8').match(/^processor/gm).length}-CPU VM. ` +
      `Times from the revocation's put returning (the operator's view); negative: seen before the put's response reached the operator. ${rv.seconds.toFixed(0)} s for all.`,
    '',
    table(
      ['from the put returning to', 'samples', 'p50 (ms)', 'p99 (ms)', 'max (ms)', 'min (ms)'],
      [
        ['(a) a watcher sees it (each watcher)', rv.watchers.n, f1(rv.watchers.p50), f1(rv.watchers.p99), f1(rv.watchers.max), f1(rv.watchers.min)],
        [`(a) the last of ${cfg.watchers} watchers sees it`, rv.lastWatcher.n, f1(rv.lastWatcher.p50), f1(rv.lastWatcher.p99), f1(rv.lastWatcher.max), f1(rv.lastWatcher.min)],
        ['(b) a node cuts the client (its log line, each node)', rv.nodes.n, f1(rv.nodes.p50), f1(rv.nodes.p99), f1(rv.nodes.max), f1(rv.nodes.min)],
        ...rv.perNode.map((s, i) => [`(b) node${i + 1}`, s.n, f1(s.p50), f1(s.p99), f1(s.max), f1(s.min)]),
        ['(b) the last of 3 nodes cuts it', rv.lastNode.n, f1(rv.lastNode.p50), f1(rv.lastNode.p99), f1(rv.lastNode.max), f1(rv.lastNode.min)],
        ['(c) the client is told it is refused (its clock, each node)', rv.clientsRefused.n, f1(rv.clientsRefused.p50), f1(rv.clientsRefused.p99), f1(rv.clientsRefused.max), f1(rv.clientsRefused.min)],
        ["(c) its connection closes (the node's 500 ms linger: the simulator does not close it itself, an agent does)", rv.clientsClosed.n, f1(rv.clientsClosed.p50), f1(rv.clientsClosed.p99), f1(rv.clientsClosed.max), f1(rv.clientsClosed.min)],
        ['the put itself (sent to response)', rv.put.n, f1(rv.put.p50), f1(rv.put.p99), f1(rv.put.max), f1(rv.put.min)],
      ],
    ),
    '',
    `After the last: revoked clients' addresses still in a node's admitted set: ${rv.admission.map((a) => `${a.node} ${a.victimsStillAdmitted}`).join(', ')}; ` +
      `alice (a bystander, real client) still admitted: ${rv.admission.map((a) => `${a.node} ${a.aliceAdmitted ? 'yes' : '**no**'}`).join(', ')}. ` +
      `Node RSS with ${rv.count} + 1 clients: ${result.nodesBefore.map((m) => f0(m.rss)).join(', ')} MiB.`,
  )
}
const ro = result.roster
if (ro) {
  out.push(
    '',
    `A roster of ${ro.roster.toLocaleString('en')} clients in etcd (a pinned fingerprint each; put in ${f1(ro.putSeconds)} s, ${BATCH} puts per transaction, ${IN_FLIGHT} in flight; etcd db ${ro.etcdDbBytes ? f0(ro.etcdDbBytes / 2 ** 20) + ' MiB' : '—'}), node1 started on it:`,
    '',
    table(
      ['measure', 'figure', 'target', 'met'],
      [
        ['spawn to "node node1 up" (the fleet listed first, unless etcd fails: then it serves its file)', ro.upMs === undefined ? '—' : `${f1(ro.upMs / 1000)} s${ro.unreachableAtStart ? ` (**without the fleet**: ${ro.unreachableAtStart})` : ''}`, '≤ 10 s', ro.upMs !== undefined && !ro.unreachableAtStart && ro.upMs <= 10_000 ? 'yes' : '**no**'],
        [`spawn to \`agent status --json\` showing fleet.clients ${ro.roster}`, ro.statusMs === undefined ? '**never** (60 s)' : `${f1(ro.statusMs / 1000)} s`, '≤ 10 s', ro.statusMs !== undefined && ro.statusMs <= 10_000 ? 'yes' : '**no**'],
        ['VmRSS / VmHWM once status shows them', ro.memStatus ? `${f0(ro.memStatus.rss)} / ${f0(ro.memStatus.hwm)} MiB` : '—', '', ''],
        ['VmRSS once up / VmHWM', ro.memUp ? `${f0(ro.memUp.rss)} MiB (${f0(mb(ro.memUp.rss))} MB) / ${f0(ro.memUp.hwm)} MiB (${f0(mb(ro.memUp.hwm))} MB)` : '—', '≤ 300 MB', ro.memUp && ro.statusMs !== undefined ? (mb(Math.max(ro.memUp.rss, ro.memStatus?.rss ?? 0, ro.memLater?.rss ?? 0)) <= 300 ? 'yes' : '**no**') : '**no**'],
        ['VmRSS / VmHWM 10 s later (heartbeats: watch events)', ro.memLater ? `${f0(ro.memLater.rss)} / ${f0(ro.memLater.hwm)} MiB` : '—', '', ''],
        ["node's CPU since spawn, by then", ro.cpuSecondsTotal === undefined ? '—' : `${f1(ro.cpuSecondsTotal)} s`, '', ''],
      ],
    ),
  )
}
for (const e of result.errors) out.push(`- error: ${e}`)
out.push('', `Total ${result.totalSeconds.toFixed(0)} s.`)
console.log('\n' + out.join('\n'))
if (cfg.json) writeFileSync(cfg.json, JSON.stringify(result, null, 2))
process.exitCode = result.errors.length > 0 ? 1 : 0
