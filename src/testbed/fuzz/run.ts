/**
 * One fuzz run of one transport, end to end: a fleet on a testbed, the real `agent` node on the
 * AddressSanitizer build of the addon (scripts/asan-addon.mjs), the fuzzing client (client.ts)
 * as the authenticated client alice from a NATed client namespace (or, over the ip carrier, one
 * with a public address), and afterwards the checks:
 * the node is alive, ASan reported nothing, the fast path's counters moved (the fuzz reached
 * the C, not only JS's drops), a real `agent` client (bob) still pings through the node, and
 * the node stops cleanly. Used by scripts/fuzz.mjs (npm run fuzz) and test/integration/fuzz.test.ts.
 */
import {readFileSync} from 'node:fs'
import {join} from 'node:path'
import {pathToFileURL} from 'node:url'
import {createFleet, NODE_PORT, ROOT} from '../fleet.js'
import type {FuzzClientOptions, FuzzClientSummary} from './client.js'

export const FUZZ_TRANSPORTS = ['ipip', 'gre', 'ipsec-over-gre', 'tls'] as const

export interface FuzzRunOptions {
  transport: string
  packets: number
  seconds: number
  seed: number
  /** Packets per second the client sends at most. */
  rate: number
  /**
   * The datagram transports' carrier (default udp, through the testbed's NAT). ip: raw IP
   * packets (net.c's raw sockets), from a client namespace with a public address.
   */
  carrier?: 'udp' | 'ip'
  /** An oclif data dir with the transport installed (else the fleet installs it). */
  dataDir?: string
  log?: (line: string) => void
}

export interface FuzzReport {
  transport: string
  /** What the fuzzed packets travelled in: udp or ip datagrams, or tls's stream. */
  carrier: 'udp' | 'ip' | 'stream'
  seed: number
  client: FuzzClientSummary | null
  clientError: string | null
  /** The node's fast-path and data-path counters, after minus before. */
  counters: Record<string, number>
  nodeAliveAfter: boolean
  /** Lines of the node's output that are AddressSanitizer's (empty: none). */
  asanReports: string[]
  /** The node really ran on the ASan addon (checked in its memory map). */
  asanLoaded: boolean
  realClientPing: boolean
  /** The node's exit code when stopped with SIGTERM (0: clean). */
  nodeExit: number | null
  nodeOutputTail: string
}

interface AsanModule {
  buildAsanAddon(o?: {log?: (m: string) => void}): string
  asanEnv(addon?: string): Record<string, string>
}

async function asan(): Promise<AsanModule> {
  return (await import(pathToFileURL(join(ROOT, 'scripts', 'asan-addon.mjs')).href)) as AsanModule
}

/** What ASan (or a crash) printed: its report lines. */
export function asanLines(output: string): string[] {
  return output.split('\n').filter((l) => /AddressSanitizer|LeakSanitizer|runtime error:|SUMMARY: |ERROR: AddressSanitizer|Segmentation fault|core dumped/.test(l))
}

async function nodeCounters(cli: (args: string[]) => Promise<{stdout: string; code: number; stderr: string}>): Promise<Record<string, number>> {
  const r = await cli(['status', '--json'])
  if (r.code !== 0) throw new Error(`agent status failed on the node: ${r.stderr}`)
  const report = JSON.parse(r.stdout)[0] as {counters: Record<string, number>}
  return report.counters
}

export async function runFuzz(o: FuzzRunOptions): Promise<FuzzReport> {
  const log = o.log ?? (() => {})
  const {buildAsanAddon, asanEnv} = await asan()
  const addon = buildAsanAddon({log})
  const env = asanEnv(addon)
  const ip = o.carrier === 'ip'
  if (ip && o.transport === 'tls') throw new Error('fuzz: the tls transport has no ip carrier')
  const fleet = await createFleet({
    prefix: 'fz',
    clients: 2,
    publicClients: ip ? 1 : 0,
    transport: o.transport,
    keepalive: 2,
    dataDir: o.dataDir,
    transportOptions: {
      ...(ip ? {carrier: 'ip'} : {}),
      // ipsec-over-gre rekeys under fire: the fast path's SAs change while the fuzz runs.
      ...(o.transport === 'ipsec-over-gre' ? {rekeySeconds: 10} : {}),
    },
  })
  const {tb} = fleet
  // Raw IP does not cross the testbed's NAT: over ip, both clients (one after the other) use
  // the namespace with a public address.
  const fuzzNs = ip ? tb.names.publicClient[0] : tb.names.client[0]
  const realNs = ip ? tb.names.publicClient[0] : tb.names.client[1]
  const report: FuzzReport = {
    transport: o.transport,
    carrier: o.transport === 'tls' ? 'stream' : ip ? 'ip' : 'udp',
    seed: o.seed,
    client: null,
    clientError: null,
    counters: {},
    nodeAliveAfter: false,
    asanReports: [],
    asanLoaded: false,
    realClientPing: false,
    nodeExit: null,
    nodeOutputTail: '',
  }
  try {
    const node = await fleet.startNode({env})
    report.asanLoaded = readFileSync(`/proc/${node.pid}/maps`, 'utf8').includes(addon)
    const cli = (args: string[]) => fleet.cli(tb.names.node, args)
    const before = await nodeCounters(cli)
    const options: FuzzClientOptions = {
      transport: o.transport,
      host: tb.addr.nodeWan,
      port: NODE_PORT,
      nodeName: 'node1',
      bundle: join(fleet.pki, 'alice.pem'),
      root: ROOT,
      target: tb.addr.target,
      packets: o.packets,
      seconds: o.seconds,
      seed: o.seed,
      rate: o.rate,
    }
    log(`fuzz ${o.transport}: seed ${o.seed}, up to ${o.packets} packets in ${o.seconds} s at ${o.rate}/s`)
    const client = tb.spawn(fuzzNs, process.execPath, [join(ROOT, 'dist/testbed/fuzz/client.js'), JSON.stringify(options)], {stdio: ['ignore', 'pipe', 'pipe']})
    let out = ''
    let err = ''
    client.stdout!.on('data', (b: Buffer) => (out += b.toString()))
    client.stderr!.on('data', (b: Buffer) => {
      err += b.toString()
      for (const line of b.toString().split('\n')) if (line.trim() !== '') log(line)
    })
    const code = await new Promise<number | null>((resolve) => {
      const guard = setTimeout(() => client.kill('SIGKILL'), (o.seconds + 60) * 1000)
      client.once('exit', (c) => {
        clearTimeout(guard)
        resolve(c)
      })
    })
    if (code === 0) report.client = JSON.parse(out.trim().split('\n').pop()!) as FuzzClientSummary
    else report.clientError = `fuzz client exited with ${code}: ${err.slice(-2000)}`
    report.nodeAliveAfter = node.child.exitCode === null && node.child.signalCode === null
    if (report.nodeAliveAfter) {
      const after = await nodeCounters(cli)
      for (const [k, v] of Object.entries(after)) if (typeof v === 'number') report.counters[k] = v - (before[k] ?? 0)
      // A real client, through the node that was fuzzed.
      const bob = await fleet.startClient('bob', 1, {ns: realNs})
      const ping = await tb.exec(realNs, 'ping', ['-c', '3', '-i', '0.2', '-W', '2', tb.addr.target])
      report.realClientPing = ping.code === 0
      await tb.stop(bob.child)
      await tb.stop(node.child, 10_000)
      report.nodeExit = await node.exited
    }
    report.asanReports = asanLines(node.output)
    report.nodeOutputTail = node.output.slice(-4000)
    return report
  } finally {
    await tb.destroy()
  }
}

/** Problems with a report, one line each; empty when the run passed. */
export function fuzzProblems(r: FuzzReport): string[] {
  const p: string[] = []
  if (!r.asanLoaded) p.push('the node did not load the ASan addon')
  if (r.clientError !== null) p.push(r.clientError)
  if (!r.nodeAliveAfter) p.push('the node died during the fuzz')
  if (r.asanReports.length > 0) p.push(`AddressSanitizer reported:\n${r.asanReports.join('\n')}`)
  if (r.nodeAliveAfter && !r.realClientPing) p.push('a real client could not ping through the node afterwards')
  if (r.nodeAliveAfter && r.nodeExit !== 0) p.push(`the node exited with ${r.nodeExit} on SIGTERM`)
  if ((r.counters.fastPathRxPackets ?? 0) <= 0) p.push('no fuzzed packet reached the native fast path (fastPathRxPackets did not move)')
  return p
}
