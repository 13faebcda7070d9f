/**
 * The bounded fuzz run (npm run fuzz, src/testbed/fuzz/): for each transport (and gre over the ip
 * carrier too), an authenticated
 * client sends mutated datagrams, records and control messages for a few seconds to the real
 * node running on the AddressSanitizer build of the addon. The node must survive without an
 * ASan report, the fuzz must have reached its C (the fast path's counters, and the coalescer's
 * GSO writes), a real client must still ping through it, and it must stop cleanly.
 * A machine without libasan fails here with what to install, rather than skipping.
 * AGENT_FUZZ_SEED=N replays a seed a failure printed.
 */
import {describe, expect, inject, it} from 'vitest'
import {FUZZ_TRANSPORTS, fuzzProblems, runFuzz} from '../../src/testbed/fuzz/run.js'

const SECONDS = 6
const seed = process.env.AGENT_FUZZ_SEED !== undefined ? Number(process.env.AGENT_FUZZ_SEED) : Math.floor(Math.random() * 0x100000000)

describe(`fuzzing the node's C (seed ${seed})`, () => {
  // Each transport over udp (through the NAT); and gre over the ip carrier, for net.c's raw sockets.
  const runs = [...FUZZ_TRANSPORTS.map((transport) => ({transport, carrier: 'udp' as const})), {transport: 'gre', carrier: 'ip' as const}]
  for (const {transport, carrier} of runs) {
    it(`${transport === 'tls' ? 'tls (native records)' : `${transport} over ${carrier}`}: survives ${SECONDS} s of fuzz under ASan, reached the fast path, still carries a real client`, async () => {
      const r = await runFuzz({transport, carrier, packets: 1_000_000, seconds: SECONDS, seed, rate: 20_000, dataDir: inject('agentDataDir')})
      const context = `seed ${seed}; node output:\n${r.nodeOutputTail}`
      expect(fuzzProblems(r), context).toEqual([])
      expect(r.client!.packets, context).toBeGreaterThan(10_000)
      // Fuzzed packets got through the first checks into C and on to the TUN, runs of TCP
      // segments through the coalescer into GSO writes.
      expect(r.counters.fastPathRxPackets, context).toBeGreaterThan(1000)
      expect(r.counters.fastPathTunGsoSegments, context).toBeGreaterThan(0)
    }, (SECONDS + 60) * 1000)
  }
})
