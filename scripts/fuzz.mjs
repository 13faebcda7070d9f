#!/usr/bin/env node
// npm run fuzz [-- --transport ipip,gre,ipsec-over-gre,tls] [--packets N] [--seconds S] [--seed N] [--rate PPS]
//                 [--carrier udp|ip]
//
// Fuzzes the node's C (fast path, ESP, TCP coalescing, native tls records) as an authenticated
// client, against the real `agent` node running on an AddressSanitizer build of the addon, in
// a testbed of network namespaces (src/testbed/fuzz/run.ts says what is checked). Each transport
// runs until it sent --packets or ran --seconds, whichever comes first. The seed is printed:
// `--seed N` replays a run's inputs. Exits non-zero on any crash, ASan report or failed check.
// Needs root and the build (npm run build); builds the ASan addon into build-asan/ itself.
import {execFileSync} from 'node:child_process'
import {existsSync, mkdtempSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {parseArgs} from 'node:util'
import {ROOT} from './asan-addon.mjs'

const {values} = parseArgs({
  options: {
    transport: {type: 'string', default: 'ipip,gre,ipsec-over-gre,tls'},
    packets: {type: 'string', default: '100000'},
    seconds: {type: 'string', default: '60'},
    seed: {type: 'string'},
    rate: {type: 'string', default: '20000'},
    // The datagram transports' carrier: udp (through a NAT), or ip (raw IP, net.c's raw sockets).
    carrier: {type: 'string', default: 'udp'},
  },
})

const int = (name, min) => {
  const v = Number(values[name])
  if (!Number.isInteger(v) || v < min) {
    console.error(`fuzz: --${name} must be an integer >= ${min}, got ${values[name]}`)
    process.exit(2)
  }
  return v
}
const packets = int('packets', 1)
const seconds = int('seconds', 1)
const rate = int('rate', 1)
const seed = values.seed === undefined ? Math.floor(Math.random() * 0x100000000) : int('seed', 0)
const carrier = values.carrier
if (carrier !== 'udp' && carrier !== 'ip') {
  console.error(`fuzz: --carrier must be udp or ip, got ${carrier}`)
  process.exit(2)
}
const run = join(ROOT, 'dist/testbed/fuzz/run.js')
if (!existsSync(run)) {
  console.error('fuzz: dist/ is not built: run "npm run build" first')
  process.exit(2)
}
const {FUZZ_TRANSPORTS, fuzzProblems, runFuzz} = await import(run)
const transports = values.transport.split(',').map((t) => t.trim()).filter(Boolean).filter((t) => {
  if (carrier === 'ip' && t === 'tls') console.log('fuzz: tls has no ip carrier: left out')
  return carrier !== 'ip' || t !== 'tls'
})
for (const t of transports) {
  if (!FUZZ_TRANSPORTS.includes(t)) {
    console.error(`fuzz: unknown transport "${t}" (known: ${FUZZ_TRANSPORTS.join(', ')})`)
    process.exit(2)
  }
}

console.log(`fuzz: seed ${seed} (replay with --seed ${seed})`)
const dataDir = mkdtempSync(join(tmpdir(), `agent-fuzz-data-${process.pid}-`))
let failed = false
try {
  execFileSync(process.execPath, [join(ROOT, 'bin/run.js'), 'plugins:install', ...transports], {env: {...process.env, AGENT_DATA_DIR: dataDir}, stdio: 'pipe'})
  for (const transport of transports) {
    const started = Date.now()
    const r = await runFuzz({transport, packets, seconds, seed, rate, carrier, dataDir, log: (l) => console.log(l)})
    const took = ((Date.now() - started) / 1000).toFixed(1)
    const c = r.client
    // fastPathSessions is a gauge, not a count: its difference says nothing.
    const fast = Object.fromEntries(Object.entries(r.counters).filter(([k]) => k.startsWith('fastPath') && k !== 'fastPathSessions'))
    const other = Object.fromEntries(Object.entries(r.counters).filter(([k, v]) => !k.startsWith('fastPath') && v !== 0))
    console.log(`fuzz ${transport} over ${r.carrier}: ${c?.packets ?? 0} packets in ${c?.seconds.toFixed(1) ?? '?'} s over ${c?.sessions ?? 0} sessions (run ${took} s)`)
    console.log(`  sent: ${JSON.stringify(c?.kinds ?? {})}`)
    console.log(`  sessions ended: ${JSON.stringify(c?.closes ?? {})}`)
    console.log(`  node fast path: ${JSON.stringify(fast)}`)
    console.log(`  node's other counters that moved: ${JSON.stringify(other)}`)
    console.log(`  node alive: ${r.nodeAliveAfter}, ASan reports: ${r.asanReports.length}, real client ping: ${r.realClientPing}, node exit on SIGTERM: ${r.nodeExit}`)
    const problems = fuzzProblems(r)
    if (problems.length > 0) {
      failed = true
      console.log(`fuzz ${transport}: FAILED (seed ${seed}):\n  ${problems.join('\n  ')}\nnode output (tail):\n${r.nodeOutputTail}`)
    } else console.log(`fuzz ${transport}: ok`)
  }
} finally {
  rmSync(dataDir, {recursive: true, force: true})
}
process.exit(failed ? 1 : 0)
