/**
 * A packet-level delay between one node and the target: this kernel has no netem, and the
 * user-space relay (relay.ts) terminates TCP, so it cannot delay what a node's game-RTT probe
 * sends (an ICMP echo, a TCP SYN answered by SYN-ACK or RST). Here nothing is terminated: every
 * packet the target sends to node k's egress address (203.0.113.k) goes through a TUN device
 * owned by a small process in the target namespace, which holds it delayMs and gives it back
 * to the kernel, which forwards it on to the node. So everything node k exchanges with the
 * target, its own probes and the client traffic it forwards with SNAT, gains delayMs of round
 * trip (all of it on the way back), and the other nodes' paths are untouched.
 *
 * Packet path, all inside the target namespace (node k's requests reach the target directly,
 * over the bridge, as before):
 *
 *   target stack ── reply to 203.0.113.k ── main: 203.0.113.k/32 dev lag<k> ──► TUN lag<k>
 *   delay process: read, hold delayMs in a FIFO, write back into lag<k>
 *   lag<k> (received, forwarding=1, accept_local=1) ── rule `iif lag<k> lookup <table>`
 *     ── table: 203.0.113.k/32 dev eth0 ──► bridge port n<k> ──► node k
 *
 * One TUN device both ways: the kernel's reply is routed into it, and what the process writes
 * into it comes back as received on it, which the iif rule tells apart from the kernel's own
 * replies (those are looked up with iif lo). Forwarding is switched on for lag<k> alone, so
 * nothing else the target receives is ever forwarded; accept_local lets the forwarded packets
 * carry the target's own source address. Order is kept: a packet never leaves before one that
 * came before it, even when the delay shrinks. The delay changes live (setDelay).
 *
 * The process opens the TUN with the repo's native addon (dist/core/tun), so it needs the
 * build. The device is not persistent: it, and the main route through it, go when the process
 * goes; stop() also removes the rule and the table route. A testbed's destroy() stops the
 * process (tb.spawn) and deletes the namespace with whatever was left in it.
 */
import type {ChildProcess} from 'node:child_process'
import {existsSync} from 'node:fs'
import {join} from 'node:path'
import {pathToFileURL} from 'node:url'
import {ROOT} from './fleet.js'
import {waitForOutput} from './process.js'
import type {Testbed} from './types.js'

/** The delay the lag accepts, ms (as the relay's). */
export const MAX_LAG_MS = 10_000
const MTU = 1500
/** Rule preference and routing table of node k's lag: BASE + k (below main's 32766). */
const BASE = 1000

// arg: {tun, name, mtu, delayMs}. stdin: one JSON line per change {delayMs}, answered by
// `delay <ms>`. Each packet is copied out of the ring and released at max(arrival + delay, the
// one before's release), so the queue's times never decrease and one timer serves it.
const LAG = `
import readline from 'node:readline'
const {tun, name, mtu, delayMs} = JSON.parse(process.argv[1])
const {openTun} = await import(tun)
let delay = delayMs
const queue = []
let head = 0, last = 0, timer
const flush = () => {
  timer = undefined
  const now = performance.now()
  while (head < queue.length && queue[head].at <= now) { const p = queue[head++].pkt; dev.write(p, 0, p.length) }
  if (head === queue.length) { queue.length = 0; head = 0 }
  else { if (head > 1024) { queue.splice(0, head); head = 0 } arm() }
}
const arm = () => { timer ??= setTimeout(flush, Math.max(0, queue[head].at - performance.now())) }
const dev = openTun({name, mtu, onError: (e) => { console.error('lag ' + name + ': ' + e.message); process.exit(1) }})
dev.start((count, ring) => {
  const now = performance.now()
  for (let i = 0; i < count; i++) {
    const off = i * ring.slotSize + ring.headroom
    if (delay === 0 && head === queue.length) { dev.write(ring.buf, off, ring.lengths[i]); continue }
    const at = Math.max(now + delay, last)
    last = at
    queue.push({at, pkt: Buffer.from(ring.buf.subarray(off, off + ring.lengths[i]))})
  }
  if (head < queue.length) arm()
})
readline.createInterface({input: process.stdin}).on('line', (l) => {
  try { const d = JSON.parse(l).delayMs; if (typeof d === 'number') delay = d; console.log('delay ' + delay) } catch {}
})
process.stdin.on('end', () => process.exit(0))
process.on('SIGTERM', () => { dev.close(); process.exit(0) })
console.log('lag ready ' + name)
`

export interface EgressLag {
  /** 1-based, as in startEgressLag. */
  readonly node: number
  /** The TUN device in the target namespace (`lag<k>`). */
  readonly device: string
  /** The delay process, in the target namespace. */
  readonly child: ChildProcess
  /** The round-trip delay added now, ms. */
  readonly delayMs: number
  /** Changes the delay from now on (packets already held keep theirs); 0..MAX_LAG_MS. */
  setDelay(ms: number): Promise<void>
  /** Removes the route, rule, table route and device, and ends the process. Idempotent. */
  stop(): Promise<void>
}

function checkDelay(ms: number): void {
  if (typeof ms !== 'number' || !Number.isFinite(ms) || ms < 0 || ms > MAX_LAG_MS) {
    throw new RangeError(`egress lag: delayMs must be a number of ms in 0..${MAX_LAG_MS}, got ${String(ms)}`)
  }
}

/** Nodes of each testbed with a lag running, so a second one on the same node fails clearly. */
const ACTIVE = new WeakMap<Testbed, Set<number>>()

/**
 * Adds delayMs of round trip to everything between node `node` (1-based) and the target, by
 * holding the target's packets to the node's egress address (see the module comment).
 */
export async function startEgressLag(tb: Testbed, node: number, opts: {delayMs: number}): Promise<EgressLag> {
  const nodes = tb.names.nodes.length
  if (!Number.isInteger(node) || node < 1 || node > nodes) {
    throw new RangeError(`egress lag: node must be an integer 1..${nodes} (this testbed's nodes), got ${String(node)}`)
  }
  checkDelay(opts.delayMs)
  const active = ACTIVE.get(tb) ?? new Set<number>()
  ACTIVE.set(tb, active)
  if (active.has(node)) throw new Error(`egress lag: node ${node} of testbed ${tb.id} already has one; stop it first`)
  const tun = join(ROOT, 'dist/core/tun/index.js')
  if (!existsSync(tun)) throw new Error(`egress lag: needs the build (${tun} is missing; run npm run build)`)

  const ns = tb.names.target
  const dst = `${tb.addr.nodesEgress[node - 1]}/32`
  const device = `lag${node}`
  const pref = String(BASE + node)
  const table = String(BASE + node)
  const ip = (...args: string[]) => tb.exec(ns, 'ip', args, {check: true})
  active.add(node)

  let child: ChildProcess | undefined
  let delayMs = opts.delayMs
  let output = ''
  let stopping: Promise<void> | undefined
  // Every step undone whether or not it was done, so a half-made lag is cleaned up the same way.
  // The main route first: from then on new replies go straight out, and the process only
  // holds what it already had.
  const teardown = async () => {
    await tb.exec(ns, 'ip', ['route', 'del', dst, 'dev', device])
    if (child) await tb.stop(child)
    await tb.exec(ns, 'ip', ['rule', 'del', 'pref', pref])
    await tb.exec(ns, 'ip', ['route', 'flush', 'table', table])
    // Gone with the process, unless it never opened the device and something else did.
    await tb.exec(ns, 'ip', ['link', 'del', device])
    active.delete(node)
  }

  try {
    const arg = {tun: pathToFileURL(tun).href, name: device, mtu: MTU, delayMs}
    child = tb.spawn(ns, process.execPath, ['--input-type=module', '-e', LAG, JSON.stringify(arg)], {
      cwd: ROOT,
      stdio: ['pipe', 'pipe', 'pipe'],
    })
    await waitForOutput(child, /lag ready/, 10_000)
    child.stdout!.on('data', (b: Buffer) => (output += b.toString()))
    child.stderr!.resume()
    await tb.sysctl(ns, {
      [`net.ipv4.conf.${device}.forwarding`]: 1,
      [`net.ipv4.conf.${device}.accept_local`]: 1,
      [`net.ipv4.conf.${device}.rp_filter`]: 0,
    })
    // The kernel would give the device a link-local address and send into it; not ours to delay.
    await tb.exec(ns, 'sysctl', ['-q', '-e', '-w', `net.ipv6.conf.${device}.disable_ipv6=1`])
    await ip('link', 'set', 'dev', device, 'mtu', String(MTU), 'up')
    await ip('route', 'add', dst, 'dev', tb.ifaces.target, 'table', table)
    await ip('rule', 'add', 'pref', pref, 'iif', device, 'lookup', table)
    await ip('route', 'add', dst, 'dev', device)
  } catch (e) {
    await teardown().catch(() => {})
    throw e
  }

  const proc = child
  return {
    node,
    device,
    child: proc,
    get delayMs() {
      return delayMs
    },
    async setDelay(ms) {
      checkDelay(ms)
      if (stopping) throw new Error(`egress lag of node ${node} is stopped`)
      const mark = output.length
      proc.stdin!.write(`${JSON.stringify({delayMs: ms})}\n`)
      const want = `delay ${ms}\n`
      for (let i = 0; i < 100 && !output.slice(mark).includes(want); i++) await new Promise((r) => setTimeout(r, 20))
      if (!output.slice(mark).includes(want)) throw new Error(`egress lag of node ${node}: the delay process did not take ${ms} ms`)
      delayMs = ms
    },
    stop() {
      stopping ??= teardown()
      return stopping
    },
  }
}
