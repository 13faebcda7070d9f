#!/usr/bin/env node
// Node memory with many idle authorized clients (issue #6: <= 150 MB RSS with 1,000).
//
//   node bench/idle.mjs [--clients 1000] [--idle 20] [--json out.json]
// Environment equivalents: BENCH_IDLE_CLIENTS, BENCH_IDLE_SECONDS, BENCH_JSON (suffixed -idle).
//
// On a fresh namespace testbed: a fleet CA with the node's and N clients' certificates (issued
// in-process, the same code as `agent pki issue`), a node config authorizing all N on the tls
// transport, the real `agent up` in the node namespace, and N simulated clients
// (bench/idle/simulate.mjs) in the client namespace, each holding its own mutual-TLS control
// connection and keepalives like an idle agent client. Measured: the node process's RSS before
// any client, once all are welcomed, and after they idled `--idle` seconds (keepalives running),
// plus its peak (VmHWM); and that `agent status` lists all N as peers.
//
// Why tls: its sessions hold the most per client at the node (a TLS socket with its buffers,
// the control connection, the session, a peer, a FORWARD rule); datagram transports add a
// keepalive state and drop nothing of that.
import {mkdirSync, readFileSync, writeFileSync} from 'node:fs'
import {join} from 'node:path'
import {parseArgs} from 'node:util'
import {initCa, issue} from '../dist/core/pki/certs.js'
import {createTestbed, NODE_PORT, prepareFleet, waitForOutput} from '../dist/testbed/index.js'

const {values: flags} = parseArgs({options: {clients: {type: 'string'}, idle: {type: 'string'}, json: {type: 'string'}}})
const clients = Number(flags.clients ?? process.env.BENCH_IDLE_CLIENTS ?? 1000)
const idleSeconds = Number(flags.idle ?? process.env.BENCH_IDLE_SECONDS ?? 20)
const jsonOut = flags.json ?? (process.env.BENCH_JSON ? process.env.BENCH_JSON.replace(/(\.json)?$/, '-idle.json') : undefined)
if (!Number.isInteger(clients) || clients < 1 || clients > 4000) throw new Error(`--clients must be 1 to 4000, got ${clients}`)
const log = (m) => console.error(`[bench:idle] ${m}`)

/** VmRSS and VmHWM of a process, in MiB. */
function memory(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const kb = (key) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN)
  return {rss: kb('VmRSS') / 1024, hwm: kb('VmHWM') / 1024}
}

const tb = await createTestbed({prefix: 'idle', clients: 1})
let sim
let node
try {
  const fleet = await prepareFleet(tb, {transport: 'tls', keepalive: 10})
  const pki = join(tb.dir, 'idle-pki')
  mkdirSync(pki)
  const t0 = Date.now()
  await initCa({dir: pki})
  await issue({dir: pki, name: 'node1', node: true})
  const names = Array.from({length: clients}, (_, i) => `c${String(i).padStart(4, '0')}`)
  for (const name of names) await issue({dir: pki, name, node: false})
  log(`issued ${clients} client certificates in ${((Date.now() - t0) / 1000).toFixed(1)} s`)

  // A /21 holds 2,046 client addresses.
  const config = join(tb.dir, 'configs', 'node-idle.yaml')
  writeFileSync(
    config,
    `role: node
name: node1
transport: tls
listen: {address: 0.0.0.0, port: ${NODE_PORT}}
tunnel: {interface: agtun0, subnet: 10.96.0.0/21}
egress: {interface: ${tb.ifaces.nodeEgress}}
pki: {bundle: ${pki}/node1.pem}
clients:
${names.map((n) => `  - name: ${n}`).join('\n')}
transports:
  tls: {keepalive: 10}
`,
  )
  // BENCH_IDLE_NODE_OPTIONS: V8 flags for the node agent only, to see what moves its memory.
  const nodeOptions = process.env.BENCH_IDLE_NODE_OPTIONS
  node = await fleet.startNode({config, env: nodeOptions ? {NODE_OPTIONS: nodeOptions} : {}})
  const before = memory(node.pid)
  log(`node pid ${node.pid} up: RSS ${before.rss.toFixed(1)} MiB with no client`)

  const t1 = Date.now()
  sim = tb.spawn(tb.names.client[0], process.execPath, [join(import.meta.dirname, 'idle', 'simulate.mjs'), pki, String(clients), tb.addr.nodeWan, String(NODE_PORT)], {
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let simErr = ''
  sim.stderr.on('data', (d) => (simErr += d))
  await waitForOutput(sim, new RegExp(`connected ${clients}\\b`), 300_000).catch((e) => {
    throw new Error(`simulated clients did not all connect: ${e.message}\n${simErr}`)
  })
  const connectSeconds = (Date.now() - t1) / 1000
  const connected = memory(node.pid)
  log(`${clients} clients welcomed in ${connectSeconds.toFixed(1)} s: RSS ${connected.rss.toFixed(1)} MiB`)

  await new Promise((r) => setTimeout(r, idleSeconds * 1000))
  const idle = memory(node.pid)
  const status = await fleet.cli(tb.names.node, ['status', '--json'])
  const peers = JSON.parse(status.stdout)[0].peers.length
  if (peers !== clients) throw new Error(`agent status lists ${peers} peers, expected ${clients}`)
  if (sim.exitCode !== null) throw new Error(`the simulated clients exited early: ${simErr}`)
  log(`after ${idleSeconds} s idle: RSS ${idle.rss.toFixed(1)} MiB, peak ${idle.hwm.toFixed(1)} MiB, ${peers} peers in status`)

  const result = {
    clients,
    transport: 'tls',
    idleSeconds,
    connectSeconds: Math.round(connectSeconds * 10) / 10,
    rssNoClientsMiB: round(before.rss),
    rssConnectedMiB: round(connected.rss),
    rssIdleMiB: round(idle.rss),
    peakMiB: round(idle.hwm),
    perClientKiB: Math.round(((idle.rss - before.rss) * 1024) / clients),
    peersInStatus: peers,
  }
  console.log(
    `\n| idle clients | transport | node RSS, none (MiB) | all welcomed (MiB) | after ${idleSeconds} s idle (MiB) | peak (MiB) | per client (KiB) |\n` +
      `| --- | --- | --- | --- | --- | --- | --- |\n` +
      `| ${clients} | tls | ${result.rssNoClientsMiB} | ${result.rssConnectedMiB} | ${result.rssIdleMiB} | ${result.peakMiB} | ${result.perClientKiB} |`,
  )
  if (jsonOut) writeFileSync(jsonOut, JSON.stringify(result, null, 2))
} finally {
  if (sim) await tb.stop(sim)
  if (node) await tb.stop(node.child)
  await tb.destroy()
}

function round(x) {
  return Math.round(x * 10) / 10
}
