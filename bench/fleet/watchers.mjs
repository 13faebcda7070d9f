// Simulated fleet watchers for bench/fleet.mjs, run in the testbed's ctl namespace (where etcd
// is): `count` etcd clients, each with its own connection to one member (round robin), each
// watching the whole fleet prefix as a node does (fleet-watch.ts). Each prints when it sees a
// revoked name appear, by this machine's clock:
//
//   node bench/fleet/watchers.mjs '<json: {etcd: {endpoints, ca, cert, key}, prefix, count}>'
//
// stdout: "ready <count>" once every watch is established, then "seen <watcher> <name> <epoch ms>".
import {readFileSync} from 'node:fs'
import {Etcd3} from 'etcd3'

const arg = JSON.parse(process.argv[2])
const credentials = {rootCertificate: readFileSync(arg.etcd.ca), certChain: readFileSync(arg.etcd.cert), privateKey: readFileSync(arg.etcd.key)}
const revoked = `${arg.prefix}/revoked/names/`
const now = () => performance.timeOrigin + performance.now()
const clients = []

process.on('SIGTERM', () => {
  for (const c of clients) c.close()
  process.exit(0)
})

await Promise.all(
  Array.from({length: arg.count}, async (_, i) => {
    // A subchannel pool of its own: without it grpc-js shares one connection between clients
    // with the same target, and 50 watchers would be 50 streams on 3 connections, not 50 nodes.
    const etcd = new Etcd3({hosts: [arg.etcd.endpoints[i % arg.etcd.endpoints.length]], credentials, dialTimeout: 3000, grpcOptions: {'grpc.use_local_subchannel_pool': 1}})
    clients.push(etcd)
    const w = await etcd.watch().prefix(`${arg.prefix}/`).create()
    w.on('put', (kv) => {
      const t = now()
      const key = kv.key.toString()
      if (key.startsWith(revoked)) process.stdout.write(`seen ${i} ${key.slice(revoked.length)} ${t.toFixed(1)}\n`)
    })
    w.on('error', (e) => console.error(`watcher ${i}: ${e.message}`))
  }),
)
console.log(`ready ${clients.length}`)
setInterval(() => {}, 1 << 30)
