/**
 * The fuzzing client: a genuine, authenticated client of the node (a certificate the node
 * admits, the control handshake, the transport's own client session, authenticated keepalives
 * from its own UDP socket, so the node learns that endpoint), which then sends what a real client
 * never would. Its datagrams carry valid keys and SPIs from the learned endpoint, so they get
 * past the first checks and into the node's C: the fast path, ESP, the TUN write and the TCP
 * coalescing (datagram-fuzz.ts). On tls it writes the native records itself (record-fuzz.ts).
 * Over the control connection it sends mutated control messages (control-fuzz.ts). When the
 * node closes the connection (as it should, for many of these), it connects again and goes on
 * until its budget (session.ts) is spent. Inner packets and their mutations: packets.ts.
 *
 * Run in a client namespace by run.ts: `node client.js '<FuzzClientOptions as JSON>'`; prints
 * progress on stderr and one JSON summary line (FuzzClientSummary) on stdout.
 */
import {join} from 'node:path'
import {pathToFileURL} from 'node:url'
import {greCodec} from '../../core/codecs/gre/index.js'
import {loadCredentials} from '../../core/pki/index.js'
import {CONTRACT_VERSION, type Transport} from '../../core/transport/contract.js'
import {datagramSession} from './datagram-fuzz.js'
import {tlsSession} from './record-fuzz.js'
import {Rng} from './rng.js'
import {Budget, type FuzzClientOptions, type FuzzClientSummary, count, sleep} from './session.js'

export type {FuzzClientOptions, FuzzClientSummary} from './session.js'

export async function runFuzzClient(o: FuzzClientOptions): Promise<FuzzClientSummary> {
  const rng = new Rng(o.seed)
  const credentials = await loadCredentials({bundle: o.bundle})
  const budget = new Budget(o)
  const summary: FuzzClientSummary = {transport: o.transport, seed: o.seed, packets: 0, seconds: 0, sessions: 0, kinds: {}, closes: {}, received: 0}
  const transport = o.transport === 'tls' ? null : await loadTransport(o)
  let lastReport = Date.now()
  let failedInARow = 0
  while (!budget.done) {
    const welcomedBefore = summary.sessions
    const reason =
      transport === null ? await tlsSession(o, credentials, rng.fork(), budget, summary) : await datagramSession(o, transport, credentials, rng.fork(), budget, summary)
    count(summary.closes, reason.replace(/\d+/g, 'N'))
    // Welcomed sessions reset the count; a node that stops welcoming us is a finding of its own.
    failedInARow = summary.sessions === welcomedBefore ? failedInARow + 1 : 0
    if (failedInARow >= 5) throw new Error(`the node stopped welcoming us: ${reason}`)
    if (Date.now() - lastReport > 5000) {
      lastReport = Date.now()
      process.stderr.write(`fuzz ${o.transport}: ${budget.sent} packets, ${summary.sessions} sessions\n`)
    }
    if (!budget.done) await sleep(100)
  }
  summary.packets = budget.sent
  summary.seconds = (Date.now() - budget.start) / 1000
  return summary
}

async function loadTransport(o: FuzzClientOptions): Promise<Transport> {
  const mod = (await import(pathToFileURL(join(o.root, 'plugins', o.transport, 'dist', 'index.js')).href)) as {
    default: (opts: {core: {contractVersion: 1; gre: typeof greCodec}}) => Promise<Transport>
  }
  return mod.default({core: {contractVersion: CONTRACT_VERSION, gre: greCodec}})
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const o = JSON.parse(process.argv[2] ?? '{}') as FuzzClientOptions
  runFuzzClient(o).then(
    (s) => {
      process.stdout.write(`${JSON.stringify(s)}\n`)
      process.exit(0)
    },
    (e: Error) => {
      process.stderr.write(`fuzz client failed: ${e.stack ?? e.message}\n`)
      process.exit(1)
    },
  )
}
