// Simulated idle clients for bench/idle.mjs and bench/scale.mjs, run inside a client namespace:
// each opens the real control channel (mutual TLS 1.3 with its own certificate, hello, welcome)
// with the core's own code, moving to native records after the welcome as an agent client does
// (unless AGENT_FAST_PATH=off), then only answers and sends keepalive pings, as an idle agent
// client does. No TUN: the node's cost per client is what is measured, not the client's.
//
//   node bench/idle/simulate.mjs <pkiDir> <count> <nodeHost> <nodePort>
//        [--prefix c] [--pad 4] [--start 0] [--concurrency 32] [--retries 0] [--report-close] [--progress 0]
//        [--node-name node1]
//
// Client i (start <= i < start + count) is <prefix><i padded to --pad digits>, with
// <pkiDir>/<name>.crt and .key. Certificates are read before the first connection.
// --concurrency: handshakes in flight at once (connect, TLS, hello, welcome). --retries: a
// client whose connection fails before its welcome tries again that many times, 1 s later,
// as a reconnecting agent would (default 0: the first failure ends the simulator).
// --node-name: the name the node's certificate must carry (bench/fleet.mjs connects to node2, node3).
//
// Output, stdout:
//   "starting <n>" once the certificates are read, as the first connection is opened
//   with --progress k: "welcomed <n> <ms>" at every k-th welcome, <ms> since the first connection attempt
//   "connected <n> <ms> p50=<ms> p99=<ms> max=<ms> retries=<r>" once every client was welcomed: <ms> from the
//     first connection attempt to the last welcome; p50/p99/max of each client's own connect-to-welcome time
//   with --report-close, per client whose welcomed connection later ends:
//     "refused <name> <epoch ms> <reason>"  the node told it it is refused (revoked, removed)
//     "closed <name> <epoch ms> <reason>"   the connection closed
// Then it stays until killed.
import {readFileSync} from 'node:fs'
import {join} from 'node:path'
import {connect} from 'node:tls'
import {parseArgs} from 'node:util'
import {ControlConnection} from '../../dist/core/control/connection.js'
import {PROTOCOL_VERSION} from '../../dist/core/control/messages.js'
import {RECORDS, recordsPossible} from '../../dist/core/control/native-records.js'
import {NATIVE_MAX_DATA} from '../../dist/core/carrier/native-stream.js'
import {tlsClientOptions} from '../../dist/core/pki/index.js'

const {values: flags, positionals} = parseArgs({
  allowPositionals: true,
  options: {
    prefix: {type: 'string', default: 'c'},
    pad: {type: 'string', default: '4'},
    start: {type: 'string', default: '0'},
    // A fleet reconnecting after a node restart, not a storm, for bench/idle.mjs.
    concurrency: {type: 'string', default: '32'},
    retries: {type: 'string', default: '0'},
    'report-close': {type: 'boolean', default: false},
    progress: {type: 'string', default: '0'},
    'node-name': {type: 'string', default: 'node1'},
  },
})
const [pkiDir, countText, host, portText] = positionals
const count = Number(countText)
const port = Number(portText)
const start = Number(flags.start)
const pad = Number(flags.pad)
const concurrency = Number(flags.concurrency)
const retries = Number(flags.retries)
const reportClose = flags['report-close']
const progress = Number(flags.progress)
for (const [k, v] of Object.entries({count, port, start, pad, concurrency, retries, progress})) {
  if (!Number.isInteger(v) || v < 0) throw new Error(`simulate: ${k} must be a whole number, got ${v}`)
}
const ca = readFileSync(join(pkiDir, 'ca.crt'))
const nameOf = (i) => `${flags.prefix}${String(i).padStart(pad, '0')}`

// Read before the clock starts: the storm measures the handshakes, not this disk.
const creds = Array.from({length: count}, (_, k) => {
  const name = nameOf(start + k)
  return {name, creds: {ca, cert: readFileSync(join(pkiDir, `${name}.crt`)), key: readFileSync(join(pkiDir, `${name}.key`))}}
})

let welcomed = 0
let retried = 0
let stormDone = false
let stormStart = 0
const conns = []
const times = []

function open({name, creds: c}) {
  const t0 = performance.now()
  return new Promise((resolve, reject) => {
    let isWelcomed = false
    const socket = connect({...tlsClientOptions(c, flags['node-name']), host, port})
    const conn = new ControlConnection(socket, 0xffff, {
      onMessage(m) {
        if (m.type === 'welcome') {
          if (m.records !== undefined) conn.goNative('client')
          welcomed++
          isWelcomed = true
          if (progress > 0 && welcomed % progress === 0) console.log(`welcomed ${welcomed} ${(performance.now() - stormStart).toFixed(0)}`)
          times.push(performance.now() - t0)
          conn.keepalive(m.keepalive, true)
          resolve()
        } else if (m.type === 'refused') {
          if (isWelcomed && reportClose) console.log(`refused ${name} ${Date.now()} ${m.reason}`)
          reject(new Error(`${name} refused: ${m.reason}`))
        }
      },
      onData() {},
      onClose(reason) {
        reject(new Error(`${name}: ${reason}`))
        if (!isWelcomed) return
        if (reportClose) console.log(`closed ${name} ${Date.now()} ${reason}`)
        else if (stormDone) {
          console.error(`simulate: ${name} lost its connection: ${reason}`)
          process.exitCode = 1
        }
      },
    })
    socket.once('secureConnect', () => {
      const records = recordsPossible(socket, NATIVE_MAX_DATA) ? {records: RECORDS} : {}
      conn.send({type: 'hello', version: PROTOCOL_VERSION, transport: 'tls', ...records})
    })
    conns.push(conn)
  })
}

async function openWithRetries(client) {
  for (let attempt = 0; ; attempt++) {
    try {
      return await open(client)
    } catch (e) {
      if (attempt >= retries) throw e
      retried++
      await new Promise((r) => setTimeout(r, 1000))
    }
  }
}

let next = 0
async function worker() {
  while (next < count) await openWithRetries(creds[next++])
}
const pct = (p) => {
  const s = [...times].sort((a, b) => a - b)
  return s.length === 0 ? NaN : s[Math.min(s.length, Math.max(1, Math.ceil((p / 100) * s.length))) - 1]
}
// A clean exit, so that --cpu-prof writes its profile when the bench stops us.
process.on('SIGTERM', () => process.exit(0))
try {
  console.log(`starting ${count}`)
  const t0 = (stormStart = performance.now())
  await Promise.all(Array.from({length: Math.min(concurrency, count)}, worker))
  const ms = performance.now() - t0
  stormDone = true
  console.log(
    `connected ${welcomed} ${ms.toFixed(0)} p50=${pct(50).toFixed(1)} p99=${pct(99).toFixed(1)} max=${pct(100).toFixed(1)} retries=${retried}`,
  )
} catch (e) {
  console.error(`simulate: ${e.message}`)
  process.exit(1)
}
setInterval(() => {}, 1 << 30)
