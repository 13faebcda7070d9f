/**
 * A stranger at a node's control port, for the hostile tests and the benchmark. Runs inside a
 * testbed namespace (node dist/testbed/attacks/control-flood.js MODE HOST PORT [options]) and
 * prints one JSON line of what it saw when it ends. Bounded: at most --max connections at once
 * and --seconds of running.
 *
 *   hold     open connections as fast as it can, say nothing, hold each until the node closes
 *            it, then open another: a host trying to take every slot players need
 *   hello    the same, but each sends a genuine TLS ClientHello first and then stalls
 *   fail     the same, but each sends a ClientHello offering TLS 1.2 at most, which the node
 *            (TLS 1.3 only) refuses at once: a flood of failed handshakes, each one a line
 *            the node would log were its log not rate-limited
 *   trickle  one connection that sends a genuine ClientHello one byte per second: alive for
 *            an inactivity timer, not for an absolute deadline
 */
import {connect as tcpConnect, type Socket} from 'node:net'
import {connect as tlsConnect} from 'node:tls'
import {Duplex} from 'node:stream'
import {parseArgs} from 'node:util'

const {positionals, values} = parseArgs({
  allowPositionals: true,
  options: {seconds: {type: 'string', default: '30'}, max: {type: 'string', default: '4000'}},
})
const [mode, host, portText] = positionals
const port = Number(portText)
const seconds = Number(values.seconds)
const max = Number(values.max)
if (!['hold', 'hello', 'fail', 'trickle'].includes(mode) || host === undefined || !(port > 0) || !(seconds > 0) || !(max > 0)) {
  process.stderr.write('usage: control-flood hold|hello|fail|trickle HOST PORT [--seconds S] [--max N]\n')
  process.exit(2)
}

/** The first flight a TLS client sends (1.3 unless told): what Node's own client writes, caught on the way out. */
function clientHello(maxVersion: 'TLSv1.2' | 'TLSv1.3' = 'TLSv1.3'): Promise<Buffer> {
  return new Promise((resolve) => {
    const fake = new Duplex({
      read() {},
      write(chunk: Buffer, _enc, cb) {
        resolve(Buffer.from(chunk))
        cb()
      },
    })
    const t = tlsConnect({socket: fake, servername: 'node', rejectUnauthorized: false, maxVersion, ...(maxVersion === 'TLSv1.2' ? {minVersion: 'TLSv1.2'} : {})})
    t.on('error', () => {})
  })
}

const stats = {mode, opened: 0, failed: 0, closedByNode: 0, held: 0, maxHeld: 0, seconds: 0, trickleClosedAfterMs: null as number | null, bytesSent: 0}
const started = Date.now()
const open = new Set<Socket>()
let running = true

function finish(): void {
  running = false
  stats.seconds = (Date.now() - started) / 1000
  for (const s of open) s.destroy()
  process.stdout.write(`${JSON.stringify(stats)}\n`)
  process.exit(0)
}
setTimeout(finish, seconds * 1000)
process.on('SIGTERM', finish)

async function flood(hello: Buffer | null): Promise<void> {
  const openOne = (): void => {
    if (!running || open.size >= max) return
    const s = tcpConnect({host, port})
    open.add(s)
    stats.opened++
    let connected = false
    s.on('connect', () => {
      connected = true
      stats.held = open.size
      stats.maxHeld = Math.max(stats.maxHeld, open.size)
      if (hello !== null) s.write(hello)
      setImmediate(openOne) // as fast as the node takes them
    })
    s.on('data', () => {}) // whatever the node answers: read and ignore
    s.on('error', () => {})
    s.on('close', () => {
      open.delete(s)
      if (connected) stats.closedByNode++
      else stats.failed++
      stats.held = open.size
      // Reopen each as it closes; after a refused connect, back off a little.
      if (connected) setImmediate(openOne)
      else setTimeout(openOne, 10)
    })
  }
  for (let i = 0; i < Math.min(max, 64); i++) openOne()
}

async function trickle(hello: Buffer): Promise<void> {
  const s = tcpConnect({host, port})
  open.add(s)
  stats.opened++
  const t0 = Date.now()
  let i = 0
  const timer = setInterval(() => {
    if (i < hello.length && !s.destroyed) {
      s.write(hello.subarray(i, i + 1))
      i++
      stats.bytesSent = i
    }
  }, 1000)
  s.on('error', () => {})
  s.on('close', () => {
    clearInterval(timer)
    stats.trickleClosedAfterMs = Date.now() - t0
    stats.closedByNode = 1
    finish()
  })
}

const hello = await clientHello(mode === 'fail' ? 'TLSv1.2' : 'TLSv1.3')
if (mode === 'trickle') await trickle(hello)
else await flood(mode === 'hello' || mode === 'fail' ? hello : null)
