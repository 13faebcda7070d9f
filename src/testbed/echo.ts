/**
 * A tiny TCP+UDP echo that tells each peer the address it saw, so a test can prove who did the
 * SNAT (e.g. "the target sees 203.0.113.1"). Both sides are inline scripts run with `node -e`
 * inside a namespace: that works the same from vitest (TS sources) and from the compiled dist.
 */
import type {ChildProcess} from 'node:child_process'
import type {Testbed} from './types.js'
import {waitForOutput} from './process.js'

// Replies `peer <addr>:<port>` (UDP: one datagram per datagram; TCP: one line, then echoes).
const SERVER = `
const net = require('node:net'), dgram = require('node:dgram')
const {host, port} = JSON.parse(process.argv[1])
let up = 0
const ready = () => { if (++up === 2) console.log('echo ready ' + port) }
net.createServer((s) => {
  s.on('error', () => {})
  s.write('peer ' + s.remoteAddress + ':' + s.remotePort + '\\n')
  s.pipe(s)
}).listen(port, host, ready)
const u = dgram.createSocket('udp4')
u.on('message', (m, r) => u.send('peer ' + r.address + ':' + r.port + ' ' + m.toString(), r.port, r.address))
u.bind(port, host, ready)
`

const PROBE = `
const net = require('node:net'), dgram = require('node:dgram')
const {proto, host, port, timeoutMs, bind} = JSON.parse(process.argv[1])
const done = (line, code) => { console.log(line); process.exit(code) }
setTimeout(() => done('timeout', 2), timeoutMs)
if (proto === 'udp') {
  const u = dgram.createSocket('udp4')
  u.on('error', (e) => done('error ' + e.code, 1))
  u.on('message', (m) => done(m.toString().split(' ').slice(0, 2).join(' '), 0))
  u.bind(0, bind, () => u.send('probe', port, host))
} else {
  const s = net.connect({host, port, localAddress: bind})
  s.on('error', (e) => done('error ' + e.code, 1))
  let buf = ''
  s.on('data', (d) => { buf += d; const i = buf.indexOf('\\n'); if (i >= 0) done(buf.slice(0, i), 0) })
}
`

export interface EchoServer {
  readonly child: ChildProcess
  readonly port: number
  stop(): Promise<void>
}

export async function startEchoServer(tb: Testbed, ns: string, opts: {port?: number; host?: string} = {}): Promise<EchoServer> {
  const port = opts.port ?? 7777
  const child = tb.spawn(ns, process.execPath, ['-e', SERVER, JSON.stringify({host: opts.host ?? '0.0.0.0', port})], {
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  await waitForOutput(child, /echo ready/, 10_000)
  return {child, port, stop: () => tb.stop(child)}
}

export interface ProbeResult {
  ok: boolean
  /** The source address and port the echo server saw. */
  peer?: {address: string; port: number}
  /** `timeout`, or `error <code>` (e.g. ECONNREFUSED, ENETUNREACH). */
  error?: string
}

/** One request to an echo server from namespace `ns`; never throws for network failures. */
export async function probeEcho(
  tb: Testbed,
  ns: string,
  host: string,
  port: number,
  opts: {proto?: 'udp' | 'tcp'; timeoutMs?: number; bind?: string} = {},
): Promise<ProbeResult> {
  const timeoutMs = opts.timeoutMs ?? 2000
  const cfg = {proto: opts.proto ?? 'udp', host, port, timeoutMs, bind: opts.bind}
  const r = await tb.exec(ns, process.execPath, ['-e', PROBE, JSON.stringify(cfg)], {timeoutMs: timeoutMs + 10_000})
  const line = r.stdout.trim().split('\n').pop() ?? ''
  const m = /^peer (\S+):(\d+)$/.exec(line)
  if (r.code === 0 && m) return {ok: true, peer: {address: m[1], port: Number(m[2])}}
  return {ok: false, error: line || r.stderr.trim() || `exit ${r.code}`}
}
