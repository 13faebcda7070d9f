/**
 * A user-space delay relay: this kernel has no netem, so a "far" path is made by relaying UDP
 * and TCP through a process that holds each packet (UDP) or chunk (TCP) for a set delay in each
 * direction, and drops UDP datagrams at a set loss rate. Clients connect to the relay instead of
 * the node; the node sees the relay's address. The delay and loss change live (setPath), so a
 * test can make a near node far. An inline script run with `node -e` inside a namespace, like
 * echo.ts.
 */
import type {ChildProcess} from 'node:child_process'
import type {Testbed} from './types.js'
import {waitForOutput} from './process.js'

// stdin: one JSON line per change {delayMs, loss}. Order is kept: a packet never leaves before
// one that came in before it, even when the delay shrinks.
const RELAY = `
const net = require('node:net'), dgram = require('node:dgram'), readline = require('node:readline')
const {listen, to, delayMs, loss} = JSON.parse(process.argv[1])
const path = {delayMs, loss}
readline.createInterface({input: process.stdin}).on('line', (l) => { try { Object.assign(path, JSON.parse(l)); console.log('path ' + JSON.stringify(path)) } catch {} })
/** A FIFO that releases each item delayMs after it came, never before the one before it. */
function lane(send) {
  let last = 0
  return (item) => {
    const at = Math.max(Date.now() + path.delayMs, last)
    last = at
    setTimeout(() => send(item), at - Date.now())
  }
}
let up = 0
const ready = () => { if (++up === 2) console.log('relay ready ' + listen.port) }
net.createServer((c) => {
  const u = net.connect(to.port, to.host)
  const end = () => { c.destroy(); u.destroy() }
  // An end travels in its lane too: a FIN must not overtake the bytes sent before it.
  const toNode = lane((b) => b === null ? end() : u.write(b)), toClient = lane((b) => b === null ? end() : c.write(b))
  c.on('data', toNode); u.on('data', toClient)
  c.on('error', end); u.on('error', end); c.on('close', () => toNode(null)); u.on('close', () => toClient(null))
}).listen(listen.port, listen.host, ready)
const s = dgram.createSocket('udp4')
const flows = new Map()
s.on('message', (m, r) => {
  const key = r.address + ':' + r.port
  let f = flows.get(key)
  if (!f) {
    const u = dgram.createSocket('udp4')
    const back = lane((b) => s.send(b, r.port, r.address))
    u.on('message', (b) => { if (Math.random() >= path.loss) back(b) })
    u.connect(to.port, to.host)
    f = {u, out: lane((b) => u.send(b))}
    flows.set(key, f)
  }
  if (Math.random() >= path.loss) f.out(m)
})
s.bind(listen.port, listen.host, ready)
`

export interface RelayPath {
  /** Added in each direction, ms (a round trip gains twice this). */
  delayMs: number
  /** Share of UDP datagrams dropped in each direction, 0 to 1. */
  loss: number
}

export interface DelayRelay {
  readonly child: ChildProcess
  readonly port: number
  /** Changes the delay and loss from now on. */
  setPath(path: Partial<RelayPath>): Promise<void>
  stop(): Promise<void>
}

/** Relays TCP and UDP from listen (in `ns`) to `to`, with `path` in each direction. */
export async function startDelayRelay(
  tb: Testbed,
  ns: string,
  opts: {listen: {host?: string; port: number}; to: {host: string; port: number}} & Partial<RelayPath>,
): Promise<DelayRelay> {
  const delayMs = opts.delayMs ?? 0
  const loss = opts.loss ?? 0
  if (!(delayMs >= 0 && delayMs <= 10_000) || !(loss >= 0 && loss <= 1)) throw new Error(`relay path: delayMs 0..10000 and loss 0..1, got ${delayMs} and ${loss}`)
  const arg = {listen: {host: opts.listen.host ?? '0.0.0.0', port: opts.listen.port}, to: opts.to, delayMs, loss}
  const child = tb.spawn(ns, process.execPath, ['-e', RELAY, JSON.stringify(arg)], {stdio: ['pipe', 'pipe', 'pipe']})
  await waitForOutput(child, /relay ready/, 10_000)
  let output = ''
  child.stdout!.on('data', (b: Buffer) => (output += b.toString()))
  return {
    child,
    port: opts.listen.port,
    async setPath(path) {
      const mark = output.length
      child.stdin!.write(`${JSON.stringify(path)}\n`)
      for (let i = 0; i < 100 && !output.slice(mark).includes('path '); i++) await new Promise((r) => setTimeout(r, 20))
      if (!output.slice(mark).includes('path ')) throw new Error('the relay did not take the new path')
    },
    stop: () => tb.stop(child),
  }
}
