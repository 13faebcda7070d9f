// Simulated idle clients for bench/idle.mjs, run inside the client namespace: each opens the
// real control channel (mutual TLS 1.3 with its own certificate, hello, welcome) with the core's
// own code, moving to native records after the welcome as an agent client does (unless
// AGENT_FAST_PATH=off), then only answers and sends keepalive pings, as an idle agent client
// does. No TUN: the node's cost per client is what is measured, not the client's.
//
//   node bench/idle/simulate.mjs <pkiDir> <count> <nodeHost> <nodePort>
// Prints "connected <n>" once every client was welcomed, then stays until killed.
import {readFileSync} from 'node:fs'
import {join} from 'node:path'
import {connect} from 'node:tls'
import {ControlConnection} from '../../dist/core/control/connection.js'
import {PROTOCOL_VERSION} from '../../dist/core/control/messages.js'
import {RECORDS, recordsPossible} from '../../dist/core/control/native-records.js'
import {NATIVE_MAX_DATA} from '../../dist/core/carrier/native-stream.js'
import {tlsClientOptions} from '../../dist/core/pki/index.js'

const [pkiDir, countText, host, portText] = process.argv.slice(2)
const count = Number(countText)
const port = Number(portText)
const ca = readFileSync(join(pkiDir, 'ca.crt'))
/** Handshakes in flight at once: a fleet reconnecting after a node restart, not a storm. */
const CONCURRENCY = 32

let welcomed = 0
const conns = []

function open(i) {
  const name = `c${String(i).padStart(4, '0')}`
  const creds = {ca, cert: readFileSync(join(pkiDir, `${name}.crt`)), key: readFileSync(join(pkiDir, `${name}.key`))}
  return new Promise((resolve, reject) => {
    const socket = connect({...tlsClientOptions(creds, 'node1'), host, port})
    const conn = new ControlConnection(socket, 0xffff, {
      onMessage(m) {
        if (m.type === 'welcome') {
          if (m.records !== undefined) conn.goNative('client')
          welcomed++
          conn.keepalive(m.keepalive, true)
          resolve()
        } else if (m.type === 'refused') reject(new Error(`${name} refused: ${m.reason}`))
      },
      onData() {},
      onClose(reason) {
        reject(new Error(`${name}: ${reason}`))
        if (welcomed === count) {
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

let next = 0
async function worker() {
  while (next < count) await open(next++)
}
try {
  await Promise.all(Array.from({length: CONCURRENCY}, worker))
  console.log(`connected ${welcomed}`)
} catch (e) {
  console.error(`simulate: ${e.message}`)
  process.exit(1)
}
setInterval(() => {}, 1 << 30)
