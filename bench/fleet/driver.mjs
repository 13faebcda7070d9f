// The operator's side of bench/fleet.mjs, run in the testbed's ctl namespace with an operator's
// etcd user: the admin API of `agent fleet` (dist/core/fleet/admin.js) for what one operator
// does, and etcd transactions for the bulk roster. One JSON command per stdin line, one JSON
// answer per stdout line (same order):
//
//   {op: 'add', names}                  authorize clients (FleetAdmin.addClient, one by one)
//   {op: 'revoke', name}                FleetAdmin.revokeName: {t0, t1} epoch ms before the put and at its response
//   {op: 'clear'}                       delete every client and revocation of the fleet
//   {op: 'bulk', count, batch, inFlight, pad}  put clients r<i> (a pinned fingerprint each) in
//                                       transactions of `batch` puts, `inFlight` at once: {ms}
//   {op: 'count'}                       FleetAdmin.counts()
import {createHash} from 'node:crypto'
import {createInterface} from 'node:readline'
import {FleetAdmin} from '../../dist/core/fleet/admin.js'
import {connectEtcd} from '../../dist/core/fleet/connect.js'

const arg = JSON.parse(process.argv[2])
const etcd = connectEtcd(arg.etcd)
const admin = new FleetAdmin(etcd, arg.prefix)
const keys = admin.keys
const now = () => performance.timeOrigin + performance.now()

/** A fingerprint as `agent pki` prints them, derived from the name (unique, not a real certificate's). */
const fingerprint = (name) =>
  'sha256:' + createHash('sha256').update(name).digest('hex').toUpperCase().match(/../g).join(':')

const ops = {
  async add({names}) {
    for (const n of names) await admin.addClient(n)
    return {added: names.length}
  },
  async revoke({name}) {
    const t0 = now()
    await admin.revokeName(name, 'bench')
    return {name, t0, t1: now()}
  },
  async clear() {
    await etcd.delete().prefix(keys.clients).exec()
    await etcd.delete().prefix(`${arg.prefix}/revoked/`).exec()
    return {}
  },
  async bulk({count, batch, inFlight, pad}) {
    await admin.ensureVersion()
    const t0 = now()
    let next = 0
    const worker = async () => {
      while (next < count) {
        const from = next
        next = Math.min(count, next + batch)
        const puts = []
        for (let i = from; i < next; i++) {
          const name = `r${String(i).padStart(pad, '0')}`
          puts.push(etcd.put(keys.client(name)).value(JSON.stringify({fingerprint: fingerprint(name)})))
        }
        await etcd.if(keys.version, 'Create', '>', 0).then(...puts).commit()
      }
    }
    await Promise.all(Array.from({length: inFlight}, worker))
    return {ms: now() - t0}
  },
  async count() {
    return admin.counts()
  },
}

const lines = createInterface({input: process.stdin})
for await (const line of lines) {
  const cmd = JSON.parse(line)
  try {
    console.log(JSON.stringify({ok: true, ...(await ops[cmd.op](cmd))}))
  } catch (e) {
    console.log(JSON.stringify({ok: false, error: e.message}))
  }
}
etcd.close()
